"""Jupyter kernels for an install: `sqenv kernel install PREFIX`, `sqenv kernel remove NAME`.

The kernelspec's argv starts the environment's Python through its launcher
(`PREFIX/bin/python -m ipykernel_launcher -f {connection_file}`): Jupyter,
JupyterLab, VS Code and Open OnDemand start it like any local kernel. The
launcher `exec`s, so the kernel keeps the pid Jupyter started: interrupts
(SIGINT, `interrupt_mode: signal`), restarts and shutdowns reach it directly.
Kernelspecs sqenv wrote carry `metadata.sqenv`; `remove` removes only those.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
from pathlib import Path

from sqenv.errors import PrefixError, UsageError
from sqenv.integrations import current_version, package_versions
from sqenv.publish.layout import Install

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def user_kernels_dir() -> Path:
    """Where `jupyter kernelspec install --user` puts kernels (jupyter_core's rule on Linux)."""
    if os.environ.get("JUPYTER_DATA_DIR"):
        base = Path(os.environ["JUPYTER_DATA_DIR"])
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "jupyter"
    return base / "kernels"


def kernels_dir(sys_prefix: Path | None) -> Path:
    """`DIR/share/jupyter/kernels` for a Jupyter installed in DIR, else the user's own."""
    return sys_prefix.absolute() / "share" / "jupyter" / "kernels" if sys_prefix else user_kernels_dir()


def default_name(prefix: Path) -> str:
    return "sqenv-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", prefix.name).strip("-.").lower() or "env")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"`{name}` cannot be a kernel name", "use letters, digits, `.`, `_` and `-` only, e.g. `--name my-env`"
        )
    return name.lower()


def spec(install: Install, display_name: str) -> dict:
    """The kernel.json of an install (refused when the environment has no ipykernel)."""
    data, version = current_version(install)
    if "ipykernel" not in package_versions(version):
        raise PrefixError(
            f"`{install.prefix}` has no ipykernel, which a Jupyter kernel needs",
            f"add it: `sqenv update {shlex.quote(str(install.prefix))} ipykernel`",
        )
    programs = version.get("programs", [])
    python = next((p for p in ("python", "python3") if p in programs), None)
    if python is None:
        raise PrefixError(f"`{install.prefix}` has no `python` program")
    return {
        "argv": [str(install.prefix / "bin" / python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"sqenv": {"prefix": str(install.prefix), "kind": data["kind"]}, "debugger": True},
    }


def _ours(directory: Path) -> bool:
    try:
        return "sqenv" in json.loads((directory / "kernel.json").read_text()).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return False


def _writable_base(target: Path) -> None:
    """Refuse before writing anything when `target` cannot be made."""
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PrefixError(
            f"cannot write the kernel into `{target}`: `{existing}` is not writable for you",
            "install it for yourself (`--user`, the default) or name a Jupyter you own with `--sys-prefix DIR`",
        )


def install(
    prefix: Path, *, name: str | None = None, display_name: str | None = None, sys_prefix: Path | None = None
) -> Path:
    """Write the kernelspec; returns its directory. Replaces only a kernelspec sqenv wrote."""
    inst = Install.open(prefix)
    name = check_name(name) if name else default_name(inst.prefix)
    kernel = spec(inst, display_name or f"Python ({inst.prefix.name}, sqenv)")
    base = kernels_dir(sys_prefix)
    target = base / name
    if target.exists() and not _ours(target):
        raise PrefixError(
            f"a kernel named `{name}` exists in `{base}` and was not written by sqenv", "choose another `--name`"
        )
    _writable_base(base)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{name}.sqenv-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        (tmp / "kernel.json").write_text(json.dumps(kernel, indent=1) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def remove(name: str, *, sys_prefix: Path | None = None) -> Path:
    """Remove a kernelspec sqenv wrote; returns the directory removed."""
    base = kernels_dir(sys_prefix)
    target = base / check_name(name)
    if not (target / "kernel.json").is_file():
        raise UsageError(f"there is no kernel `{name}` in `{base}`", "see `jupyter kernelspec list`")
    if not _ours(target):
        raise UsageError(f"the kernel `{name}` in `{base}` was not written by sqenv; leaving it alone")
    try:
        shutil.rmtree(target)
    except OSError as exc:
        raise PrefixError(f"cannot remove `{target}`: {exc.strerror}") from None
    return target
