"""An install's exact packages, for elsewhere (`sqenv export PREFIX --format explicit|yml|requirements`).

    (default: `explicit` for conda installs, `requirements` for the others)
    explicit      `@EXPLICIT` + one `URL#sha256` a line (conda packages; `conda create --file`,
                  `sqenv create --from FILE`)
    yml           environment.yml: channels, `name=version=build`, a `pip:` section
    requirements  pip `name==version` lines (pip installs, or the pip part of a conda one)

Read from the current version's record in sqenv.json: nothing is mounted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from sqenv.errors import PrefixError, UsageError
from sqenv.publish import metadata
from sqenv.publish.layout import Install
from sqenv.ui import UI

FORMATS = ("explicit", "yml", "requirements")


@dataclass(frozen=True)
class ExportOptions:
    """What `sqenv export` was asked for."""

    prefix: Path
    format: str | None = None  # None: the one that applies to the install's kind
    output: Path | None = None  # None: standard output


def _pip(version: dict) -> list[str]:
    return [f"{p['name']}=={p['version']}" for p in version.get("packages", []) if p.get("manager", "pip") == "pip"]


def _lock(data: dict, version: dict, prefix: Path) -> dict:
    if data["kind"] != "conda":
        raise UsageError(f"`{prefix}` is a {data['kind']} install: only `--format requirements` applies")
    lock = version.get("lock")
    if not lock:
        raise PrefixError(f"`{prefix}` has no conda lock in its metadata", "rebuild it with `sqenv create --force`")
    return lock


def explicit(data: dict, version: dict, prefix: Path, ui: UI) -> str:
    lock = _lock(data, version, prefix)
    pins = _pip(version)
    if pins:
        ui.warn(f"{len(pins)} pip packages are not in an explicit file; add `--format requirements` for them")
    lines = [
        f"# Exported by sqenv from {prefix} (version {version['number']})",
        f"# platform: {lock['platform']}",
        "@EXPLICIT",
    ]
    lines += [f"{p['url']}#{p['sha256']}" if p.get("sha256") else p["url"] for p in lock["packages"]]
    return "\n".join(lines) + "\n"


def environment_yml(data: dict, version: dict, prefix: Path) -> str:
    from sqenv.inputs.conda import DEFAULT_ALIAS, channel_name

    lock = _lock(data, version, prefix)
    alias = ((version.get("inputs") or {}).get("conda") or {}).get("channel_alias") or DEFAULT_ALIAS
    channels = lock.get("channels") or list(dict.fromkeys(p["channel"] for p in lock["packages"]))
    deps: list = [f"{p['name']}={p['version']}={p['build']}" for p in lock["packages"]]
    pins = _pip(version)
    if pins:
        deps.append({"pip": pins})
    doc = {"name": prefix.name, "channels": [channel_name(c, alias) for c in channels], "dependencies": deps}
    # the lock keeps them across updates; the inputs only say what `create` got
    variables = lock.get("variables") or ((version.get("inputs") or {}).get("conda") or {}).get("variables")
    if variables:
        doc["variables"] = {k: v for k, v in variables}
    header = f"# Exported by sqenv from {prefix} (version {version['number']}, {lock['platform']})\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def requirements(data: dict, version: dict, ui: UI) -> str:
    pins = _pip(version)
    if data["kind"] == "conda":
        ui.info(f"{len(pins)} pip packages; the conda ones are in `--format explicit` or `--format yml`")
    return "".join(pin + "\n" for pin in pins)


def export(options: ExportOptions, ui: UI) -> str:
    """The text of the export (read from the current version's record: nothing is mounted)."""
    install = Install.open(options.prefix)
    data = metadata.load(install.metadata)
    version = metadata.current(data)
    fmt = options.format or ("explicit" if data["kind"] == "conda" else "requirements")
    if fmt == "explicit":
        return explicit(data, version, install.prefix, ui)
    if fmt == "yml":
        return environment_yml(data, version, install.prefix)
    return requirements(data, version, ui)


def write(text: str, output: Path) -> None:
    """Write OUTPUT whole or not at all (a temporary file beside it, then a rename)."""
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, output)
