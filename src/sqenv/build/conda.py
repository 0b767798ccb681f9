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

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from packaging.utils import canonicalize_name

from sqenv.build.base import BuildContext, BuildResult, Package
from sqenv.build.pip import _uv, _uv_over_layers
from sqenv.errors import BuildError, InputError, PrefixError, SqenvError, UsageError
from sqenv.launch import template
from sqenv.spec import CondaInputs
from sqenv.spec.conda import (
    DEFAULT_ALIAS,
    EnvironmentFile,
    channel_name,
    channel_url,
    check_match_spec,
    file_kind,
    host_platform,
    lock_from_prefix,
    pkgs_dir,
    read_environment_file,
    read_explicit,
)
from sqenv.ui import VERBOSE

ACTIVATE = ".sqenv/activate.sh"

_PIP_LIST = (
    "import json, importlib.metadata as m; print(json.dumps(sorted("
    "(d.metadata['Name'], d.version) for d in m.distributions() if d.metadata['Name'] and "
    "(d.read_text('INSTALLER') or '').strip() in ('uv', 'pip'))))"
)

EXTERNALLY_MANAGED = """\
[externally-managed]
Error=This Python belongs to a sqenv environment: it lives in a read-only image,
 so pip cannot change it here. From outside the environment, add or remove
 packages with `sqenv update PREFIX PKG...` (or `-r requirements.txt`), or
 rebuild it with `sqenv create --force`. For packages of your own on top,
 make a venv: `python -m venv --system-site-packages DIR`.
"""


# ------------------------------------------------------------ the worker
def _explain(err: dict, ctx: BuildContext) -> SqenvError:
    """One clear message for each failure the worker reports."""
    kind, message, details = err.get("kind"), err.get("message", "conda step failed"), err.get("details")
    shown = "\n".join("  | " + line for line in (details or "").splitlines()[-40:]) or None
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
        return BuildError(
            f"cannot reach channel `{name}`{where}: {message}",
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
        return BuildError(message, "check the network, or build with `--offline` from the package cache", shown)
    if kind in ("lockfile", "platform"):
        return InputError(message, "make the lock for this platform, or build from the environment file", shown)
    if kind == "locked-missing":
        return BuildError(message, "the channel no longer serves it: rebuild from the environment file", shown)
    return BuildError(f"conda step failed: {message}", "rerun with `-v` to see rattler's own output", shown)


def _worker(ctx: BuildContext, op: str, request: dict, what: str, *, inside: bool = False) -> dict:
    """Run one worker operation; `inside`: in the build namespace, where the environment is at the mount path."""
    from sqenv.ui import run

    req_path, resp_path = ctx.workdir / f"conda-{op}.json", ctx.workdir / f"conda-{op}.out.json"
    req_path.write_text(json.dumps({**request, "op": op}))
    argv = [sys.executable, "-m", "sqenv.build.conda_worker", str(req_path), str(resp_path)]
    if inside:
        ctx.run(argv, what=what)
    else:
        run(ctx.ui, argv, log=ctx.log, error=BuildError, what=what, cwd=ctx.cwd)
    data = json.loads(resp_path.read_text())
    if "error" in data:
        raise _explain(data["error"], ctx)
    return data


def _common(ctx: BuildContext) -> dict:
    conda = ctx.spec.conda
    pkgs = Path(conda.cache_dir or Path.home() / ".cache" / "sqenv" / "pkgs")
    try:
        pkgs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot use the package cache `{pkgs}`: {exc.strerror}", "pass `--pkgs-dir DIR` or set SQENV_PKGS_DIR"
        ) from None
    return {
        "platform": host_platform(),
        "offline": conda.offline,
        "pkgs_dir": str(pkgs),
        "repodata_cache": str(pkgs / ".repodata"),
    }


