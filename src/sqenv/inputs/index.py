"""Where uv finds packages: index URLs, local wheel directories, the system's certificates.

Sites with mirrors, proxies or TLS-intercepting firewalls need them. They come
from the command line (`--index-url`, `--extra-index-url`, `--find-links`,
`--no-index`, `--system-certs`), else, for `sqenv update`, from what the
install recorded, else from the site config (`index_url`, `extra_index_urls`,
`find_links`, `no_index`, `system_certs`); a forced config value wins over all.
They are recorded in each version's inputs, so the next update reuses them.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class IndexOptions:
    """The package sources uv uses (empty: uv's defaults, i.e. PyPI and uv's own environment variables)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    system_certs: bool = False

    def uv_args(self, uv: str) -> list[str]:
        """`uv pip install` options for these sources."""
        argv = ["--index-url", self.index_url] if self.index_url else []
        for url in self.extra_index_urls:
            argv += ["--extra-index-url", url]
        for place in self.find_links:
            argv += ["--find-links", place]
        argv += ["--no-index"] if self.no_index else []
        argv += [system_certs_flag(uv)] if self.system_certs else []
        return argv

    def record(self) -> dict:
        """For the metadata: only what is set."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items() if v not in (None, (), False)}

    @classmethod
    def from_record(cls, data: dict | None) -> IndexOptions:
        data = data or {}
        return cls(
            index_url=data.get("index_url"),
            extra_index_urls=tuple(data.get("extra_index_urls", ())),
            find_links=tuple(data.get("find_links", ())),
            no_index=bool(data.get("no_index")),
            system_certs=bool(data.get("system_certs")),
        )


@functools.lru_cache(maxsize=4)
def system_certs_flag(uv: str) -> str:
    """uv renamed `--native-tls` to `--system-certs` (0.9); the older name still works but warns."""
    try:
        text = subprocess.run([uv, "pip", "install", "--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    return "--system-certs" if "--system-certs" in text else "--native-tls"


KEYS = ("index_url", "extra_index_urls", "find_links", "no_index", "system_certs")


def from_args(args: Any) -> IndexOptions:
    """What the command line gave (`sqenv create|update` options)."""
    return IndexOptions(
        index_url=getattr(args, "index_url", None),
        extra_index_urls=tuple(getattr(args, "extra_index_url", None) or ()),
        find_links=tuple(_absolute(x) for x in getattr(args, "find_links", None) or ()),
        no_index=bool(getattr(args, "no_index", False)),
        system_certs=bool(getattr(args, "system_certs", False)),
    )


def _absolute(place: str) -> str:
    """A local `--find-links` directory, made absolute: the update that reuses it may run elsewhere."""
    return place if "://" in place else os.path.abspath(os.path.expanduser(place))


def resolve(given: IndexOptions, config: Any, ui: Any = None, recorded: dict | None = None) -> IndexOptions:
    """Command line (`given`) > the install's recorded options (for updates) > site config; forced wins."""
    old = IndexOptions.from_record(recorded)
    values = {}
    for key in KEYS:
        chosen = getattr(given, key) or getattr(old, key) or None
        values[key] = config.get(key, list(chosen) if isinstance(chosen, tuple) else chosen, ui)
    return IndexOptions(
        index_url=values["index_url"] or None,
        extra_index_urls=tuple(values["extra_index_urls"] or ()),
        find_links=tuple(values["find_links"] or ()),
        no_index=bool(values["no_index"]),
        system_certs=bool(values["system_certs"]),
    )
