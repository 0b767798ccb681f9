"""The `sqenv-enter` helper shipped in this package.

The helper is compiled (statically) when sqenv is built or installed
(`setup.py`), never at `sqenv create`: users need no compiler, and the binary
runs on compute nodes whose glibc differs from the login node's. It is copied
into every install, so an install keeps working when sqenv itself is gone or
upgraded.
"""

from __future__ import annotations

import hashlib
import os
import struct
from importlib import resources
from pathlib import Path

from sqenv.errors import ToolMissing

_REINSTALL = "reinstall sqenv (`pip install .` builds it; that needs a C compiler and static libc, once)"


def enter_binary() -> Path:
    """Path of the `sqenv-enter` binary built with this sqenv (from this source)."""
    here = resources.files(__package__)
    path = Path(str(here.joinpath("sqenv-enter")))
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolMissing(f"this sqenv has no `sqenv-enter` helper (`{path}` is missing)", _REINSTALL)
    stamp = path.with_name("sqenv-enter.sha256")
    sources = [here.joinpath(name) for name in ("enter.c", "serve.c", "cpu.h", "launch.h")]
    if all(source.is_file() for source in sources):  # a checkout whose helper source changed since it was built
        h = hashlib.sha256()
        for source in sources:
            h.update(source.read_bytes())
        if not stamp.is_file() or stamp.read_text().strip() != h.hexdigest():
            raise ToolMissing(f"the `sqenv-enter` helper at `{path}` is older than its source", _REINSTALL)
    return path


def is_static(path: Path) -> bool:
    """No ELF interpreter (PT_INTERP): runs whatever the node's glibc is."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
        return False
    endian = "<" if head[5] == 1 else ">"
    phoff, phentsize, phnum = (struct.unpack_from(endian + "Q", head, 0x20)[0],
                               *struct.unpack_from(endian + "HH", head, 0x36))  # fmt: skip
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(head):
            break
        if struct.unpack_from(endian + "I", head, off)[0] == 3:  # PT_INTERP
            return False
    return True


def describe() -> str:
    """What the helper is, for `sqenv doctor`."""
    path = enter_binary()
    kind = "static" if is_static(path) else "dynamically linked: may fail on nodes with an older glibc"
    return f"`{path}` ({kind}, {path.stat().st_size // 1024} KiB)"