# ------------------------------------------------------------ the packages
def _locked(ctx: BuildContext) -> tuple[list[dict], list[str], list[str]]:
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
            found = _worker(ctx, "explicit", {**_common(ctx), "packages": [{"url": u, "hash": h} for u, h in pairs]},
                            f"reading `{source}`")  # fmt: skip
            pins: list[str] = []
            channels = list(dict.fromkeys(e["channel"] for e in found["packages"]))
        else:
            found = _worker(ctx, "lockfile", {**_common(ctx), "path": str(source)}, f"reading `{source}`")
            pins, channels = found.get("pip", []), found.get("channels", [])
    return found["packages"], list(conda.pip_requirements) + pins, channels


def _solve(ctx: BuildContext, specs: list[str], channels: list[str], locked: list[dict] | None = None) -> list[dict]:
    """Solve `specs`; `locked` (the installed packages of an update) are kept where the specs allow."""
    request = {**_common(ctx), "channels": channels, "specs": specs, "locked": locked or []}
    names = ", ".join(channel_name(c, ctx.spec.conda.channel_alias or DEFAULT_ALIAS) for c in channels)
    start = " from the installed packages" if locked else ""
    with ctx.ui.phase(f"Solving {len(specs)} specs{start} with {names}"):
        found = _worker(ctx, "solve", request, "solving")
    ctx.ui.detail("virtual packages: " + " ".join(found.get("virtual_packages", [])))
    return found["packages"]


def _install(ctx: BuildContext, packages: list[dict]) -> None:
    # Hard links into the package cache only when nothing will edit the files in place.
    request = {**_common(ctx), "packages": packages, "staging": str(ctx.staging), "mount": ctx.mount_path,
               "hardlinks": ctx.spec.post_install is None}  # fmt: skip
    with ctx.ui.phase(f"Installing {len(packages)} conda packages"):
        _worker(ctx, "install", request, "installing the conda packages")
    _clean_meta(ctx.staging)


def _clean_meta(staging: Path) -> None:
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
        _uv(ctx, argv, "installing the pip packages")


def _pip_packages(ctx: BuildContext) -> list[Package]:
    out = ctx.run([f"{ctx.mount_path}/bin/python", "-c", _PIP_LIST], what="listing the pip packages")
    return [Package(name=n, version=v, manager="pip") for n, v in json.loads(out.strip().splitlines()[-1])]


# ------------------------------------------------------------ activation
def _sh_ok(script: Path) -> bool:
    return subprocess.run(["/bin/sh", "-n", str(script)], capture_output=True).returncode == 0


def _activation(ctx: BuildContext, env_vars: dict[str, str | None], scripts: dict[str, bool], own: dict) -> str:
    """The body of `.sqenv/activate.sh`: `env_vars.d` files (name -> text), `activate.d` scripts (name -> valid sh)."""
    variables: dict[str, str] = {}
    for name, text in sorted(env_vars.items()):
        try:
            variables.update({str(k): str(v) for k, v in json.loads(text or "").items()})
        except (ValueError, AttributeError):
            ctx.ui.warn(f"ignoring etc/conda/env_vars.d/{name}: not a JSON object of variables")
    variables.update(own)
    for name, valid in sorted(scripts.items()):
        if not valid:
            ctx.ui.warn(f"skipping activation script {name}: it is not valid POSIX sh")
    body = template("activate.sh")
    # Values are literal, as conda sets them (no `$VAR` expansion); the scripts are the packages'.
    exports = "".join(f"# shellcheck disable=SC2016\nexport {k}={shlex.quote(v)}\n" for k, v in variables.items())
    sources = "".join(
        f'# shellcheck source=/dev/null\n. "$CONDA_PREFIX"/etc/conda/activate.d/{shlex.quote(s)}\n'
        for s, valid in sorted(scripts.items())
        if valid
    )
    return body.replace("# @VARIABLES@\n", exports or ":\n").replace("# @SCRIPTS@\n", sources or ":\n")


