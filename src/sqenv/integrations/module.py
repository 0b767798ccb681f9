"""Module files for an install: `sqenv module PREFIX [--dir DIR] [--name NAME/VERSION] [--format lua|tcl]`.

Admins publish environments as modules. The module prepends `PREFIX/bin` to
PATH and sets what `PREFIX/bin/activate` sets for the install's kind
(`VIRTUAL_ENV` or `CONDA_PREFIX` ...; see `sqenv.publish.activation`), so
`module load NAME; python` is the environment, and `module unload` undoes it.
`whatis`/`help` list the environment's main packages. Lua for Lmod, Tcl for
Environment Modules (which Lmod reads too). Templates are the package's
`integrations/templates/module.{lua,tcl}`; every value is quoted for its language.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqenv import __version__
from sqenv.errors import PrefixError, UsageError
from sqenv.integrations import current_version, main_packages
from sqenv.publish.activation import variables
from sqenv.publish.layout import Install

MARKER = "Written by sqenv"
_NAME = re.compile(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)?")


def lua_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def tcl_quote(value: str) -> str:
    escaped = re.sub(r'([\\$\[\]"{}])', r"\\\1", value).replace("\n", "\\n")
    return f'"{escaped}"'


def default_dir() -> Path:
    return Path.home() / "modulefiles"


def render(install: Install, name: str, fmt: str) -> str:
    data, version = current_version(install)
    quote = lua_quote if fmt == "lua" else tcl_quote
    packages = main_packages(version)
    whatis = f"{data['kind']} environment packed by sqenv: {', '.join(packages)}"
    help_text = (
        f"Python environment at {install.prefix} ({data['kind']}, one image + launchers, made by sqenv).\n"
        f"Loading it puts {install.prefix}/bin first on PATH: python, pip list, console scripts.\n"
        f"Main packages: {', '.join(packages)}.\n"
        f"All packages: sqenv info {install.prefix}"
    )
    if fmt == "lua":
        sets = [f"setenv({lua_quote(k)}, {lua_quote(v)})" for k, v in variables(install.prefix, data["kind"]) if v]
    else:
        sets = [f"setenv {k} {tcl_quote(v)}" for k, v in variables(install.prefix, data["kind"]) if v]
    values = {
        "@MARKER@": f"{MARKER} {__version__} for {install.prefix}".replace("\n", " "),
        "@NAME@": quote(f"Name: {name}"),
        "@WHATIS@": quote(whatis),
        "@HELP@": quote(help_text),
        "@BIN@": quote(str(install.prefix / "bin")),
        "@SETENV@": "\n".join(sets),
    }
    text = resources.files("sqenv.integrations").joinpath("templates", f"module.{fmt}").read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def _not_writable(target: Path, where: Path) -> PrefixError:
    return PrefixError(
        f"cannot write the module file `{target}`: `{where}` is not writable for you",
        "name a directory you own with `--dir DIR` (then `module use DIR`)",
    )


@dataclass(frozen=True)
class Written:
    path: Path
    directory: Path  # for `module use`
    name: str  # for `module load`


def write(prefix: Path, *, directory: Path | None = None, name: str | None = None, fmt: str = "lua") -> Written:
    """Write the module file. Replaces only a module file sqenv wrote."""
    install = Install.open(prefix)
    if fmt not in ("lua", "tcl"):
        raise UsageError(f"`{fmt}` is not a module file format", "use `--format lua` (Lmod) or `--format tcl`")
    name = name or re.sub(r"[^A-Za-z0-9_.+-]+", "-", install.prefix.name)
    if not _NAME.fullmatch(name):
        raise UsageError(f"`{name}` cannot be a module name", "use NAME or NAME/VERSION, e.g. `--name myenv/1.0`")
    base = (directory or default_dir()).absolute()
    target = base / (name + (".lua" if fmt == "lua" else ""))
    if target.exists() and MARKER not in target.read_text(errors="replace")[:400]:
        raise PrefixError(f"`{target}` exists and was not written by sqenv", "choose another `--name` or `--dir`")
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise _not_writable(target, existing)
    text = render(install, name, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.sqenv-{secrets.token_hex(4)}")
    try:
        tmp.write_text(text)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return Written(target, base, name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
