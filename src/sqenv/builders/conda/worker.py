"""The py-rattler calls of a conda build, run in a child process.

    python -m sqenv.builders.conda.worker REQUEST.json RESPONSE.json

Why a child: py-rattler's tokio threads can crash the interpreter at exit
(SIGSEGV, "PyGILState_Release") right after an async call; here the process
leaves with `os._exit` once the response is written, so the CLI stays clean,
and Ctrl-C simply ends the child. The request names one operation:

    solve     channels + specs -> packages (virtual packages detected, CONDA_OVERRIDE_* honoured;
              `locked`: the installed packages, kept unless the specs need them changed)
    explicit  (url, hash) pairs -> packages (found in the channels' repodata, or read from local archives)
    lockfile  a rattler/pixi lock file -> packages (+ its PyPI pins)
    install   packages -> the staging directory, as seen at the mount path; or, for an
              update, run inside the build namespace with `staging` = the mount path itself:
              rattler then compares with the installed set (conda-meta) and links or
              unlinks only the difference, so the overlay's upper directory gets exactly that

"Packages" are lock entries (`entry()`): everything needed to install a
package again without solving. The response is `{"packages": [...], ...}` or
`{"error": {"kind": ..., "message": ..., "details": ..., ...}}` for the
parent (`sqenv.builders.conda.create`) to turn into one clear message.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from urllib.parse import unquote, urlparse

import rattler
from rattler.exceptions import GatewayError, InstallerError, SolverError
from rattler.package_cache import PackageCache, ValidationMode


class Failure(Exception):
    """A failure the parent explains: `kind` selects the message."""

    def __init__(self, kind: str, message: str, details: str | None = None, **extra: object) -> None:
        super().__init__(message)
        self.data = {"kind": kind, "message": message, "details": details, **extra}


# ------------------------------------------------------------ records <-> lock entries
def entry(record: rattler.RepoDataRecord) -> dict:
    """A lock entry: what `record()` needs to rebuild an installable record."""
    data = json.loads(record.to_json())
    out = {
        "name": data["name"],
        "version": data["version"],
        "build": data["build"],
        "build_number": data.get("build_number", 0),
        "subdir": data["subdir"],
        "url": record.url,
        "channel": (record.channel or record.url.rsplit("/", 2)[0]).rstrip("/"),
        "file_name": record.file_name,
        "sha256": data.get("sha256"),
        "md5": data.get("md5"),
        "size": data.get("size"),
        "depends": data.get("depends", []),
    }
    for key in ("noarch", "constrains", "python_site_packages_path", "arch", "platform"):
        if data.get(key):
            out[key] = data[key]
    return out


def record(e: dict) -> rattler.RepoDataRecord:
    package = rattler.PackageRecord(
        name=e["name"],
        version=e["version"],
        build=rattler.BuildString(e["build"]),
        build_number=int(e.get("build_number") or 0),
        subdir=e["subdir"],
        arch=e.get("arch"),
        platform=e.get("platform"),
        noarch=e.get("noarch") or None,
        depends=list(e.get("depends") or []),
        constrains=list(e.get("constrains") or []),
        sha256=bytes.fromhex(e["sha256"]) if e.get("sha256") else None,
        md5=bytes.fromhex(e["md5"]) if e.get("md5") else None,
        size=e.get("size"),
        python_site_packages_path=e.get("python_site_packages_path"),
    )
    return rattler.RepoDataRecord(package, e["file_name"], e["url"], e["channel"].rstrip("/") + "/")


def local_path(url: str) -> Path | None:
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------ channels
def gateway(req: dict) -> rattler.Gateway:
    action = "force-cache-only" if req.get("offline") else "cache-or-fetch"
    return rattler.Gateway(
        cache_dir=req["repodata_cache"], default_config=rattler.SourceConfig(cache_action=action), show_progress=False
    )


def channel_failure(exc: Exception, channels: list[str], offline: bool) -> Failure:
    text = str(exc)
    culprit = next((c for c in channels if c.rstrip("/") in text), None)
    if culprit is None:
        found = re.search(r"(?:for url \(|cache for |channel ')([^)\s']+)", text)
        culprit = found.group(1).rsplit("/", 2)[0] if found else (channels[0] if len(channels) == 1 else "?")
    kind = "offline-channel" if offline and "cache" in text else "channel"
    causes = [line.removeprefix("Caused by:").strip() for line in text.splitlines() if line.strip()]
    return Failure(kind, causes[-1] if causes else text, text, channel=culprit)


def platforms(req: dict) -> list[str]:
    return [req["platform"], "noarch"]


async def names(req: dict, gw: rattler.Gateway) -> list[str]:
    try:
        result = await gw.names(req["channels"], platforms(req))
        return sorted({str(getattr(n, "normalized", n)) for n in result})
    except Exception:
        return []


async def explain_missing(req: dict, gw: rattler.Gateway, text: str) -> Failure:
    """`No candidates were found for X`: a name no channel has, or no version that matches."""
    missing = re.findall(r"No candidates were found for (\S+)(?: (.+?))?\.?$", text, re.M)
    known = await names(req, gw)
    for name, constraint in missing:
        if known and name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            return Failure("missing", f"package `{name}` does not exist", text, name=name, suggestions=close)
        if constraint and constraint.strip() not in ("*", ""):
            versions: list[str] = []
            try:
                found = await gw.query(req["channels"], platforms(req), [name], recursive=False)
                versions = sorted({str(r.version) for group in found for r in group}, key=rattler.Version)
            except Exception:
                pass
            return Failure(
                "nomatch", f"no version of `{name}` matches `{constraint.strip()}`", text, name=name, versions=versions
            )
    return Failure("unsolvable", "the requested packages cannot be installed together", text)


def virtual_packages(req: dict) -> list:
    detected = rattler.VirtualPackage.detect(rattler.VirtualPackageOverrides.from_env())
    if not req.get("archspec"):
        return detected
    # `--target-cpu NAME`: the compute nodes' microarchitecture instead of this host's
    generic = [v.into_generic() for v in detected]
    others = [v for v in generic if v.name.normalized != "__archspec"]
    target = rattler.GenericVirtualPackage(
        rattler.PackageName("__archspec"), rattler.Version("1"), rattler.BuildString(req["archspec"])
    )
    return [*others, target]


async def solve(req: dict) -> dict:
    from sqenv.builders.conda import mpi

    gw = gateway(req)
    virtual = virtual_packages(req)
    try:
        # Parsed here as in `sqenv.inputs.conda` (conda's `name=1.0=build` form included).
        specs = [rattler.MatchSpec(spec) for spec in req["specs"]]
        locked = [record(e) for e in req.get("locked") or []]

        async def resolve(constraints: list[str]) -> list:
            return await rattler.solve(
                req["channels"],
                specs,
                gateway=gw,
                platforms=platforms(req),
                virtual_packages=virtual,
                locked_packages=locked or None,
                constraints=[rattler.MatchSpec(c) for c in constraints] or None,
            )

        async def query(names_: list[str]) -> list:
            return await gw.query(req["channels"], platforms(req), names_, recursive=False)

        records = await resolve([])
        if req.get("mpi") == "host":  # no libmpi of the channel in the image: its external builds
            records = await mpi.pin_external(records, query, resolve, Failure)
    except SolverError as exc:
        text = str(exc).replace("Cannot solve the request because of: ", "").strip()
        if "No candidates were found for" in text:
            raise await explain_missing(req, gw, text) from None
        raise Failure("unsolvable", "the requested packages cannot be installed together", text) from None
    except GatewayError as exc:
        raise channel_failure(exc, req["channels"], req.get("offline", False)) from None
    return {
        "packages": sorted((entry(r) for r in records), key=lambda e: e["name"]),
        "virtual_packages": [
            str(v if isinstance(v, rattler.GenericVirtualPackage) else v.into_generic()) for v in virtual
        ],
    }


async def explicit(req: dict) -> dict:
    """Explicit (url, hash) pairs: the channels' repodata has the full records; local archives otherwise."""
    wanted = req["packages"]
    by_channel: dict[str, list[dict]] = {}
    for item in wanted:
        by_channel.setdefault(item["url"].rsplit("/", 2)[0], []).append(item)
    gw = gateway(req)
    found: dict[str, rattler.RepoDataRecord] = {}
    for channel, items in by_channel.items():
        subdirs = sorted({item["url"].rsplit("/", 2)[1] for item in items})
        wanted_names = sorted({item["url"].rsplit("/", 1)[1].rsplit("-", 2)[0] for item in items})
        try:
            groups = await gw.query([channel], subdirs, wanted_names, recursive=False)
        except GatewayError as exc:
            if channel.startswith("file://"):
                continue  # a directory of packages without repodata: read the archives
            raise channel_failure(exc, [channel], req.get("offline", False)) from None
        for group in groups:
            for r in group:
                found[r.url] = r
    out = []
    for item in wanted:
        url, digest = item["url"], (item.get("hash") or "").lower()
        r = found.get(url)
        if r is None:
            path = local_path(url)
            if path is None or not path.is_file():
                raise Failure("locked-missing", f"`{url.rsplit('/', 1)[1]}` is no longer in its channel", url, url=url)
            r = await rattler.RepoDataRecord.from_package_archive(path)
            e = entry(r)
            e.update(url=url, channel=url.rsplit("/", 2)[0])
        else:
            e = entry(r)
        have = e["md5"] if len(digest) == 32 else e["sha256"]
        if digest and have and have != digest:
            raise Failure(
                "checksum", f"checksum mismatch for `{e['file_name']}`", f"expected {digest}\n     got {have}", url=url
            )
        out.append(e)
    return {"packages": sorted(out, key=lambda e: e["name"])}