def write_activation(ctx: BuildContext) -> None:
    """`.sqenv/activate.sh` (and conda's own `conda-meta/state` for the yml's variables)."""
    staging = ctx.staging
    env_vars = {
        p.name: p.read_text(errors="replace") for p in (staging / "etc" / "conda" / "env_vars.d").glob("*.json")
    }
    scripts = {p.name: _sh_ok(p) for p in (staging / "etc" / "conda" / "activate.d").glob("*.sh")}
    own = dict(ctx.spec.conda.variables)
    target = staging / ACTIVATE
    target.parent.mkdir(exist_ok=True)
    target.write_text(_activation(ctx, env_vars, scripts, own))
    target.chmod(0o644)
    if own and (staging / "conda-meta").is_dir():
        (staging / "conda-meta" / "state").write_text(_state(own))


def _state(variables: dict[str, str]) -> str:
    return json.dumps({"env_vars": variables}, indent=1) + "\n"


def mark_externally_managed(staging: Path) -> None:
    """PEP 668 marker in the conda Python's stdlib directory (a conda Python is not a venv)."""
    for os_py in staging.glob("lib/python3*/os.py"):
        marker = os_py.parent / "EXTERNALLY-MANAGED"
        if not marker.exists():
            marker.write_text(EXTERNALLY_MANAGED)


# ------------------------------------------------------------ builder interface
def _package(e: dict, alias: str) -> Package:
    return Package(name=e["name"], version=e["version"], manager="conda", build=e["build"],
                   channel=channel_name(e["channel"], alias), url=e["url"], sha256=e.get("sha256"))  # fmt: skip


def _python_info(packages: list[dict], mount: str) -> dict | None:
    python = next((e for e in packages if e["name"] == "python"), None)
    if python is None:
        return None
    return {"version": python["version"], "implementation": "cpython", "executable": f"{mount}/bin/python",
            "prefix": mount, "manager": "conda"}  # fmt: skip


def build(ctx: BuildContext) -> BuildResult:
    conda = ctx.spec.conda
    if conda.lock_from or conda.explicit_file:
        packages, pip_lines, channels = _locked(ctx)
    else:
        packages = _solve(ctx, list(conda.specs), list(conda.channels))
        pip_lines, channels = list(conda.pip_requirements), list(conda.channels)
    _install(ctx, packages)
    _pip(ctx, pip_lines, list(conda.pip_requirement_files))
    alias = conda.channel_alias or DEFAULT_ALIAS
    result = BuildResult(
        packages=[_package(e, alias) for e in packages],
        python=_python_info(packages, ctx.mount_path),
        # Always: conda users and tools expect CONDA_PREFIX & co. even without activate.d scripts.
        activate=True,
        extra={"lock": {"platform": host_platform(), "channels": channels, "packages": packages}},
    )
    _record_request(result.extra["lock"], ctx)
    if pip_lines or conda.pip_requirement_files:
        result.packages += _pip_packages(ctx)
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
        result.packages = [p for p in result.packages if p.manager != "pip"] + _pip_packages(ctx)
    if not ctx.mounts:  # a create: the staging directory is the whole environment
        write_activation(ctx)
        mark_externally_managed(ctx.staging)
    else:  # an update: the script may have added activation scripts
        _refresh_mounted(ctx)
    return result


# ------------------------------------------------------------ updates
# `sqenv update` runs with the current layers mounted under a writable upper
# directory (`sqenv.update`): the solve starts from the installed set, and
# rattler, run inside the build namespace against the mount path itself,
# links and unlinks only the difference (removed files become whiteouts).

_GATHER = r"""
import glob, json, os, subprocess, sys
root = sys.argv[1]
def read(path):
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None
def files(sub, suffix):
    d = os.path.join(root, sub)
    return sorted(n for n in os.listdir(d) if n.endswith(suffix)) if os.path.isdir(d) else []
print(json.dumps({
    "env_vars": {n: read(os.path.join(root, "etc/conda/env_vars.d", n))
                 for n in files("etc/conda/env_vars.d", ".json")},
    "scripts": {n: subprocess.run(["/bin/sh", "-n", os.path.join(root, "etc/conda/activate.d", n)],
                                  capture_output=True).returncode == 0 for n in files("etc/conda/activate.d", ".sh")},
    "state": read(os.path.join(root, "conda-meta/state")),
    "activate": read(os.path.join(root, sys.argv[2])),
    "unmarked": [os.path.relpath(os.path.dirname(p), root) for p in glob.glob(root + "/lib/python3*/os.py")
                 if not os.path.exists(os.path.join(os.path.dirname(p), "EXTERNALLY-MANAGED"))],
}))
"""


