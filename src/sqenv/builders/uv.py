"""uv, run in the build namespace: for pip environments and for the `pip:` part of conda ones."""

from __future__ import annotations

import os
from pathlib import Path

from uv import find_uv_bin

from sqenv.builders.base import BuildContext
from sqenv.builders.base_image import UV_INSIDE
from sqenv.builders.workdir import check_cache_dir
from sqenv.inputs.cpu import compiler_flag
from sqenv.tools.diagnose import classify_uv
from sqenv.tools.progress import UvProgress, built_from_source


def uv(ctx: BuildContext, argv: list[str], what: str, *, link: bool = False) -> str:
    """Run uv in the build namespace: package sources from the spec, its progress read for the
    display, a failure reported by its cause (`sqenv.tools.diagnose`).

    Copies by default: through the mount path the target is the staging directory bound there,
    another mount than uv's cache, so a hard link fails with EXDEV for every file before uv falls
    back; an update's target is an overlay. `link`: the caller installs into the staging
    directory by its own path (`linked_install`), where uv may hard-link from its cache."""
    exe = find_uv_bin()
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", "UV_LINK_MODE": "hardlink" if link else "copy"}
    progress = None
    installing = argv[:2] == ["pip", "install"]
    if argv[0] == "venv":  # --seed fetches pip from the index
        argv = [*argv, *ctx.spec.index.uv_args(exe)]
    elif installing:
        # -v: uv names each package as it resolves and fetches it (counts for the display, details for the log)
        argv = [*argv[:2], "-v", *ctx.spec.index.uv_args(exe), *argv[2:]]
        progress = UvProgress()
        env.update(target_env(ctx.spec.target_cpu, ctx.spec.optimize_sdists))
    cache = env.get("UV_CACHE_DIR") or default_cache_dir()
    check_cache_dir(Path(cache), "uv's cache", "set UV_CACHE_DIR to a directory of yours that others cannot write to")
    if ctx.container is not None:  # a layer on a base image: uv runs inside it (builders/base_image)
        env.setdefault("UV_CACHE_DIR", cache)
    output = ctx.run([UV_INSIDE if ctx.container else exe, *argv], what=what, env=env, progress=progress,
                     classify=lambda output, code: classify_uv(output, code, "uv"))  # fmt: skip
    if installing and ctx.spec.target_cpu:
        warn_generic_builds(ctx, built_from_source(output))
    return output


def linked_install(ctx: BuildContext) -> bool:
    """Whether `uv pip install` may hard-link package files from uv's cache into this build, as a
    plain `uv pip install` does, instead of copying them (the environment's size, once more).

    Only a create's staging directory (an update writes to an overlay) with no post-install script
    (a user's command could rewrite a linked file in place, and with it the user's cache), and only
    when uv's cache and the staging directory share a file system (else uv would copy anyway).
    uv then installs with `--prefix STAGING`: the same files, scripts naming the mount path's
    interpreter, reached by a path on the cache's mount rather than through the bind, which
    `link(2)` refuses (EXDEV) even on the same file system. Nothing writes through a linked file:
    uv writes new files, `.pyc` files are new, and `pack.reproducible` copies a linked one first."""
    if ctx.mode != "create" or ctx.mounts or ctx.spec.post_install or ctx.container is not None:
        return False  # (a layer on a base image installs inside the container: only the mount path is there)
    if ctx.spec.kind != "pip" or ctx.spec.pip.system_site_packages:
        return False
    cache = Path(target_env(ctx.spec.target_cpu, ctx.spec.optimize_sdists).get("UV_CACHE_DIR") or default_cache_dir())
    if os.environ.get("UV_NO_CACHE", "").lower() in ("1", "true", "yes", "on"):
        return False
    return same_file_system(cache, ctx.staging)


def same_file_system(path: Path, other: Path) -> bool:
    """Whether `path` (or, while it does not exist yet, its nearest existing parent) is on the file
    system of `other`."""
    for where in (path, *path.parents):
        try:
            return os.stat(where).st_dev == os.stat(other).st_dev
        except OSError:
            continue
    return False


def target_env(target: str | None, optimize: bool) -> dict[str, str]:
    """With `--optimize-sdists`: CFLAGS/CXXFLAGS with the target's `-march` (after the user's own), and
    a uv cache of its own for that flag, since uv's cache of built wheels does not key on CFLAGS: a
    generic build cached earlier would otherwise be installed instead of building for the target."""
    if not (target and optimize):
        return {}
    flag = compiler_flag(target)
    env = {name: f"{os.environ.get(name, '')} {flag}".strip() for name in ("CFLAGS", "CXXFLAGS")}
    env["UV_CACHE_DIR"] = f"{default_cache_dir()}-{flag.lstrip('-').replace('=', '-')}"
    return env


def default_cache_dir() -> str:
    """Where uv caches by default (`$UV_CACHE_DIR`, else `$XDG_CACHE_HOME/uv`, else `~/.cache/uv`)."""
    if os.environ.get("UV_CACHE_DIR"):
        return os.environ["UV_CACHE_DIR"].rstrip("/")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return f"{base.rstrip('/')}/uv"


def warn_generic_builds(ctx: BuildContext, built: list[str]) -> None:
    """One warning (or one note, with `--optimize-sdists`) naming what uv compiled from source."""
    if not built:
        return
    target, flag = ctx.spec.target_cpu or "", compiler_flag(ctx.spec.target_cpu or "")
    names = ", ".join(built)
    if ctx.spec.optimize_sdists:
        ctx.ui.info(f"Built from source for {target} (CFLAGS/CXXFLAGS {flag}): {names}")
    else:
        ctx.ui.warn(f"built from source without {flag} for the target CPU {target}: {names} "
                    f"(generic code; add `--optimize-sdists` to compile them for {target})")  # fmt: skip