async def lockfile(req: dict) -> dict:
    try:
        lock = rattler.LockFile.from_path(req["path"])
    except Exception as exc:
        raise Failure("lockfile", f"cannot read the lock file `{req['path']}`", str(exc)) from None
    env = lock.default_environment()
    if env is None:
        raise Failure("lockfile", f"the lock file `{req['path']}` has no `default` environment")
    platforms_ = {p.name: p for p in env.platforms()}
    if req["platform"] not in platforms_:
        raise Failure(
            "platform",
            f"the lock file `{req['path']}` has no packages for {req['platform']} "
            f"(it has {', '.join(sorted(platforms_)) or 'none'})",
        )
    plat = platforms_[req["platform"]]
    records = env.conda_repodata_records_for_platform(plat) or []
    pins = [f"{p.name}=={p.version}" for p in (env.pypi_packages_for_platform(plat) or [])]
    return {
        "packages": sorted((entry(r) for r in records), key=lambda e: e["name"]),
        "pip": pins,
        "channels": [str(c).rstrip("/") for c in env.channels()],
    }


# ------------------------------------------------------------ install
def cached(pkgs: Path, e: dict) -> bool:
    """The package is in the cache, with the sha256 rattler recorded for it (`NAME-VER-BUILD.lock`)."""
    stem = f"{e['name']}-{e['version']}-{e['build']}"
    if not (pkgs / stem / "info" / "index.json").is_file():
        return False
    try:
        lock = (pkgs / f"{stem}.lock").read_bytes()
    except OSError:
        return True
    return len(lock) != 40 or not e.get("sha256") or lock[8:].hex() == e["sha256"]


