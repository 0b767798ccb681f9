"""`sqenv update` of conda environments.

The update runs with the current layers mounted under a writable upper
directory (`sqenv.update.apply`): the solve starts from the installed set (the
lock), and rattler, run inside the build namespace against the mount path
itself, links and unlinks only the difference (removed files become
whiteouts in the new layer).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import replace
from pathlib import Path

from packaging.utils import canonicalize_name

from sqenv.builders.base import BuildContext, BuildResult
from sqenv.builders.conda.activation import refresh_mounted
from sqenv.builders.conda.create import call_worker, clean_meta, common, package, pip_packages, python_info, solve
from sqenv.builders.uv import uv
from sqenv.errors import InputError, PrefixError, UsageError
from sqenv.inputs import CondaInputs
from sqenv.inputs.conda import (
    DEFAULT_ALIAS,
    EnvironmentFile,
    channel_url,
    check_match_spec,
    file_kind,
    pkgs_dir,
    read_environment_file,
)

# `sqenv update` runs with the current layers mounted under a writable upper
# directory (`sqenv.update.apply`): the solve starts from the installed set, and
# rattler, run inside the build namespace against the mount path itself,
# links and unlinks only the difference (removed files become whiteouts).


def _spec_name(spec: str) -> str:
    """The package name of a match spec (rattler's parser: pure parsing, safe in this process)."""
    from rattler import MatchSpec

    name = MatchSpec(spec).name
    return str(getattr(name, "normalized", name))


def _dep_name(depends: str) -> str:
    """The package name of a `depends` entry (`sqlib-a >=2`, `python>=3.8`, `conda-forge::numpy`)."""
    found = re.match(r"\s*(?:[^\s:]+::)?([^\s=<>!~\[]+)", depends)
    return found.group(1) if found else ""


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
    found = solve(ctx, specs, list(conda.channels), locked=installed)
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
    request = {**common(ctx), "packages": found, "staging": ctx.mount_path, "mount": ctx.mount_path,
               "hardlinks": False}  # fmt: skip
    with ctx.ui.phase(f"Installing the conda changes ({', '.join(words)})"):
        call_worker(ctx, "install", request, "installing the conda packages", inside=True)
    clean_meta(ctx.staging)  # the upper directory: only the new packages' records are there
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
                "to install exactly that set, rebuild: "
                f"`sqenv create --force PREFIX --from {shlex.quote(str(change.environment_file))}`",
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
            uv(ctx, ["pip", "uninstall", "--python", python, "--break-system-packages",
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
            uv(ctx, argv, "installing packages")
    refresh_mounted(ctx, dict(env_file.variables) if env_file else None)
    alias = ctx.spec.conda.channel_alias or DEFAULT_ALIAS
    new_lock = {**lock, "channels": list(ctx.spec.conda.channels), "packages": packages, "specs": specs,
                "channel_alias": alias}  # fmt: skip
    if env_file is not None:
        new_lock.pop("variables", None)
        if env_file.variables:
            new_lock["variables"] = [list(kv) for kv in env_file.variables]
    return BuildResult(
        packages=[package(e, alias) for e in packages] + (pip_packages(ctx) if has_python else []),
        python=python_info(packages, ctx.mount_path),
        activate=True,
        extra={"lock": new_lock},
    )