def _spec_name(spec: str) -> str:
    """The package name of a match spec (rattler's parser: pure parsing, safe in this process)."""
    from rattler import MatchSpec

    name = MatchSpec(spec).name
    return str(getattr(name, "normalized", name))


def _dep_name(depends: str) -> str:
    """The package name of a `depends` entry (`sqlib-a >=2`, `python>=3.8`, `conda-forge::numpy`)."""
    found = re.match(r"\s*(?:[^\s:]+::)?([^\s=<>!~\[]+)", depends)
    return found.group(1) if found else ""


def _copy_in(ctx: BuildContext, pairs: list[tuple[Path, str]], what: str) -> None:
    """Write files at the mount path (through the overlay, so they land in the upper directory)."""
    if not pairs:
        return
    script = 'while [ $# -gt 0 ]; do mkdir -p "${2%/*}" && cp "$1" "$2" || exit 1; shift 2; done'
    ctx.run(["/bin/sh", "-c", script, "sh", *(x for src, dest in pairs for x in (str(src), dest))], what=what)


def _refresh_mounted(ctx: BuildContext, variables: dict[str, str] | None = None) -> None:
    """After an update: conda's `state` (the yml's `variables`), the activation script and the PEP 668
    marker of a new Python, each written only when it differs from what the environment has."""
    mount = ctx.mount_path
    out = ctx.run([sys.executable, "-c", _GATHER, mount, ACTIVATE], what="reading the activation scripts")
    found = json.loads(out.strip().splitlines()[-1])
    writes: list[tuple[Path, str]] = []
    own: dict[str, str] = {}
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        own = {str(k): str(v) for k, v in json.loads(found["state"] or "{}").get("env_vars", {}).items()}
    if variables is not None and variables != own:
        own = variables
        (ctx.workdir / "state").write_text(_state(own))
        writes.append((ctx.workdir / "state", f"{mount}/conda-meta/state"))
    body = _activation(ctx, found["env_vars"], found["scripts"], own)
    if body != found["activate"]:
        (ctx.workdir / "activate.sh").write_text(body)
        writes.append((ctx.workdir / "activate.sh", f"{mount}/{ACTIVATE}"))
    if found["unmarked"]:
        (ctx.workdir / "EXTERNALLY-MANAGED").write_text(EXTERNALLY_MANAGED)
        writes += [(ctx.workdir / "EXTERNALLY-MANAGED", f"{mount}/{d}/EXTERNALLY-MANAGED") for d in found["unmarked"]]
    _copy_in(ctx, writes, "writing the activation script")


def _update_context(
    ctx: BuildContext, base: dict, env_path: Path | None, env_file: EnvironmentFile | None
) -> BuildContext:
    """The conda settings of the install (its create's inputs, its lock) for this update's builder calls."""
    created = (base.get("inputs") or {}).get("conda") or {}
    lock = base.get("lock") or {}
    alias = lock.get("channel_alias") or created.get("channel_alias") or os.environ.get("SQENV_CHANNEL_ALIAS")
    alias = alias or DEFAULT_ALIAS
    channels = list(lock.get("channels") or created.get("channels") or [])
    if env_file is not None:
        wanted = [c for c in env_file.channels if c != "nodefaults"]
        if "defaults" in wanted:
            raise InputError(
                "the `defaults` channel (Anaconda's repository, under Anaconda's terms of service) is not used "
                "by sqenv",
                "replace it with `conda-forge` (or a mirror's URL) in the channels",
            )
        urls = [channel_url(c, alias) for c in wanted]
        channels = urls + [c for c in channels if c not in urls]
    conda = CondaInputs(
        environment_file=env_path,
        channels=tuple(channels),
        channel_alias=alias,
        cache_dir=pkgs_dir(None),  # this user's (SQENV_PKGS_DIR): group members share installs, not caches
        variables=tuple(env_file.variables) if env_file else (),
    )
    return replace(ctx, spec=replace(ctx.spec, conda=conda))


