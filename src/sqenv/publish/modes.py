"""Modes and group of the files sqenv writes into a prefix.

Installs are often shared by a project's group: new files take the umask's
permissions (0007, 0027 and 0022 all give a usable result), never world
write, and the prefix's group when they would otherwise get another.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def file_mode(executable: bool = False) -> int:
    """What a new file should get under the current umask, without world write."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if executable else 0o666) & ~mask & ~0o002


def adopt(prefix: Path, path: Path, executable: bool = False) -> None:
    """Give a new file in `prefix` the umask's mode and the prefix's group (when we may)."""
    os.chmod(path, file_mode(executable))
    gid = prefix.stat().st_gid
    if path.stat().st_gid != gid:
        with contextlib.suppress(OSError):
            os.chown(path, -1, gid)
