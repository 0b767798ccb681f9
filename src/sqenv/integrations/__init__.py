"""Integrations with the tools HPC users meet an environment through: Jupyter kernels, module files.

Library code; the CLI (`sqenv.cli.kernel`, `sqenv.cli.module`) only parses and prints.
"""

from __future__ import annotations

from packaging.utils import canonicalize_name

from sqenv.publish import metadata
from sqenv.publish.layout import Install


def current_version(install: Install) -> tuple[dict, dict]:
    """(metadata, the current version's record)."""
    data = metadata.load(install.metadata)
    return data, metadata.current(data)


def package_versions(version: dict) -> dict[str, str]:
    """Canonical name -> version of every package of a version (pip and conda)."""
    return {canonicalize_name(p["name"]): p["version"] for p in version.get("packages", [])}


def main_packages(version: dict, limit: int = 12) -> list[str]:
    """`name version` of what the user asked for (else the first packages), for help texts."""
    inputs = version.get("inputs") or {}
    asked = [*(inputs.get("pip") or {}).get("packages", []), *(inputs.get("conda") or {}).get("specs", [])]
    versions = package_versions(version)
    names = []
    for spec in asked:
        name = canonicalize_name(str(spec).replace("=", " ").replace("<", " ").replace(">", " ").split()[0])
        if name in versions:
            names.append(f"{name} {versions[name]}")
    if not names:
        names = [f"{p['name']} {p['version']}" for p in version.get("packages", [])]
    return names[:limit] + ([f"... ({len(names) - limit} more)"] if len(names) > limit else [])
