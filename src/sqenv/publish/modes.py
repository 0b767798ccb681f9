"""Modes and group of the files and directories sqenv writes into a prefix.

Installs are often shared by a project's group: new entries take the umask's
permissions (0007, 0027 and 0022 all give a usable result), never world
write whatever the umask (000 included), and the prefix's group when they
would otherwise get another. Directories follow the same policy as files and
keep a setgid bit they inherited (that is what keeps group-shared installs
in their group).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode(executable: bool = False) -> int:
    """What a new file should get under the current umask, without world write."""
    return (0o777 if executable else 0o666) & ~_umask() & ~0o002


def dir_mode() -> int:
    """What a new directory should get under the current umask, without world write."""
    return 0o777 & ~_umask() & ~0o002


def fix_dir(path: Path) -> None:
    """Give a directory sqenv made the policy's mode (its inherited setgid bit kept)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return
    os.chmod(path, (st.st_mode & stat.S_ISGID) | dir_mode())


def make_dir(path: Path, exist_ok: bool = False) -> None:
    """mkdir with the policy's mode, whatever the umask."""
    try:
        path.mkdir()
    except FileExistsError:
        if not exist_ok:
            raise
        return
    fix_dir(path)


@contextlib.contextmanager
def shared_umask() -> Iterator[int]:
    """The caller's umask, but never creating world-writable files (tools sqenv runs included)."""
    old = os.umask(0o002)
    os.umask(old | 0o002)
    try:
        yield old | 0o002
    finally:
        os.umask(old)


def adopt(prefix: Path, path: Path, executable: bool = False) -> None:
    """Give a new file in `prefix` the umask's mode and the prefix's group (when we may)."""
    os.chmod(path, file_mode(executable))
    gid = prefix.stat().st_gid
    if path.stat().st_gid != gid:
        with contextlib.suppress(OSError):
            os.chown(path, -1, gid)
