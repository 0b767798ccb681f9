"""mksquashfs, run once over the staged tree.

zstd level 3 is the default: measured here it packs a 295 MB venv in 1.4 s to
90 MB, where zstd's own default (15) takes 14 s and gzip 15 s for a few
percent less. Files are stored as root-owned, so no builder's uid leaks into
shared installs.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqenv.errors import PackError
from sqenv.launch import IMAGE_MARKER
from sqenv.pack.reproducible import mksquashfs_args, retime_one
from sqenv.tools.diagnose import classify_mksquashfs
from sqenv.tools.progress import PackProgress
from sqenv.tools.run import run
from sqenv.ui import UI

LEVELS = {"zstd": 3, "gzip": 6, "xz": None, "lz4": None}


@dataclass(frozen=True)
class Image:
    """A finished image file and what it holds."""

    path: Path
    sha256: str
    size: int
    installed_size: int
    files_inside: int

    @property
    def id(self) -> str:
        return self.sha256[:16]

    def record(self, name: str) -> dict:
        """How the metadata describes this image as the file `name` of an install."""
        return {"file": name, "sha256": self.sha256, "size": self.size, "installed_size": self.installed_size,
                "files_inside": self.files_inside, "readable": True}  # fmt: skip


def tree_stats(root: Path, epoch: int | None = None) -> tuple[int, int]:
    """Bytes and number of entries (files, dirs, links) under root; with `epoch`, every valid pyc
    met on the way gets it (`sqenv.pack.reproducible.retime_one`): one walk of the tree, not two."""
    size = count = 0
    stack = [str(root)]
    while stack:
        where = stack.pop()
        try:
            entries = list(os.scandir(where))
        except OSError:
            continue
        count += len(entries)
        stamp = epoch if where.endswith("__pycache__") else None
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                if stamp is not None and entry.name.endswith(".pyc") and not entry.is_symlink():
                    retime_one(Path(entry.path), stamp)
                size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                pass
    return size, count


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pack(
    ui: UI,
    staging: Path,
    output: Path,
    *,
    compression: str = "zstd",
    level: int | None = None,
    jobs: int | None = None,
    log: Path,
    epoch: int | None = None,
    enter: Sequence[str] = (),
    read: Callable[[], None] | None = None,
) -> Image:
    """Write the image of `staging` to `output` (which must not exist): the one mksquashfs call of
    create, update and compact, so all get the same modes, compression and memory cap.

    `epoch`: store every time as this one, for byte-identical images of the same packages
    (`sqenv.pack.reproducible`); the marker's content is fixed, so the image ID is its content's.
    `enter`: the helper and its mounts (`BuildContext.run`) under which `staging` names a merged tree
    of layers that only exists in that namespace (update, compact); the caller then provides the
    marker as a layer of its own, and the sizes come from mksquashfs's summary.
    `read`: called once mksquashfs is done with `staging` (before the checksum of the image)."""
    if not enter:
        (staging / IMAGE_MARKER).write_text("sqenv image\n" if epoch is not None else uuid.uuid4().hex + "\n")
    installed, count = tree_stats(staging, epoch) if not enter else (0, 0)
    argv = [
        *enter,
        "mksquashfs",
        str(staging),
        str(output),
        "-noappend",
        "-all-root",
        # Everyone may read everything: images are shared by groups, and the
        # overlay of an updated install checks modes (a bind mount does not).
        "-action",
        "chmod(a+rX)@true",
        "-comp",
        compression,
        "-processors",
        str(jobs or os.cpu_count() or 1),
        # Bounded, whatever the image size (mksquashfs's own default grew to
        # 450 MB here for a 400 MB tree; 256 MB packs as fast).
        "-mem",
        "256M",
    ]
    # an overlay's root keeps the mode of the upper directory, which may be private
    argv += ["-root-mode", "755"] if enter else []
    if epoch is not None:
        argv += mksquashfs_args(epoch)
    level = level if level is not None else LEVELS.get(compression)
    if level is not None:
        argv += ["-Xcompression-level", str(level)]
    # its progress bar (drawn into the pipe too) feeds the live display on a terminal; off one, no bar
    argv += [] if ui.fancy else ["-no-progress"]
    what = f"{count:,} files ({installed / 1e6:,.0f} MB)" if not enter else "the whole environment"
    with ui.phase(f"Packing {what} into one {compression} image"):
        try:
            out = run(ui, argv, log=log, error=PackError, what="mksquashfs", progress=PackProgress(),
                      classify=classify_mksquashfs)  # fmt: skip
        except PackError as err:
            if "No space left" in (err.details or "") or err.message.startswith("no space left"):
                raise PackError(
                    f"no space left to write the image next to `{output.parent}`",
                    "free space on that file system, then retry",
                    err.details,
                ) from None
            raise
    if read is not None:
        read()
    if enter:
        installed, count = summary_stats(out)
    return Image(
        path=output, sha256=sha256_of(output), size=output.stat().st_size, installed_size=installed, files_inside=count
    )


def summary_stats(out: str) -> tuple[int, int]:
    """Bytes and entries (the root not counted, as `tree_stats`) from mksquashfs's closing summary."""
    size = re.search(r"uncompressed filesystem size \(([\d.]+) Kbytes\)", out)
    inodes = re.search(r"Number of inodes (\d+)", out)
    return (int(float(size.group(1)) * 1024) if size else 0, int(inodes.group(1)) - 1 if inodes else 0)
