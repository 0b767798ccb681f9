"""Byte-identical images from the same packages: fixed times, valid byte code.

Two builds of one lock give the same files, but not the same times: the files
are extracted, linked and compiled at different moments. mksquashfs (4.5.1 on
Debian 12, reproducible by default: sorted entries, no build-host data) then
stores every time as one fixed epoch (`-all-time`, `-mkfs-time`), so the
image only depends on the contents.

That alone would make every `.pyc` stale: a timestamp-based pyc names its
source's mtime, and Python would recompile each module in memory on every
import from the read-only image. So before packing, each pyc whose header
matches its source (the pyc is valid now) gets the epoch in its header; in
the image both then say the epoch and the pyc stays valid. Only the 4-byte
field changes; a pyc hard-linked into a package cache is replaced by a copy
first, never written through.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

DEFAULT_EPOCH = 315532800
"""1980-01-01 UTC, the ZIP epoch (wheels and zip files cannot hold older times)."""


def epoch(env: dict[str, str] | None = None) -> int:
    """SOURCE_DATE_EPOCH when set (reproducible-builds.org), else DEFAULT_EPOCH."""
    value = (os.environ if env is None else env).get("SOURCE_DATE_EPOCH", "")
    try:
        found = int(value)
    except ValueError:
        return DEFAULT_EPOCH
    return found if 0 <= found < 2**32 else DEFAULT_EPOCH


def mksquashfs_args(when: int) -> list[str]:
    """Every inode time and the file system's own time: `when`."""
    return ["-all-time", str(when), "-mkfs-time", str(when)]


def _source_of(pyc: Path) -> Path | None:
    """`pkg/__pycache__/mod.cpython-311.pyc` -> `pkg/mod.py` (None for a sourceless pyc)."""
    if pyc.parent.name != "__pycache__":
        return None
    stem = pyc.name.split(".", 1)[0]
    return pyc.parent.parent / f"{stem}.py"


def retime_one(pyc: Path, when: int) -> bool:
    """Give a valid timestamp-based pyc in a `__pycache__` the source time `when` (the pack step's
    walk of the tree calls it for each: `sqenv.pack.squashfs.tree_stats`); whether it changed."""
    stamp = struct.pack("<I", when & 0xFFFFFFFF)
    source = _source_of(pyc)
    try:
        if source is None or pyc.is_symlink():
            return False
        with pyc.open("rb") as fh:
            head = fh.read(16)
        if len(head) < 16 or struct.unpack("<I", head[4:8])[0] != 0:
            return False  # hash-based pycs name no time
        if head[8:12] == stamp:
            return False  # stamped already (the byte-code step does it): the source is not looked at
        st = source.stat()
        mtime, size = struct.unpack("<II", head[8:16])
        if mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF:
            return False  # already stale: left as it is
        _write_stamp(pyc, stamp)
        return True
    except OSError:
        return False


def _write_stamp(pyc: Path, stamp: bytes) -> None:
    st = pyc.stat()
    if st.st_nlink > 1 or not os.access(pyc, os.W_OK):  # shared with a package cache: a copy, never through it
        data = bytearray(pyc.read_bytes())
        data[8:12] = stamp
        tmp = pyc.with_name(f".{pyc.name}.sqenv-tmp")
        tmp.write_bytes(bytes(data))
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, pyc)
        return
    with pyc.open("r+b") as fh:
        fh.seek(8)
        fh.write(stamp)
