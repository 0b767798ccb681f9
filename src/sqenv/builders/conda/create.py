"""Conda environments: solved and installed by py-rattler, pip on top with uv.

The steps: the packages (solved from match specs, found for an explicit
file's URLs, read from a lock) → installed into the staging directory with
prefix placeholders replaced for the mount path (rattler, in a child process:
`conda_worker`) → the `pip:` part with uv into the conda Python → the
activation script (`.sqenv/activate.sh`, what `conda activate` does) →
`EXTERNALLY-MANAGED`, so pip at run time points at `sqenv update` instead of
failing on the read-only image.

The installed packages are recorded as the install's lock (`extra["lock"]`):
`sqenv create --from PREFIX` installs exactly those files again, and
`sqenv export` writes them as an explicit file or environment.yml. The lock
also keeps the specs asked for, which `sqenv update` (`update` below) solves
for again, starting from the installed packages.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from sqenv import snippets
from sqenv.builders.base import BuildContext, BuildResult, Package
from sqenv.builders.conda import mpi as conda_mpi
from sqenv.builders.conda.activation import (
    mark_externally_managed,
    refresh_mounted,
    write_activation,
)
from sqenv.builders.conda.target import target_record
from sqenv.builders.uv import uv
from sqenv.builders.workdir import check_cache_dir
from sqenv.errors import BuildError, InputError, SqenvError
from sqenv.inputs.conda import (
    DEFAULT_ALIAS,
    channel_name,
    file_kind,
    host_platform,
    lock_from_prefix,
    read_explicit,
)
from sqenv.tools.diagnose import details as _details
from sqenv.tools.diagnose import network
from sqenv.ui import VERBOSE


# ------------------------------------------------------------ the worker
def explain(err: dict, ctx: BuildContext) -> SqenvError:
    """One clear message for each failure the worker reports."""
    kind, message, details = err.get("kind"), err.get("message", "conda step failed"), err.get("details")
    if kind == "mpi-external":
        return conda_mpi.explain(err)
    shown = _details((details or "").splitlines(), ctx.log) if details else None
    alias = ctx.spec.conda.channel_alias or DEFAULT_ALIAS
    channels = ", ".join(f"`{channel_name(c, alias)}`" for c in ctx.spec.conda.channels) or "the channels"
    if kind == "missing":
        close = err.get("suggestions") or []
        hint = "check the name (search https://prefix.dev) and the channels given with `-c`"
        if close:
            hint = "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
        if ctx.mounts:  # an update: PKG arguments of a conda install are conda packages
            hint += "; pip packages go in a requirements file: `sqenv update PREFIX -r requirements.txt`"
        return BuildError(f"package `{err['name']}` does not exist in {channels}", hint)
    if kind == "nomatch":
        versions = err.get("versions") or []
        hint = f"available: {', '.join(versions[-12:])}" if versions else "relax the version constraint"
        return BuildError(f"{message} in {channels}", hint)
    if kind == "unsolvable":
        hint = "relax the version constraints named in the explanation above"
        if "__cuda" in (details or ""):
            hint = "to build a GPU environment on a machine without a GPU, set CONDA_OVERRIDE_CUDA (e.g. `=12.4`)"
        elif "__glibc" in (details or ""):
            hint = "the packages need a newer glibc than this machine's; set CONDA_OVERRIDE_GLIBC if the nodes have it"
        return BuildError(message, hint, shown)
    if kind == "channel":
        name = channel_name(err.get("channel", "?"), alias)
        where = f" ({err['channel']})" if name != err.get("channel") else ""
        net = network(details or message)
        why = net.headline.replace(" the package index", "") if net and net.kind in ("tls", "dns", "proxy") else message
        return BuildError(
            f"cannot reach channel `{name}`{where}: {why}",
            "check the network and proxy settings; build from the package cache and local channels with "
            "`--offline`, or use a mirror with `--channel-alias URL`",
            shown if ctx.ui.level >= VERBOSE else None,
        )
    if kind == "offline-channel":
        name = channel_name(err.get("channel", "?"), alias)
        return BuildError(
            f"channel `{name}` is not in the cache, and `--offline` forbids fetching it",
            "build once without `--offline` to fill the cache, or use a local channel (`-c /path/to/channel`)",
        )
    if kind == "offline-package":
        return BuildError(
            f"{message} ({ctx.spec.conda.cache_dir}), and `--offline` forbids downloading it",
            "build once online with the same `--pkgs-dir`, or drop `--offline`",
        )
    if kind == "checksum":
        return BuildError(
            message,
            "the package file is not the one its channel index or lock names: re-index the channel, "
            "or rebuild the lock; a damaged download is fetched again on retry",
            shown,
        )
    if kind == "download":
        net = network(details or "")
        return BuildError(f"{message}: {net.headline}" if net else message,
                          "check the network, or build with `--offline` from the package cache", shown)  # fmt: skip
    if kind in ("lockfile", "platform"):
        return InputError(message, "make the lock for this platform, or build from the environment file", shown)
    if kind == "locked-missing":
        return BuildError(message, "the channel no longer serves it: rebuild from the environment file", shown)
    return BuildError(f"conda step failed: {message}", "rerun with `-v` to see rattler's own output", shown)


def call_worker(ctx: BuildContext, op: str, request: dict, what: str, *, inside: bool = False) -> dict:
    """Run one worker operation; `inside`: in the build namespace, where the environment is at the mount path."""
    from sqenv.tools.run import run

    req_path, resp_path = ctx.workdir / f"conda-{op}.json", ctx.workdir / f"conda-{op}.out.json"
    req_path.write_text(json.dumps({**request, "op": op}))
    argv = [sys.executable, "-m", "sqenv.builders.conda.worker", str(req_path), str(resp_path)]
    if inside:
        ctx.run(argv, what=what)
    else:
        run(ctx.ui, argv, log=ctx.log, error=BuildError, what=what, cwd=ctx.cwd)
    data = json.loads(resp_path.read_text())
    if "error" in data:
        raise explain(data["error"], ctx)
    return data


def common(ctx: BuildContext) -> dict:
    conda = ctx.spec.conda
    pkgs = Path(conda.cache_dir or Path.home() / ".cache" / "sqenv" / "pkgs")
    pkgs = check_cache_dir(
        pkgs, "the package cache", "pass `--pkgs-dir DIR` or set SQENV_PKGS_DIR to a directory of yours"
    )
    return {
        "platform": host_platform(),
        "offline": conda.offline,
        "pkgs_dir": str(pkgs),
        "repodata_cache": str(pkgs / ".repodata"),
    }


# ------------------------------------------------------------ the packages
def locked_packages(ctx: BuildContext) -> tuple[list[dict], list[str], list[str]]:
    """(lock entries, pip pins, channels) of `--from PREFIX_OR_FILE` or an explicit file."""
    conda = ctx.spec.conda
    source = conda.lock_from or conda.explicit_file
    assert source is not None
    if source.is_dir():
        _kind, version, _inputs = lock_from_prefix(source)
        lock = version["lock"]
        return list(lock["packages"]), list(conda.pip_requirements), list(lock.get("channels", []))
    with ctx.ui.phase(f"Reading {source.name}"):
        if conda.explicit_file or file_kind(source) == "explicit":
            pairs = read_explicit(source, host_platform())
            found = call_worker(ctx, "explicit", {**common(ctx), "packages": [{"url": u, "hash": h} for u, h in pairs]},
                            f"reading `{source}`")  # fmt: skip
            pins: list[str] = []
            channels = list(dict.fromkeys(e["channel"] for e in found["packages"]))
        else:
            found = call_worker(ctx, "lockfile", {**common(ctx), "path": str(source)}, f"reading `{source}`")
            pins, channels = found.get("pip", []), found.get("channels", [])
    return found["packages"], list(conda.pip_requirements) + pins, channels


def solve(ctx: BuildContext, specs: list[str], channels: list[str], locked: list[dict] | None = None,
          virtual: list[str] | None = None) -> list[dict]:  # fmt: skip
    """Solve `specs`; `locked` (the installed packages of an update) are kept where the specs allow.
    `virtual` gets the virtual packages solved for; `--mpi host` pins external MPI builds,
    `--target-cpu` sets `__archspec` (see `conda.mpi`, `inputs.cpu`)."""
    request = {**common(ctx), "channels": channels, "specs": specs, "locked": locked or [],
               "mpi": ctx.spec.mpi, "archspec": ctx.spec.target_cpu}  # fmt: skip
    names = ", ".join(channel_name(c, ctx.spec.conda.channel_alias or DEFAULT_ALIAS) for c in channels)
    start = " from the installed packages" if locked else ""
    with ctx.ui.phase(f"Solving {len(specs)} specs{start} with {names}"):
        found = call_worker(ctx, "solve", request, "solving")
    ctx.ui.detail("virtual packages: " + " ".join(found.get("virtual_packages", [])))
    if virtual is not None:
        virtual += found.get("virtual_packages", [])
    return found["packages"]


def install(ctx: BuildContext, packages: list[dict]) -> None:
    # Hard links into the package cache only when nothing will edit the files in place.
    request = {**common(ctx), "packages": packages, "staging": str(ctx.staging), "mount": ctx.mount_path,
               "hardlinks": ctx.spec.post_install is None}  # fmt: skip
    with ctx.ui.phase(f"Installing {len(packages)} conda packages"):
        call_worker(ctx, "install", request, "installing the conda packages")
    clean_meta(ctx.staging)


def clean_meta(staging: Path) -> None:
    """No host paths of the package cache in the environment's records, no cache marker at its top."""
    (staging / "CACHEDIR.TAG").unlink(missing_ok=True)
    for meta in (staging / "conda-meta").glob("*.json"):
        if meta.is_symlink() or not meta.is_file():
            continue  # an update's whiteout
        data = json.loads(meta.read_text())
        data.pop("extracted_package_dir", None)  # host paths of the package cache
        data.pop("link", None)  # {source: the cache's path, type}: rattler reads no `link` better than half a one
        meta.write_text(json.dumps(data, indent=1))


