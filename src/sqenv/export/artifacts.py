"""Which wheel each pip package came from: its index URL and sha256, for the lock.

uv reports no hashes of what it installed, so after the install each
distribution's `WHEEL` tags name its file, and the index's simple page
(PEP 503: every link carries `#sha256=`) gives its URL and hash. A local
`--find-links` directory is hashed directly. Lookups run in parallel with a
short timeout; a package whose file cannot be found keeps `sha256: null`
and the lock says so (`sha256_missing`), rather than failing a build that
succeeded.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import html
import json
import re
import threading
import urllib.parse
import urllib.request
from email.parser import HeaderParser
from pathlib import Path

from packaging.tags import parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename

PYPI = "https://pypi.org/simple"
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.I)
TIMEOUT = 10


def installed_wheels(site_packages: Path) -> dict[str, frozenset]:
    """canonical name -> the set of wheel tags of its installed dist-info."""
    found: dict[str, frozenset] = {}
    for info in sorted(site_packages.glob("*.dist-info")):
        try:
            meta = HeaderParser().parsestr((info / "METADATA").read_text(errors="replace"))
            wheel = HeaderParser().parsestr((info / "WHEEL").read_text(errors="replace"))
        except OSError:
            continue
        tags = frozenset(t for tag in wheel.get_all("Tag") or [] for t in parse_tag(tag))
        if meta.get("Name") and tags:
            found[canonicalize_name(meta["Name"])] = tags
    return found


def _pick(links: list[tuple[str, str | None]], name: str, version: str, tags: frozenset) -> tuple[str, str] | None:
    """The link of the installed wheel: first among files whose name shows the version as installed
    (a cheap look at each), then, should none match, among all of them."""
    marker = f"-{version}-"
    likely = [link for link in links if marker in link[0]]
    found = _pick_among(likely, name, version, tags)
    return found or (_pick_among(links, name, version, tags) if likely != links else None)


def _pick_among(links, name: str, version: str, tags: frozenset) -> tuple[str, str] | None:
    for url, digest in links:
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        if not filename.endswith(".whl") or not digest:
            continue
        try:
            wname, wversion, _build, wtags = parse_wheel_filename(filename)
        except ValueError:
            continue
        if wname == canonicalize_name(name) and str(wversion) == version and frozenset(wtags) == tags:
            return url, digest
    return None


class _Fetch(threading.Thread):
    """One index page fetched in the background (a daemon: a build that fails meanwhile does not
    wait for it)."""

    def __init__(self, index: str, name: str) -> None:
        super().__init__(daemon=True)
        self.index, self.name = index, name
        self.links: list[tuple[str, str | None]] | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.links = _page(self.index, self.name)
        except (OSError, ValueError) as exc:
            self.error = exc

    def result(self) -> list[tuple[str, str | None]]:
        self.join(TIMEOUT + 1)
        if self.error is not None:
            raise self.error
        if self.links is None:
            raise TimeoutError(f"{self.index}: no answer for {self.name}")
        return self.links


_PREFETCHED: dict[tuple[str, str], _Fetch] = {}


def prefetch(names: list[str], index: dict) -> None:
    """Start fetching the index pages `lookup` will read for these distributions, so the network
    waits overlap the rest of the build (pip: byte-compiling) instead of following it."""
    if index.get("no_index"):
        return
    for idx in [index.get("index_url") or PYPI, *index.get("extra_index_urls", [])]:
        for name in names:
            key = (idx, canonicalize_name(name))
            if key not in _PREFETCHED:
                _PREFETCHED[key] = fetch = _Fetch(idx, name)
                fetch.start()


def _page_once(index: str, name: str) -> list[tuple[str, str | None]]:
    """A prefetched page (used once), else a fetch now."""
    fetch = _PREFETCHED.pop((index, canonicalize_name(name)), None)
    return fetch.result() if fetch is not None else _page(index, name)


_JSON = "application/vnd.pypi.simple.v1+json"
"""PEP 691's form of the simple page: PyPI (and most mirrors) answer with it when asked, parsed in C
where the HTML form takes Python regexes over every link (numpy's page: thousands), while the
build's byte-compiling wants the CPUs."""


def _page(index: str, name: str) -> list[tuple[str, str | None]]:
    base = index.rstrip("/") + "/" + canonicalize_name(name) + "/"
    request = urllib.request.Request(base, headers={"Accept": f"{_JSON}, text/html;q=0.1"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:
        data = resp.read()
        kind = resp.headers.get_content_type()
    if kind == _JSON:
        files = json.loads(data).get("files", [])
        # (PyPI's are absolute: joined only where they are not, which is most of the work otherwise)
        return [(f["url"] if "://" in f["url"] else urllib.parse.urljoin(base, f["url"]),
                 (f.get("hashes") or {}).get("sha256")) for f in files]  # fmt: skip
    text = data.decode("utf-8", "replace")
    links = []
    for href in _HREF.findall(text):
        url, _, fragment = html.unescape(href).partition("#")
        digest = fragment[len("sha256=") :] if fragment.startswith("sha256=") else None
        links.append((urllib.parse.urljoin(base, url), digest))
    return links


def _local(place: str) -> list[tuple[str, str | None]]:
    root = Path(urllib.parse.urlsplit(place).path if place.startswith("file:") else place)
    if not root.is_dir():
        return []
    out = []
    for wheel in sorted(root.glob("*.whl")):
        out.append((wheel.absolute().as_uri(), None))
    return out


def _hash_local(url: str) -> str:
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def lookup(packages: list[tuple[str, str]], site_packages: Path | None, index: dict) -> dict[str, dict]:
    """canonical name -> {"url", "sha256"} for the pip packages found on the install's sources."""
    if site_packages is None or not packages:
        return {}
    tags = installed_wheels(site_packages)
    found: dict[str, dict] = {}
    for place in index.get("find_links", []):
        links = [(url, _hash_local(url)) for url, _ in _local(place)]
        for name, version in packages:
            key = canonicalize_name(name)
            hit = key in tags and key not in found and _pick(links, name, version, tags[key])
            if hit:
                found[key] = {"url": hit[0], "sha256": hit[1]}
    if index.get("no_index"):
        return found
    indexes = [index.get("index_url") or PYPI, *index.get("extra_index_urls", [])]

    def one(name: str, version: str) -> tuple[str, dict] | None:
        key = canonicalize_name(name)
        for idx in indexes:
            try:
                hit = _pick(_page_once(idx, name), name, version, tags[key])
            except (OSError, ValueError):
                continue
            if hit:
                return key, {"url": hit[0], "sha256": hit[1], "index": idx}
        return None

    todo = [(n, v) for n, v in packages if canonicalize_name(n) in tags and canonicalize_name(n) not in found]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for result in pool.map(lambda nv: one(*nv), todo):
            if result:
                found[result[0]] = result[1]
    return found
