"""The private build directory: chosen by the user, removed whatever happens.

A build directory `sqenv-build-XXXXXXXX` is held for its whole life by an
flock on the directory itself, and holds a file `.sqenv-owner` (pid, start)
written once that lock is held. A run killed by SIGKILL cannot remove its
tree; the next build sweeps such trees: our own (owner), real directories
(no symlink), with the owner file, whose lock nobody holds — no live sqenv
process uses them. Anything else at those names is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqenv.errors import InputError
from sqenv.publish.publisher import remove_tree

PREFIX = "sqenv-build-"
OWNER = ".sqenv-owner"


def base_dir(requested: Path | None) -> Path:
    """--build-dir > SQENV_BUILD_DIR > $TMPDIR > /tmp."""
    chosen = requested or os.environ.get("SQENV_BUILD_DIR") or tempfile.gettempdir()
    return Path(chosen)


def _hold(path: Path) -> int:
    """Open a directory without following symlinks and lock it (blocking only when told)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def sweep(base: Path) -> list[str]:
    """Remove the build trees of dead sqenv runs of this user in `base`."""
    removed = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = base / name
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd = _hold(path)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live sqenv holds it (or no locks here: never guess)
            owner = os.stat(OWNER, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISREG(owner.st_mode) and owner.st_uid == os.getuid():
                remove_tree(path)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _unsafe(path: Path) -> str | None:
    """Why another user could swap or rename what sqenv builds under `path`, if they could.

    The build tree is used by path (uv, the namespace helper, mksquashfs): a
    directory that another user may write to without the sticky bit lets them
    rename our tree and put theirs in its place (code in the victim's image).
    So: `path` must be ours, or root's and sticky or closed to others (like
    /tmp); no directory above it may be world-writable without the sticky bit.
    Group-writable parents (a project's directory) are trusted like the group."""
    me = os.getuid()
    for i, where in enumerate([path, *path.parents]):
        st = os.stat(where)
        sticky = st.st_mode & stat.S_ISVTX
        if st.st_mode & 0o002 and not sticky:
            return f"`{where}` is writable by every user"
        if i == 0 and st.st_uid not in (me, 0):
            return f"it belongs to another user (uid {st.st_uid})"
        if i == 0 and st.st_uid == 0 != me and st.st_mode & 0o022 and not sticky:
            # (root's: its group is not the user's. When we are uid 0 ourselves, as in the
            # update's own user namespace, it is our own directory: its group is trusted)
            return "others may write to it"
    return None


def safe_base(requested: Path | None) -> Path:
    """The build directory (made if missing, 0700), resolved and checked (`_unsafe`): what create
    and update build under."""
    base = base_dir(requested)
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = Path(os.path.realpath(base))
        problem = _unsafe(base)
    except OSError as exc:
        raise InputError(
            f"cannot use the build directory `{base}`: {exc.strerror}",
            "pass `--build-dir DIR` or set SQENV_BUILD_DIR to a writable directory",
        ) from None
    if problem:
        raise InputError(
            f"the build directory `{base}` is not safe to build in: {problem}",
            "pass `--build-dir DIR` (or set SQENV_BUILD_DIR) to a directory of yours that others cannot write to",
        )
    return base


def check_cache_dir(path: Path, what: str, hint: str) -> Path:
    """A directory sqenv takes packages from (uv's cache, conda's package cache): made 0700 if
    missing; else it must pass `_unsafe` like the build directory and be the user's own (a cache
    another user planted or can write to is their code in the image: a symlink to /tmp, root's
    and sticky, would let every user write entries)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        real = Path(os.path.realpath(path))
        problem = _unsafe(real)
        owner = os.stat(real).st_uid
        if not problem and owner != os.geteuid():  # root's too: a symlink to /tmp (sticky, root's) is not yours
            problem = f"it belongs to another user (uid {owner})"
    except OSError as exc:
        raise InputError(f"cannot use {what} `{path}`: {exc.strerror}", hint) from None
    if problem:
        raise InputError(f"{what} `{path}` is not safe to use: {problem}", hint)
    return real


def private_dir(path: Path, what: str, hint: str) -> Path:
    """`path` made (0700) if missing, and only if nobody else can put anything in it: the
    directory itself, not a symlink, yours and writable by you alone; every directory above it
    yours or root's, and sticky where every user may write to it (so nobody can rename it away
    and put theirs in its place; group-writable ones are trusted like the group, as for the
    build directory: `_unsafe`). Its resolved path."""
    me = os.geteuid()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent = Path(os.path.realpath(path.parent))
        real = parent / path.name
        st = os.lstat(real)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            problem = "it is a symbolic link or not a directory"
        elif st.st_uid != me:
            problem = f"it belongs to another user (uid {st.st_uid})"
        elif st.st_mode & 0o022:
            problem = "others may write to it"
        else:
            problem = None
            for above in [parent, *parent.parents]:
                up = os.stat(above)
                if up.st_uid not in (me, 0):
                    problem = f"`{above}` belongs to another user (uid {up.st_uid})"
                elif up.st_mode & 0o002 and not up.st_mode & stat.S_ISVTX:
                    problem = f"every user may rename what is in `{above}`"
                if problem:
                    break
    except OSError as exc:
        raise InputError(f"cannot use {what} `{path}`: {exc.strerror}", hint) from None
    if problem:
        raise InputError(f"{what} `{path}` is not safe to use: {problem}", hint)
    return real


_removing: list[threading.Thread] = []
"""Trees of the build directory being removed in the background (`discard`)."""


def _remove_quietly(tree: Path) -> None:
    """What fails here is tried again by `workdir`'s own removal, which reports it."""
    with contextlib.suppress(OSError):
        remove_tree(tree)


def discard(tree: Path) -> None:
    """Remove a finished tree of the build directory in the background (the staged environment once
    packed: its thousands of unlinks overlap the image's checksum and the publishing); `workdir`
    waits for it before it removes the rest, so the directory is gone when the command returns."""
    thread = threading.Thread(target=_remove_quietly, args=(tree,), name=f"discard {tree.name}")
    thread.start()
    _removing.append(thread)


@contextlib.contextmanager
def workdir(requested: Path | None) -> Iterator[Path]:
    base = safe_base(requested)
    try:
        sweep(base)
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    except OSError as exc:
        raise InputError(
            f"cannot use the build directory `{base}`: {exc.strerror}",
            "pass `--build-dir DIR` or set SQENV_BUILD_DIR to a writable directory",
        ) from None
    fd = _hold(path)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new and ours: nobody else can hold it
        owner = os.open(path / OWNER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.write(owner, f"{os.getpid()} {time.time():.0f}\n".encode())
        os.close(owner)
        yield path
    finally:
        try:
            while _removing:
                _removing.pop().join()
            remove_tree(path)
        finally:
            os.close(fd)


def log_file(what: str, keep: int = 20) -> Path:
    """A new log file for one run, in the user's cache; the oldest beyond `keep` are removed."""
    from sqenv.config import cache_dir

    logs = cache_dir() / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        for old in sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-keep]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        hint = "set SQENV_CACHE_DIR to a directory of yours (or `cache_dir` in the config)"
        raise InputError(f"cannot write sqenv's logs in `{logs}`: {exc.strerror}", hint) from None
    return logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{what}-{os.getpid()}.log"
