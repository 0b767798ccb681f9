"""Read the lock and SBOM back out of an image: a SIF (`sqenv export --sif`) or a squashfs (`vN-ID.sqfs`).

A SIF is a header, a table of descriptors and the data objects they point at
(github.com/apptainer/sif, format "01"). `sqenv export --sif` adds the SBOM
as an SBOM object (type 0x4009) and the lock as a generic JSON object named
`sqenv-lock.json`; both are read here directly, without apptainer. Any other
SIF, or a squashfs, is read with `unsquashfs -cat` (at the partition's
offset): the files at the fixed paths every sqenv image has.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqenv.errors import InputError, ToolMissing
from sqenv.export.provenance import LOCK_PATH, SBOM_PATH
from sqenv.launch import MOUNT_PATH

MAGIC = b"SIF_MAGIC\0"
LOCK_OBJECT = "sqenv-lock.json"
SBOM_OBJECT = "sqenv-sbom.cdx.json"
DATA_GENERIC_JSON = 0x4006
DATA_PARTITION = 0x4004
DATA_SBOM = 0x4009
_HEADER = 128
_DESCRIPTOR = 585  # packed: type i32, used u8, id/group/link u32, 7 x i64, name[128], extra[384]


@dataclass(frozen=True)
class Descriptor:
    datatype: int
    offset: int
    size: int
    name: str


def is_sif(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(42)[32:42] == MAGIC
    except OSError:
        return False


def descriptors(path: Path) -> list[Descriptor]:
    """The used data objects of a SIF (InputError if it is not one)."""
    with path.open("rb") as fh:
        head = fh.read(_HEADER)
        if len(head) < _HEADER or head[32:42] != MAGIC:
            raise InputError(f"`{path}` is not a SIF image")
        _ctime, _mtime, _free, total, offset, _length, _doff, _dlen = struct.unpack("<8q", head[64:128])
        fh.seek(offset)
        table = fh.read(total * _DESCRIPTOR)
    found = []
    for i in range(total):
        raw = table[i * _DESCRIPTOR : (i + 1) * _DESCRIPTOR]
        if len(raw) < _DESCRIPTOR:
            break
        datatype, used, _id, _group, _link, start, size = struct.unpack("<i?IIIqq", raw[:33])
        name = raw[73:201].split(b"\0", 1)[0].decode("utf-8", "replace")
        if used:
            found.append(Descriptor(datatype, start, size, name))
    return found


def _object(path: Path, descs: list[Descriptor], datatype: int, name: str | None = None) -> bytes | None:
    for d in descs:
        if d.datatype == datatype and (name is None or d.name == name):
            with path.open("rb") as fh:
                fh.seek(d.offset)
                return fh.read(d.size)
    return None


def _cat(image: Path, inner: str, offset: int = 0) -> bytes | None:
    tool = shutil.which("unsquashfs")
    if tool is None:
        raise ToolMissing("reading an image needs `unsquashfs`", "Debian: `apt-get install squashfs-tools`")
    argv = [tool, *(["-o", str(offset)] if offset else []), "-cat", str(image), inner]
    proc = subprocess.run(argv, capture_output=True, timeout=300)
    return proc.stdout if proc.returncode == 0 and proc.stdout else None


@dataclass(frozen=True)
class Provenance:
    lock: dict
    sbom: dict | None
    where: str  # how they were found (for --json users)


def read(image: Path) -> Provenance:
    """The lock (and SBOM) of a SIF or squashfs image sqenv made; InputError when it holds none."""
    if not image.is_file():
        raise InputError(f"`{image}` is not a file", "name a .sif or .sqfs image, or an install's PREFIX")
    try:
        with image.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise InputError(f"cannot read `{image}`: {exc.strerror}") from None
    if head[32:42] == MAGIC:
        descs = descriptors(image)
        lock = _object(image, descs, DATA_GENERIC_JSON, LOCK_OBJECT)
        sbom = _object(image, descs, DATA_SBOM)
        where = "SIF objects"
        if lock is None:
            part = next((d for d in descs if d.datatype == DATA_PARTITION), None)
            if part is not None:
                lock = _cat(image, f"{MOUNT_PATH}/{LOCK_PATH}", part.offset)
                sbom = sbom or _cat(image, f"{MOUNT_PATH}/{SBOM_PATH}", part.offset)
                where = f"{MOUNT_PATH}/{LOCK_PATH}"
    elif head.startswith(b"hsqs"):
        lock, sbom, where = _cat(image, LOCK_PATH), _cat(image, SBOM_PATH), LOCK_PATH
    else:
        raise InputError(f"`{image}` is neither a SIF nor a squashfs image")
    if lock is None:
        raise InputError(f"`{image}` holds no sqenv lock", "only images made by sqenv (create, export --sif) have one")
    try:
        return Provenance(json.loads(lock), json.loads(sbom) if sbom else None, where)
    except ValueError:
        raise InputError(f"the lock in `{image}` is damaged (not JSON)") from None