# ------------------------------------------------------------ pip on top
def _pip(ctx: BuildContext, lines: list[str], files: list[Path]) -> None:
    if not lines and not files:
        return
    python = ctx.staging / "bin" / "python"
    if not (python.exists() or python.is_symlink()):
        raise InputError(
            "the `pip:` packages (or `-r` files) need Python in the conda environment, and it has none",
            "add `python` (and `pip`) to the conda dependencies",
        )
    argv = ["pip", "install", "--python", f"{ctx.mount_path}/bin/python", "--compile-bytecode",
            "--break-system-packages"]  # fmt: skip
    if lines:
        req = ctx.workdir / "pip-requirements.txt"
        req.write_text("".join(line + "\n" for line in lines))
        argv += ["-r", str(req)]
    for path in files:
        argv += ["-r", str(path)]
    env_file = ctx.spec.conda.environment_file
    with ctx.ui.phase("Installing the pip packages into the conda Python"):
        if env_file is not None:  # relative paths in the `pip:` section are relative to the yml
            ctx = replace(ctx, cwd=env_file.parent)
        uv(ctx, argv, "installing the pip packages")


def pip_packages(ctx: BuildContext) -> list[Package]:
    out = ctx.run(
        [f"{ctx.mount_path}/bin/python", "-c", snippets.text("conda_pip_list.py")], what="listing the pip packages"
    )
    return [Package(name=n, version=v, manager="pip") for n, v in json.loads(out.strip().splitlines()[-1])]


