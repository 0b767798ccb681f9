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

from packaging.utils import canonicalize_name

from sqenv.builders import base_image, bytecode, shims
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


def check_version(expected: str | None, info: dict, python: str, image: Path | None) -> None:
    """`--from` a lock: the Python found must be the lock's major.minor (wheels are built per version)."""
    if not expected:
        return
    found = info["version"]
    if found.split(".")[:2] != expected.split(".")[:2]:
        where = f"in the base image `{image.name}`" if image else "here"
        hint = "give `--python` a Python of that version (or rebuild from the requirements, not the lock)"
        raise InputError(f"the lock was made with Python {expected}; `{python}` {where} is Python {found}", hint)


def build(ctx: BuildContext) -> BuildResult:
    spec = ctx.spec.pip
    if ctx.container is not None:  # a layer on a base image's Python (builders/base_image)
        python, info = base_image.find_python(ctx.container, spec.python)
    else:
        python, info = find_python(spec.python)
    check_version(spec.python_version, info, python, ctx.spec.base_image)
    mount = ctx.mount_path
    offline = ctx.spec.index.no_index
    venv = ["venv", "--no-config", "--python", python, mount] + ([] if offline else ["--seed"])
    if spec.system_site_packages or ctx.container is not None:
        venv.insert(1, "--system-site-packages")
    with ctx.ui.phase(f"Creating a venv on Python {info['version']} ({python})"):
        uv(ctx, venv, "creating the venv")
        if offline:  # no index to fetch pip from: the base Python's own copy
            ctx.run([f"{mount}/bin/python", "-m", "ensurepip", "--default-pip"], what="seeding pip (ensurepip)")
    link = linked_install(ctx)
    # linked: into the staging directory by its own path; either way compiled afterwards at the mount
    # path by `bytecode` (its cache; test suites left out), except inside a base image (uv does it)
    ours = ctx.container is None
    where = ["--prefix", str(ctx.staging)] if link else ([] if ours else ["--compile-bytecode"])
    install = ["pip", "install", "--python", f"{mount}/bin/python", *where]
    for path in spec.requirement_files:
        install += ["-r", str(path)]
    install += list(spec.packages)
    if spec.requirement_files or spec.packages:
        with ctx.ui.phase("Resolving, downloading and installing packages"):
            _install(ctx, install, python, spec.packages, spec.requirement_files, link=link)
        found = site_packages(ctx.staging)
        if found is not None:  # the lock's index pages (`sqenv.export.artifacts`), while compiling
            names = [info.split("-", 1)[0] for info in bytecode.dist_infos(found)]
            artifacts.prefetch(names, ctx.spec.index.record())
    found = site_packages(ctx.staging)
    if ours and found is not None:
        with ctx.ui.phase("Compiling the installed packages' byte code") as step:
            step.summary = bytecode.compile_site(ctx, found, tests=spec.compile_tests).summary()
    if found is not None:
        shims.install(found)
    extra = target_record(ctx.spec)
    if ctx.container is not None:  # completed by the pipeline with the image's path and checksum
        extra["base_image"] = {"python": python}
        adopted = base_image.adopt_scripts(ctx, python)
        if adopted:
            ctx.ui.detail(f"the base image's scripts, run by the layer's Python: {' '.join(adopted)}")
    return refresh(ctx, BuildResult(packages=[], python=info, extra=extra))


def _install(ctx: BuildContext, argv: list[str], base_python: str | None, packages, files, *,
             link: bool = False) -> None:  # fmt: skip
    """uv pip install; on a base image, with its packages shown to uv as installed (stubs)."""
    site = site_packages(ctx.staging)
    if ctx.container is None or base_python is None or site is None:
        uv(ctx, argv, "installing packages", link=link)
        return
    pairs = base_image.base_packages(ctx.container, base_python)
    stubs = base_image.write_stubs(site, pairs)
    try:
        uv(ctx, argv, "installing packages")
    except BaseException:
        base_image.drop_stubs(stubs)
        raise
    versions = {canonicalize_name(n): v for n, v in pairs}
    base_image.remove_stubs(site, stubs, base_image.named_packages(packages, files), versions)


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
    """Re-read the installed distributions (after a post-install script, say); on a base image,
    only the layer's own (what it adds to the image). Only a venv that sees the system's
    site-packages asks its interpreter (which lists those too)."""
    whole = not ctx.mounts  # an update's staging directory holds only what it changes
    if ctx.container is not None or (whole and not ctx.spec.pip.system_site_packages):
        from sqenv.builders.container import find_packages  # the dist-info read on the host

        # what the venv's Python would list (it sees only its own site-packages), without starting it
        result.packages = sorted(find_packages(ctx.staging), key=lambda p: (p.name, p.version))
        return result
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
            base_python = (change.base.get("base_image") or {}).get("python")
            _install(ctx, install, base_python, change.packages, change.requirement_files)
    kept = {"base_image": change.base["base_image"]} if change.base.get("base_image") else {}
    return refresh(ctx, BuildResult(packages=[], python=change.base.get("python"), extra=kept))