def check_sources(req: dict) -> None:
    """What rattler does not check: local package files against their checksums; --offline."""
    pkgs = Path(req["pkgs_dir"])
    for e in req["packages"]:
        path = local_path(e["url"])
        if path is not None:
            if not path.is_file():
                raise Failure("locked-missing", f"`{e['file_name']}` is missing from its channel", e["url"])
            if e.get("sha256"):
                got = sha256_file(path)
                if got != e["sha256"]:
                    raise Failure(
                        "checksum",
                        f"checksum mismatch for `{e['file_name']}`",
                        f"  {path}\n  expected sha256 {e['sha256']}\n       got sha256 {got}",
                        url=e["url"],
                    )
        elif req.get("offline") and not cached(pkgs, e):
            raise Failure("offline-package", f"`{e['file_name']}` is not in the package cache", e["url"], url=e["url"])


def make_readable(prefix: Path) -> None:
    """sqenv used to drop only `link.source` (a host path of the package cache) from the installed
    records, and rattler's parser insists on it when `link` is there: drop `link` as a whole, as
    sqenv now does (an update of such an install rewrites those small files once)."""
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        data = json.loads(meta.read_text())
        if isinstance(data.get("link"), dict) and "source" not in data["link"]:
            del data["link"]
            meta.write_text(json.dumps(data, indent=1))


async def install(req: dict) -> dict:
    check_sources(req)
    in_place = req["mount"] == req["staging"]
    if in_place:
        make_readable(Path(req["staging"]))
    links = "true" if req.get("hardlinks") else "false"
    config = rattler.Config.from_toml(
        f"allow-hard-links = {links}\nallow-symbolic-links = false\nallow-ref-links = true"
    )
    # Full validation: a damaged file in the cache is noticed and the package fetched again.
    cache = PackageCache.new_layered([req["pkgs_dir"]], validation_mode=ValidationMode.full())
    try:
        await rattler.install(
            [record(e) for e in req["packages"]],
            req["staging"],
            cache_dir=req["pkgs_dir"],
            # In place (an update): the prefix is where the environment is mounted already.
            alternative_target_prefix=None if in_place else req["mount"],
            platform=rattler.Subdir(req["platform"]),
            show_progress=False,
            config=config,
            package_cache=cache,
            execute_link_scripts=False,
        )
    except InstallerError as exc:
        text = str(exc)
        mismatch = re.search(r"hash mismatch when extracting (\S+)", text)
        if mismatch:
            name = mismatch.group(1).rsplit("/", 1)[-1]
            raise Failure("checksum", f"checksum mismatch for `{name}`", text, url=mismatch.group(1)) from None
        fetch = re.search(r"failed to fetch (\S+)", text)
        if fetch and ("Connect" in text or "dns error" in text or "error sending request" in text):
            raise Failure("download", f"cannot download `{fetch.group(1)}`", text) from None
        raise Failure("install", text.splitlines()[0], text) from None
    return {}


OPERATIONS = {"solve": solve, "explicit": explicit, "lockfile": lockfile, "install": install}


def main(argv: list[str]) -> int:
    request_path, response_path = argv
    req = json.loads(Path(request_path).read_text())
    try:
        response = asyncio.run(OPERATIONS[req["op"]](req))
    except Failure as failure:
        response = {"error": failure.data}
    except Exception as exc:
        response = {"error": {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}}
        traceback.print_exc()
    Path(response_path).write_text(json.dumps(response))
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:  # die of the signal, so the parent sees an interrupt, not a failure
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:  # a broken request: the parent shows the log's tail
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
