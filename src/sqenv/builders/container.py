"""Wrap an existing directory tree (`sqenv wrap DIR`, Tykky's `wrap-install`).

The tree (a conda env or venv made elsewhere, an application directory) is
copied into the staging directory and packed like any environment. Its
absolute prefix is fixed the way conda-pack does it, to the mount path the
image has at run time:

- text files: every occurrence of the old prefix is replaced (shebangs,
  `.pth` and `RECORD` files, activation and config scripts);
- binary files: C strings holding it get a same-length replacement padded
  with NULs, possible because the mount path is shorter; where it is not,
  the file is left as it is and a warning names it (`--mask` fixes that);
  `.pyc` files are left alone (their paths only show in tracebacks);
- symlinks into the tree become relative.

A venv's `pyvenv.cfg` stays valid: its `home` is the host Python, outside.
With `--mask` nothing is rewritten: the image is shown at the tree's
ORIGINAL path instead of the mount path (hiding the original there), which
works for trees that cannot be relocated.

The programs under the `-w` paths get launchers: `bin/` entries that the
rest of the pipeline treats like any environment's. A `-w` path other than
`bin` gets one small script per program in `bin/` that execs it by its own
path, so programs that find their files from `$0` keep working.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from sqenv.builders.base import BuildContext, BuildResult, Package
from sqenv.errors import InputError, UsageError

_SCRIPT = '#!/bin/sh\n# sqenv wrap: runs {rel} of the wrapped tree by its own path.\nexec "${{0%/*}}/../{rel}" "$@"\n'


def build(ctx: BuildContext) -> BuildResult:
    wrap = ctx.spec.wrap
    assert wrap.source is not None
    source = wrap.source
    with ctx.ui.phase(f"Copying {source}"):
        copy_tree(source, ctx.staging)
    if not wrap.mask:
        with ctx.ui.phase(f"Relocating it from {source} to {ctx.mount_path}"):
            left = relocate(ctx.staging, old_prefixes(source), ctx.mount_path)
        if left:
            shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            ctx.ui.warn(
                f"{len(left)} binary file(s) still name `{source}` (the mount path is longer): {shown}; "
                f"they will look there at run time. Use `--mask` to run the tree at its original path."
            )
    programs = add_programs(ctx.staging, wrap.wrapper_paths)
    extra: dict = {"programs": programs}
    if wrap.mask:
        extra["launch"] = {"mount_path": str(source)}
    return BuildResult(packages=find_packages(ctx.staging), python=python_info(ctx.staging), extra=extra)


def refresh(ctx: BuildContext, result: BuildResult) -> BuildResult:
    result.packages = find_packages(ctx.staging)
    return result


# ------------------------------------------------------------------ copy
def copy_tree(source: Path, dest: Path) -> None:
    """Copy SOURCE's content into DEST (which exists): modes and symlinks kept, sockets and devices skipped."""

    def special(directory: str, names: list[str]) -> list[str]:
        skip = []
        for name in names:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                skip.append(name)
        return skip

    try:
        shutil.copytree(source, dest, symlinks=True, ignore=special, dirs_exist_ok=True)
    except shutil.Error as exc:
        failed = [f"{src} ({why})" for src, _dst, why in exc.args[0][:3]]
        raise InputError(
            f"cannot copy `{source}`: {'; '.join(failed)}", "make the whole tree readable by you, then retry"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot copy `{source}`: {exc}", "make the whole tree readable by you") from None


# ------------------------------------------------------------------ relocation
def old_prefixes(source: Path) -> list[bytes]:
    """The spellings of the tree's path that files may hold, longest first."""
    names = {os.fsencode(os.path.abspath(source)), os.fsencode(os.path.realpath(source))}
    return sorted(names, key=len, reverse=True)


def _binary_pattern(old: bytes) -> re.Pattern[bytes]:
    return re.compile(re.escape(old) + rb"([^\0]*?)\0")


def relocate(root: Path, olds: list[bytes], new: str) -> list[str]:
    """Rewrite the prefixes in every file under ROOT; return the files that could not be fixed."""
    target = os.fsencode(new)
    left = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                _relink(root, path, olds)
            elif stat.S_ISREG(st.st_mode) and not _rewrite(path, st, olds, target):
                left.append(os.path.relpath(path, root))
        for name in _dirs:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                _relink(root, path, olds)
    return left


def _rewrite(path: str, st: os.stat_result, olds: list[bytes], new: bytes) -> bool:
    """Fix one file; False when a binary file keeps an old prefix that cannot be replaced."""
    with open(path, "rb") as fh:
        data = fh.read()
    if not any(old in data for old in olds):
        return True
    if b"\0" not in data:
        for old in olds:
            data = data.replace(old, new)
    elif path.endswith(".pyc"):
        return True
    else:
        fixed = True
        for old in olds:
            if old not in data:
                continue
            if len(new) > len(old):
                fixed = False
                continue

            def pad(match: re.Match[bytes], old: bytes = old) -> bytes:
                found = match.group()
                return found.replace(old, new) + b"\0" * ((len(old) - len(new)) * found.count(old))

            data = _binary_pattern(old).sub(pad, data)
        if not fixed:
            return False
    if not st.st_mode & stat.S_IWUSR:
        os.chmod(path, st.st_mode | stat.S_IWUSR)
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()
    os.chmod(path, stat.S_IMODE(st.st_mode))
    return True


def _relink(root: Path, path: str, olds: list[bytes]) -> None:
    """An absolute symlink into the tree becomes relative, so it works wherever the image is shown."""
    target = os.fsencode(os.readlink(path))
    for old in olds:
        if target == old or target.startswith(old + b"/"):
            inside = os.path.join(os.fsencode(root), target[len(old) :].lstrip(b"/"))
            os.unlink(path)
            os.symlink(os.path.relpath(inside, os.path.dirname(os.fsencode(path))), path)
            return


# ------------------------------------------------------------------ programs
def wrapper_paths(source: Path, given: Iterable[str]) -> tuple[str, ...]:
    """The `-w` paths relative to SOURCE (absolute ones must lie inside it), checked."""
    found = []
    for raw in given:
        raw = raw.strip()
        if not raw:
            continue
        rel = raw
        if raw.startswith("/"):
            for base in (os.path.abspath(source), os.path.realpath(source)):
                if raw == base or raw.startswith(base + "/"):
                    rel = os.path.relpath(raw, base)
                    break
            else:
                raise InputError(f"-w `{raw}` is not inside `{source}`", "give paths relative to it, e.g. `-w bin`")
        rel = os.path.normpath(rel)
        if rel == ".":
            raise InputError(f"-w `{raw}` is the tree's top directory", "name the programs' directory, e.g. `-w bin`")
        if rel.startswith(".."):
            raise InputError(f"-w `{raw}` is not inside `{source}`", "give paths relative to it, e.g. `-w bin`")
        if not (source / rel).exists():
            raise InputError(f"-w `{raw}`: `{source / rel}` does not exist")
        found.append(rel)
    if not found:
        raise InputError("no wrapper paths given", "name the programs' directories with `-w bin[,other/bin]`")
    return tuple(dict.fromkeys(found))


def _is_program(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.X_OK) and not path.name.startswith(".")
    except OSError:
        return False


def add_programs(staging: Path, rels: Iterable[str]) -> list[str]:
    """Make a `bin/` entry for each program under the `-w` paths; return the names, first path first."""
    from sqenv.publish.launchers import programs as bin_programs

    names: list[str] = []
    bindir = staging / "bin"
    for rel in rels:
        if rel == "bin":
            names += bin_programs(staging)
            continue
        top = staging / rel
        if top.is_dir():
            found = [
                f"{rel}/{entry.name}" for entry in sorted(top.iterdir()) if _is_program(entry) and " " not in entry.name
            ]
        else:
            found = [rel] if _is_program(top) else []
        if not found:
            raise InputError(f"-w `{rel}`: no programs (executable files) there")
        bindir.mkdir(exist_ok=True)
        for item in found:
            name = item.rsplit("/", 1)[-1]
            entry = bindir / name
            if name in names or entry.exists() or entry.is_symlink():
                continue  # the first path that has it wins, as on PATH
            entry.write_text(_SCRIPT.format(rel=item))
            entry.chmod(0o755)
            names.append(name)
    if not names:
        raise InputError("no programs found under the `-w` paths")
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------ what it holds
def find_packages(root: Path) -> list[Package]:
    """Conda packages (conda-meta) and Python distributions (dist-info) in the tree, for `sqenv info`."""
    found: dict[tuple[str, str], Package] = {}
    for meta in sorted((root / "conda-meta").glob("*.json")):
        try:
            rec = json.loads(meta.read_text())
            found[("conda", rec["name"])] = Package(
                name=rec["name"], version=rec["version"], manager="conda", build=rec.get("build"),
                channel=rec.get("channel"),
            )  # fmt: skip
        except (OSError, ValueError, KeyError):
            continue
    for info in sorted(root.glob("lib/python3*/site-packages/*.dist-info/METADATA")):
        fields = {}
        try:
            for line in info.read_text(errors="replace").splitlines():
                if not line.strip():
                    break
                key, _, value = line.partition(": ")
                fields.setdefault(key, value)
        except OSError:
            continue
        if "Name" in fields and "Version" in fields:
            key = ("pip", fields["Name"].lower())
            if ("conda", fields["Name"].lower()) not in found:
                found[key] = Package(name=fields["Name"], version=fields["Version"])
    return list(found.values())


def python_info(root: Path) -> dict | None:
    cfg = root / "pyvenv.cfg"
    if cfg.is_file():
        values = {}
        for line in cfg.read_text(errors="replace").splitlines():
            key, eq, value = line.partition("=")
            if eq:
                values[key.strip()] = value.strip()
        version = values.get("version_info") or values.get("version")
        home = values.get("home")
        return {"version": version, "implementation": "cpython", "executable": f"{home}/python3" if home else None}
    for meta in (root / "conda-meta").glob("python-3*.json"):
        try:
            return {"version": json.loads(meta.read_text())["version"], "implementation": "cpython",
                    "executable": "bin/python"}  # fmt: skip
        except (OSError, ValueError, KeyError):
            continue
    return None


# ------------------------------------------------------------------ after publishing


def update(ctx: BuildContext, change: object) -> BuildResult:
    """A wrapped tree is packed as it is: there is nothing to change in place."""
    raise UsageError("`wrap` installs cannot be updated",
                     "wrap the changed tree again with `sqenv wrap SOURCE --prefix PREFIX --force`")  # fmt: skip
