"""One writer per prefix: create, update, rollback and compact all take this lock.

Two flocks, always in this order:

1. `.NAME.sqenv-lock` next to PREFIX: exists while a command holds it, so a
   create of a prefix that does not exist yet has something to lock. It is
   opened without following symlinks and without blocking on a FIFO, must be
   a regular file, and is unlinked by its holder before release; a waiter
   re-checks after locking that the path still names the file it locked
   (the classic unlink-safe lock-file protocol). Where the parent is not
   writable (a group-shared prefix under an admin's directory) it is skipped:
   then nobody can create or replace PREFIX there anyway.
2. PREFIX itself when it exists (the lock older sqenv versions take), again
   re-checked against the path, since `create --force` swaps the directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from sqenv.errors import PrefixError
from sqenv.publish.modes import file_mode

_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class Busy(PrefixError):
    """Another sqenv holds the prefix and we were told not to wait."""


def lock_path(prefix: Path) -> Path:
    return prefix.parent / f".{prefix.name}.sqenv-lock"


def _same(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _flock(fd: int, wait: bool, on_wait) -> bool:
    """Lock `fd`; False when the file system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        on_wait()
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise
        return False
    return True


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _foreign(path: Path, st: os.stat_result) -> PrefixError | None:
    """A lock file we must not wait on: another user's, unless it belongs to the group that shares
    this place (a setgid project directory gives it that group). In a world-writable sticky
    directory anyone could plant one and block us forever."""
    if st.st_uid == os.getuid():
        return None
    parent = os.stat(path.parent)
    shared = st.st_gid == parent.st_gid and parent.st_mode & 0o020 and parent.st_gid in os.getgroups()
    if shared and not parent.st_mode & 0o002:
        return None
    return PrefixError(
        f"the lock file `{path}` belongs to {_owner(st.st_uid)}, not to you or this directory's group: "
        "sqenv will not wait on it",
        f"ask its owner to remove `{path}`, or choose a prefix in a directory others cannot write to",
    )


def _open_lock_file(path: Path) -> int | None:
    """The lock file's descriptor; None when the parent directory is not ours to write."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, file_mode())
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            try:
                st = os.lstat(path)
            except OSError:
                return None  # the parent is not ours to write: nobody can create or replace PREFIX here
            raise _foreign(path, st) or PrefixError(
                f"cannot open the lock file `{path}`: {exc.strerror}", f"remove `{path}`, then retry"
            ) from None
        what = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise PrefixError(
            f"cannot use the lock file `{path}`: {what}", f"sqenv did not make it: remove `{path}`"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PrefixError(f"`{path}` is not a regular file; sqenv did not make it", f"remove `{path}`, then retry")
    problem = _foreign(path, st)
    if problem:
        os.close(fd)
        raise problem
    return fd


@contextlib.contextmanager
def prefix_lock(prefix: Path, *, wait: bool, doing: str = "changing", on_wait=None) -> Iterator[None]:
    """Hold the prefix's lock. `wait=False`: fail at once with "another sqenv is DOING PREFIX"."""
    prefix = prefix.absolute()

    def busy() -> None:
        if not wait:
            raise Busy(f"another sqenv is {doing} {prefix}", "wait until it has finished, then retry")
        if on_wait is not None:
            on_wait()

    path = lock_path(prefix)
    fds: list[int] = []
    lock_fd: int | None = None
    held = False  # only the holder may unlink the lock file
    try:
        while True:
            lock_fd = _open_lock_file(path)
            if lock_fd is None:
                break
            fds.append(lock_fd)
            if not _flock(lock_fd, wait, busy) or _same(lock_fd, path):
                held = True
                break
            fds.pop()
            os.close(lock_fd)  # its holder unlinked it meanwhile: lock the new one
            lock_fd = None
        while True:
            try:
                fd = os.open(prefix, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                break
            except OSError as exc:
                raise PrefixError(f"cannot open `{prefix}`: {exc.strerror}") from None
            fds.append(fd)
            if not _flock(fd, wait, busy) or _same(fd, prefix):
                break
            fds.pop()
            os.close(fd)  # replaced meanwhile (create --force): lock the new directory
        yield
    finally:
        if held and lock_fd is not None and _same(lock_fd, path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for fd in reversed(fds):
            os.close(fd)