# ------------------------------------------------------------ builder interface
def package(e: dict, alias: str) -> Package:
    return Package(name=e["name"], version=e["version"], manager="conda", build=e["build"],
                   channel=channel_name(e["channel"], alias), url=e["url"], sha256=e.get("sha256"))  # fmt: skip


def python_info(packages: list[dict], mount: str) -> dict | None:
    python = next((e for e in packages if e["name"] == "python"), None)
    if python is None:
        return None
    return {"version": python["version"], "implementation": "cpython", "executable": f"{mount}/bin/python",
            "prefix": mount, "manager": "conda"}  # fmt: skip


def build(ctx: BuildContext) -> BuildResult:
    conda = ctx.spec.conda
    virtual: list[str] = []
    if conda.lock_from or conda.explicit_file:
        packages, pip_lines, channels = locked_packages(ctx)
    else:
        packages = solve(ctx, list(conda.specs), list(conda.channels), virtual=virtual)
        pip_lines, channels = list(conda.pip_requirements), list(conda.channels)
    install(ctx, packages)
    mpi = conda_mpi.inspect(ctx.staging, packages, ctx.spec.mpi, ctx.ui.warn)
    _pip(ctx, pip_lines, list(conda.pip_requirement_files))
    alias = conda.channel_alias or DEFAULT_ALIAS
    result = BuildResult(
        packages=[package(e, alias) for e in packages],
        python=python_info(packages, ctx.mount_path),
        # Always: conda users and tools expect CONDA_PREFIX & co. even without activate.d scripts.
        activate=True,
        extra={"lock": {"platform": host_platform(), "channels": channels, "packages": packages}},
    )
    _record_request(result.extra["lock"], ctx)
    if mpi:
        result.extra["mpi"] = mpi
    target = target_record(ctx.spec.target_cpu, virtual, packages)
    result.extra["lock"].update(target.lock)
    if target.level:
        result.extra["launch"] = {"cpu_level": target.level}
    if pip_lines or conda.pip_requirement_files:
        result.packages += pip_packages(ctx)
    write_activation(ctx)
    if ctx.spec.post_install is None:
        mark_externally_managed(ctx.staging)  # else after the script (`refresh`): it may use pip
    return result


def _record_request(lock: dict, ctx: BuildContext) -> None:
    """What updates start from, besides the packages: the specs asked for (none recorded: an update
    keeps every package), the yml's variables, the channel alias."""
    conda = ctx.spec.conda
    specs, variables = list(conda.specs), [list(kv) for kv in conda.variables]
    if conda.lock_from is not None and conda.lock_from.is_dir():  # `--from PREFIX`: what that install asked for
        source = lock_from_prefix(conda.lock_from)[1]["lock"]
        specs = specs or list(source.get("specs", []))
        variables = variables or list(source.get("variables", []))
    if specs:
        lock["specs"] = specs
    if variables:
        lock["variables"] = variables
    lock["channel_alias"] = conda.channel_alias or DEFAULT_ALIAS


def refresh(ctx: BuildContext, result: BuildResult) -> BuildResult:
    """After a post-install script: the pip packages again, the activation, the PEP 668 marker."""
    has_python = result.python is not None or (ctx.staging / "bin" / "python").exists()
    if has_python:
        result.packages = [p for p in result.packages if p.manager != "pip"] + pip_packages(ctx)
    if ctx.mode == "create":  # the staging directory is the whole environment
        write_activation(ctx)
        mark_externally_managed(ctx.staging)
    else:  # the script may have added activation scripts
        refresh_mounted(ctx)
    return result