def _requested(
    base: dict, lock: dict, env_file: EnvironmentFile | None, add: tuple[str, ...], remove: list[str]
) -> list[str]:
    """The specs the environment is solved for: what was asked before (or the yml's, with `-f`),
    those of the same name replaced by `add`, the removed ones dropped."""
    if env_file is not None:
        before = list(env_file.specs)
    elif "specs" in lock:
        before = list(lock["specs"])
    else:  # an install made before updates recorded them, or from an explicit file or lock: keep everything
        before = list(((base.get("inputs") or {}).get("conda") or {}).get("specs") or [])
        before = before or [e["name"] for e in lock["packages"]]
    wanted = {_spec_name(spec): spec for spec in before}
    for spec in add:
        wanted.pop(_spec_name(spec), None)
        wanted[_spec_name(spec)] = spec
    for name in remove:
        wanted.pop(name, None)
    return list(wanted.values())


def _check_dependents(lock: dict, remove: list[str]) -> None:
    """Removing a package others need would only bring it back: refuse, naming them (and, in the hint,
    everything that would have to go with it)."""
    needs = {e["name"]: {_dep_name(d) for d in e.get("depends", [])} for e in lock["packages"]}
    for name in remove:
        users = sorted(n for n, deps in needs.items() if name in deps and n not in remove)
        if not users:
            continue
        closure, todo = set(), [name]
        while todo:
            current = todo.pop()
            for n, deps in needs.items():
                if current in deps and n not in closure:
                    closure.add(n)
                    todo.append(n)
        also = " ".join(f"--remove {n}" for n in sorted(closure | set(remove)))
        raise InputError(
            f"cannot remove `{name}`: {', '.join(f'`{u}`' for u in users)} "
            f"{'depends' if len(users) == 1 else 'depend'} on it",
            f"remove what needs it too (`{also}`), or keep `{name}`",
        )


