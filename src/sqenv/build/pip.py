"""Pip environments: a venv on the site's Python, filled by uv.

The venv is created at the mount path (inside the build namespace), seeded
with pip so `pip list` and `pip freeze` work at run time, and byte-compiled so
nothing needs to be written when the read-only image is imported from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from uv import find_uv_bin

from sqenv.build.base import BuildContext, BuildResult, Package
from sqenv.errors import BuildError, InputError

_PY_INFO = (
    "import json, os, sys, sysconfig; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3],"
    " 'implementation': sys.implementation.name, 'executable': os.path.realpath(sys.executable),"
    " 'prefix': sys.prefix}))"
)
_LIST = (
    "import json, importlib.metadata as m; print(json.dumps(sorted("
    "(d.metadata['Name'], d.version) for d in m.distributions() if d.metadata['Name'])))"
)


def find_python(requested: str | None) -> tuple[str, dict]:
    """The base interpreter (default: first `python3` on PATH), resolved and checked."""
    name = requested or "python3"
    path = shutil.which(name) if os.sep not in name else name
    if not path or not os.path.exists(path):
        raise InputError(
            f"base Python `{name}` was not found", "pass `--python PATH`, or load the site's Python module first"
        )
    try:
        proc = subprocess.run([path, "-c", _PY_INFO], capture_output=True, text=True, timeout=60)
        info = json.loads(proc.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        raise InputError(
            f"`{path}` is not a working Python interpreter", "pass `--python` the path of a python3 executable"
        ) from None
    if info.get("implementation") != "cpython" and info.get("implementation") != "pypy":
        raise InputError(f"`{path}` is not a Python interpreter")
    info["requested"] = name
    return path, info


def explain(output: str) -> tuple[str, str | None] | None:
    """One line (and a hint) for the uv failures users meet most."""
    missing = re.search(r"Because (\S+) was not found in the package registry", output)
    if missing:
        return (
            f"package `{missing.group(1)}` was not found on the package index",
            "check the name (https://pypi.org/search), or the index given with `--index-url`",
        )
    version = re.search(r"Because there is no version of (\S+?)(==|>|<|~|!)", output)
    if version:
        return (f"no version of `{version.group(1)}` matches what was asked", "relax the version constraint")
    if "No solution found" in output:
        return ("the requirements conflict with each other", "see the resolver's explanation above")
    built = re.search(r"Failed to (?:download and )?build `([^`]+)`", output)
    if built:
        return (
            f"`{built.group(1)}` failed to build from source",
            "install its build dependencies (compilers, headers), or pin a version with a binary wheel",
        )
    if "No space left on device" in output:
        return (
            "the build directory ran out of space",
            "free space, or choose a larger one with `--build-dir DIR` or SQENV_BUILD_DIR",
        )
    return None


def _uv(ctx: BuildContext, argv: list[str], what: str) -> str:
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    if ctx.spec.post_install:
        # A post-install script may rewrite files in place: do not share
        # their inodes with uv's cache.
        env["UV_LINK_MODE"] = "copy"
    try:
        return ctx.run([find_uv_bin(), *argv], what=what, env=env)
    except BuildError as err:
        text = ctx.log.read_text(errors="replace")
        known = explain(text)
        if known:
            raise BuildError(known[0], known[1], err.details) from None
        raise


def build(ctx: BuildContext) -> BuildResult:
    spec = ctx.spec.pip
    python, info = find_python(spec.python)
    mount = ctx.mount_path
    venv = ["venv", "--seed", "--no-config", "--python", python, mount]
    if spec.system_site_packages:
        venv.insert(1, "--system-site-packages")
    with ctx.ui.phase(f"Creating a venv on Python {info['version']} ({python})"):
        _uv(ctx, venv, "creating the venv")
    install = ["pip", "install", "--python", f"{mount}/bin/python", "--compile-bytecode"]
    for path in spec.requirement_files:
        install += ["-r", str(path)]
    install += list(spec.packages)
    if spec.requirement_files or spec.packages:
        with ctx.ui.phase("Resolving, downloading and installing packages"):
            _uv(ctx, install, "installing packages")
    return refresh(ctx, BuildResult(packages=[], python=info))


def refresh(ctx: BuildContext, result: BuildResult) -> BuildResult:
    """Re-read the installed distributions (after a post-install script, say)."""
    out = ctx.run([f"{ctx.mount_path}/bin/python", "-c", _LIST], what="listing installed packages")
    pairs = json.loads(out.strip().splitlines()[-1])
    result.packages = [Package(name=n, version=v) for n, v in pairs]
    return result


def site_packages(staging: Path) -> Path | None:
    """The venv's site-packages directory inside the staging tree."""
    found = sorted(staging.glob("lib/python3*/site-packages"))
    return found[0] if found else None


def _uv_over_layers(ctx: BuildContext, argv: list[str], what: str) -> str:
    """uv against the mounted layers: copies, since the target is an overlay (no hard links to the cache)."""
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", "UV_LINK_MODE": "copy"}
    try:
        return ctx.run([find_uv_bin(), *argv], what=what, env=env)
    except BuildError as err:
        known = explain(ctx.log.read_text(errors="replace"))
        if known:
            raise BuildError(known[0], known[1], err.details) from None
        raise


def update(ctx: BuildContext, change) -> BuildResult:
    """Apply an update (`sqenv.update.Change`) to the env at the mount path: removals, then installs.

    `ctx.mounts` shows the current layers under a writable upper directory, so
    what uv writes or deletes there is exactly the update's new layer.
    """
    if change.environment_file is not None:
        raise InputError("`-f environment.yml` is for conda installs; this is a pip install",
                         "give packages or `-r requirements.txt`")  # fmt: skip
    python = f"{ctx.mount_path}/bin/python"
    if change.remove:
        with ctx.ui.phase("Removing " + ", ".join(change.remove)):
            _uv_over_layers(ctx, ["pip", "uninstall", "--python", python, *change.remove], "removing packages")
    if change.requirement_files or change.packages:
        install = ["pip", "install", "--python", python, "--compile-bytecode"]
        for path in change.requirement_files:
            install += ["-r", str(path)]
        install += list(change.packages)
        with ctx.ui.phase("Resolving, downloading and installing packages"):
            _uv_over_layers(ctx, install, "installing packages")
    return refresh(ctx, BuildResult(packages=[], python=change.base.get("python")))
