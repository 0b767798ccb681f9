"""Pip environments: a venv on the site's Python, filled by uv.

The venv is created at the mount path (inside the build namespace), seeded
with pip so `pip list` and `pip freeze` work at run time, and byte-compiled so
nothing needs to be written when the read-only image is imported from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from sqenv.builders import bytecode, shims
from sqenv.builders.base import BuildContext, BuildResult, Package
from sqenv.builders.uv import linked_install, uv
from sqenv.errors import InputError
from sqenv.export import artifacts
from sqenv.inputs.cpu import check_level

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


def build(ctx: BuildContext) -> BuildResult:
    spec = ctx.spec.pip
    python, info = find_python(spec.python)
    mount = ctx.mount_path
    offline = ctx.spec.index.no_index
    venv = ["venv", "--no-config", "--python", python, mount] + ([] if offline else ["--seed"])
    if spec.system_site_packages:
        venv.insert(1, "--system-site-packages")
    with ctx.ui.phase(f"Creating a venv on Python {info['version']} ({python})"):
        uv(ctx, venv, "creating the venv")
        if offline:  # no index to fetch pip from: the base Python's own copy
            ctx.run([f"{mount}/bin/python", "-m", "ensurepip", "--default-pip"], what="seeding pip (ensurepip)")
    link = linked_install(ctx)
    # linked: into the staging directory by its own path, then compiled at the mount path (`bytecode`)
    where = ["--prefix", str(ctx.staging)] if link else ["--compile-bytecode"]
    install = ["pip", "install", "--python", f"{mount}/bin/python", *where]
    for path in spec.requirement_files:
        install += ["-r", str(path)]
    install += list(spec.packages)
    if spec.requirement_files or spec.packages:
        with ctx.ui.phase("Resolving, downloading and installing packages"):
            before = bytecode.dist_infos(site_packages(ctx.staging))
            uv(ctx, install, "installing packages", link=link)
            found = site_packages(ctx.staging)
        if found is not None:  # the lock's index pages (`sqenv.export.artifacts`), while compiling
            names = [info.split("-", 1)[0] for info in bytecode.dist_infos(found)]
            artifacts.prefetch(names, ctx.spec.index.record())
        if link and found is not None:
            with ctx.ui.phase("Compiling the installed packages' byte code") as step:
                count = bytecode.compile_new(ctx, found, before)
                step.summary = f"{count:,} file{'s' if count != 1 else ''}"
    found = site_packages(ctx.staging)
    if found is not None:
        shims.install(found)
    return refresh(ctx, BuildResult(packages=[], python=info, extra=target_record(ctx.spec)))


def target_record(spec) -> dict:
    """`--target-cpu` for the version record (`sqenv info`); launches check the target's x86-64 level
    when sdists were compiled for it (`--optimize-sdists`), as code built with `-march` needs it."""
    if not spec.target_cpu:
        return {}
    extra: dict = {"target_cpu": spec.target_cpu, "target_cpu_from": "--target-cpu"}
    level = check_level(spec.target_cpu) if spec.optimize_sdists else None
    if level:
        extra["launch"] = {"cpu_level": level}
    return extra


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


def update(ctx: BuildContext, change) -> BuildResult:
    """Apply an update (`sqenv.update.apply.Change`) to the env at the mount path: removals, then installs.

    `ctx.mounts` shows the current layers under a writable upper directory, so
    what uv writes or deletes there is exactly the update's new layer.
    """
    if change.environment_file is not None:
        raise InputError("`-f environment.yml` is for conda installs; this is a pip install",
                         "give packages or `-r requirements.txt`")  # fmt: skip
    python = f"{ctx.mount_path}/bin/python"
    if change.remove:
        with ctx.ui.phase("Removing " + ", ".join(change.remove)):
            uv(ctx, ["pip", "uninstall", "--python", python, *change.remove], "removing packages")
    if change.requirement_files or change.packages:
        install = ["pip", "install", "--python", python, "--compile-bytecode"]
        for path in change.requirement_files:
            install += ["-r", str(path)]
        install += list(change.packages)
        with ctx.ui.phase("Resolving, downloading and installing packages"):
            uv(ctx, install, "installing packages")
    return refresh(ctx, BuildResult(packages=[], python=change.base.get("python")))