def _changes(old: list[dict], new: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed) package names between two sets of lock entries."""
    before = {e["name"]: e for e in old}
    after = {e["name"]: e for e in new}
    key = ("version", "build", "sha256", "url")
    added = sorted(n for n in after if n not in before)
    removed = sorted(n for n in before if n not in after)
    changed = sorted(n for n in after if n in before and any(after[n].get(k) != before[n].get(k) for k in key))
    return added, removed, changed


def _update_conda(ctx: BuildContext, lock: dict, specs: list[str], remove: list[str]) -> list[dict]:
    """Solve from the installed set, then link and unlink the difference at the mount path."""
    conda = ctx.spec.conda
    installed = list(lock["packages"])
    found = _solve(ctx, specs, list(conda.channels), locked=installed)
    back = [e["name"] for e in found if e["name"] in remove]
    if back:
        needs = sorted({e["name"] for e in found for d in e.get("depends", []) if _dep_name(d) in back})
        raise InputError(
            f"cannot remove {', '.join(f'`{n}`' for n in back)}: the remaining packages need it"
            + (f" ({', '.join(needs)})" if needs else ""),
            "remove those packages too, or keep it",
        )
    added, removed, changed = _changes(installed, found)
    if not (added or removed or changed):
        ctx.ui.detail("the conda packages stay as they are")
        return installed
    words = [f"{len(x)} {w}" for x, w in ((added, "new"), (changed, "changed"), (removed, "removed")) if x]
    request = {**_common(ctx), "packages": found, "staging": ctx.mount_path, "mount": ctx.mount_path,
               "hardlinks": False}  # fmt: skip
    with ctx.ui.phase(f"Installing the conda changes ({', '.join(words)})"):
        _worker(ctx, "install", request, "installing the conda packages", inside=True)
    _clean_meta(ctx.staging)  # the upper directory: only the new packages' records are there
    return found


def update(ctx: BuildContext, change) -> BuildResult:
    """`sqenv update` of a conda install: conda packages solved from the installed set, pip ones on top.

    PKG arguments are match specs, `--remove` takes conda or pip package names,
    `-f environment.yml` re-solves for that file's specs (and installs its `pip:`
    part), `-r` files go to uv. The lock and the activation follow."""
    base = change.base
    lock = base.get("lock")
    if not lock or not lock.get("packages"):
        raise PrefixError("this conda install has no lock in its metadata, so it cannot be updated",
                          "rebuild it with `sqenv create --force`")  # fmt: skip
    env_file = None
    if change.environment_file is not None:
        if file_kind(change.environment_file) != "yml":
            raise UsageError(
                f"`{change.environment_file}` is an explicit or lock file: `sqenv update -f` takes an environment.yml",
                f"to install exactly that set, rebuild: `sqenv create --force PREFIX --from {change.environment_file}`",
            )
        env_file = read_environment_file(change.environment_file)
    ctx = _update_context(ctx, base, change.environment_file, env_file)
    conda_names = {e["name"] for e in lock["packages"]}
    by_key = {canonicalize_name(n): n for n in conda_names}
    conda_remove, pip_remove = [], []
    for name in change.remove:
        if name in conda_names or canonicalize_name(name) in by_key:
            conda_remove.append(name if name in conda_names else by_key[canonicalize_name(name)])
        else:
            pip_remove.append(name)
    for spec in change.packages:
        check_match_spec(spec, f"package `{spec}`")
    _check_dependents(lock, conda_remove)
    specs = _requested(base, lock, env_file, change.packages, conda_remove)
    packages = list(lock["packages"])
    if change.packages or conda_remove or env_file is not None:
        if not specs:
            raise InputError("that would remove every conda package", "to start afresh, use `sqenv create --force`")
        packages = _update_conda(ctx, lock, specs, conda_remove)
    has_python = any(e["name"] == "python" for e in packages)
    pip_lines = list(env_file.pip) if env_file else []
    if (pip_remove or pip_lines or change.requirement_files) and not has_python:
        raise InputError("this conda environment has no Python, so pip packages cannot be added to or removed from it",
                         "add `python` to its conda packages first")  # fmt: skip
    python = f"{ctx.mount_path}/bin/python"
    if pip_remove:
        with ctx.ui.phase("Removing " + ", ".join(pip_remove)):
            _uv_over_layers(ctx, ["pip", "uninstall", "--python", python, "--break-system-packages",
                                  *pip_remove], "removing packages")  # fmt: skip
    if pip_lines or change.requirement_files:
        argv = ["pip", "install", "--python", python, "--compile-bytecode", "--break-system-packages"]
        if pip_lines:
            req = ctx.workdir / "pip-requirements.txt"
            req.write_text("".join(line + "\n" for line in pip_lines))
            argv += ["-r", str(req)]
        for path in change.requirement_files:
            argv += ["-r", str(path)]
        with ctx.ui.phase("Resolving, downloading and installing the pip packages"):
            _uv_over_layers(ctx, argv, "installing packages")
    _refresh_mounted(ctx, dict(env_file.variables) if env_file else None)
    alias = ctx.spec.conda.channel_alias or DEFAULT_ALIAS
    new_lock = {**lock, "channels": list(ctx.spec.conda.channels), "packages": packages, "specs": specs,
                "channel_alias": alias}  # fmt: skip
    if env_file is not None:
        new_lock.pop("variables", None)
        if env_file.variables:
            new_lock["variables"] = [list(kv) for kv in env_file.variables]
    return BuildResult(
        packages=[_package(e, alias) for e in packages] + (_pip_packages(ctx) if has_python else []),
        python=_python_info(packages, ctx.mount_path),
        activate=True,
        extra={"lock": new_lock},
    )
