"""The layers of an install as directories: mounted read-only for a build, and what an update wrote.

An update's build directory holds the current layers mounted with
sqenv's image server (which unmounts if sqenv dies, even by SIGKILL), the
overlayfs upper directory that collects the changes, and its work directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqenv.errors import InputError, PackError, PrefixError, ToolMissing
from sqenv.launch import IMAGE_MARKER
from sqenv.launch.helper import enter_binary
from sqenv.publish.layout import Install
from sqenv.publish.publisher import remove_tree
from sqenv.tools.procs import die_with_parent  # SIGTERM: the image server then unmounts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unmount(path: Path) -> None:
    """Detach a mount: directly when we may (root, or root of our own namespace), else via fusermount."""
    if _libc().umount2(os.fsencode(path), 2) == 0:  # MNT_DETACH
        return
    for tool in ("fusermount3", "fusermount"):
        with contextlib.suppress(OSError):
            if subprocess.run([tool, "-u", "-z", str(path)], capture_output=True).returncode == 0:
                return


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


_in_own_namespace = False


def own_namespace() -> None:
    """Non-root: move this process into a user namespace where it is root (mapped to itself), with its own mounts.

    Inside an image every file belongs to root. Mounted here, squashfuse shows
    them as ours, so overlayfs lets a build write over them (copy-up) and read
    them whatever their modes; mounted on the host they would be the real
    root's, and overlayfs would refuse. The namespace ends with this process.
    """
    global _in_own_namespace
    if _in_own_namespace or os.getuid() == 0:
        return
    uid, gid = os.getuid(), os.getgid()
    if _libc().unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
        raise ToolMissing(
            f"cannot create a user namespace: {os.strerror(ctypes.get_errno())}",
            "updates need unprivileged user namespaces; run `sqenv doctor`",
        )
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)
    _libc().mount(None, b"/", None, 0x4000 | 0x80000, None)  # MS_REC | MS_SLAVE: ours stay ours
    _in_own_namespace = True


@contextlib.contextmanager
def update_workdir(base: Path) -> Iterator[Path]:
    """`sqenv-update-HOST-PID-*` in the build directory `base` (checked like create's:
    `workdir.safe_base`); ones of dead updates on this host are swept."""
    stem = f"sqenv-update-{socket.gethostname()}-"
    sweep_update_dirs(base)
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{stem}{os.getpid()}-", dir=base))
    except OSError as exc:
        raise InputError(
            f"cannot use the build directory `{base}`: {exc.strerror}",
            "pass `--build-dir DIR` or set SQENV_BUILD_DIR to a writable directory",
        ) from None
    if any(c in str(path) for c in ":,\\"):
        remove_tree(path)
        raise InputError(f"the build directory `{base}` has `:` or `,` in its path", "choose another `--build-dir`")
    try:
        yield path
    finally:
        _remove_workdir(path)


def sweep_update_dirs(base: Path) -> None:
    """Remove the update directories of dead updates on this host (ours, real directories)."""
    stem = f"sqenv-update-{socket.gethostname()}-"
    with contextlib.suppress(OSError):
        for old in base.glob(stem + "*"):
            pid = old.name[len(stem) :].split("-", 1)[0]
            st = old.lstat()
            if pid.isdigit() and not _alive(int(pid)) and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                _remove_workdir(old)


def _mounted(path: Path) -> bool:
    """A mount point, live or dead (a SIGKILLed server leaves "Transport endpoint is not connected")."""
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return path.is_mount()


def _remove_workdir(path: Path) -> None:
    """Unmount leftover layers; overlayfs leaves a mode-000 `work/work` directory: open it up first."""
    for mnt in path.glob("layers/*"):
        if _mounted(mnt):
            _unmount(mnt)
    for root, dirs, _files in os.walk(path / "overlay-work"):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
    remove_tree(path)


_term_with_parent = functools.partial(die_with_parent, None, signal.SIGTERM)
"""The image servers get SIGTERM when sqenv dies, even by SIGKILL: they then unmount."""


@contextlib.contextmanager
def mounted(install: Install, layers: list[str], work: Path) -> Iterator[list[str]]:
    """Mount each layer read-only in `work/layers`; yield the mount points, top layer first."""
    if not shutil.which("fusermount3"):
        raise ToolMissing("`fusermount3` is not installed", "run `sqenv doctor` (Debian: `apt-get install fuse3`)")
    server = [str(enter_binary()), "--serve", "-f"]  # sqenv's own image server (launch/serve.c), never idles out
    procs: list[tuple[Path, subprocess.Popen]] = []
    try:
        for i, name in enumerate(layers):
            image, mnt = install.image(name), work / "layers" / str(i)
            if not image.is_file():
                raise PrefixError(
                    f"image `{name}` of the current version is missing", "roll back with `sqenv rollback`"
                )
            mnt.mkdir(parents=True)
            with (work / f"mount-{i}.log").open("w") as err:
                proc = subprocess.Popen([*server, str(image), str(mnt)], stdin=subprocess.DEVNULL,
                                        stdout=err, stderr=err, preexec_fn=_term_with_parent)  # fmt: skip
            procs.append((mnt, proc))
            deadline = time.monotonic() + 30
            while not (mnt / IMAGE_MARKER).exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (work / f"mount-{i}.log").read_text(errors="replace").strip()
                    raise PackError(f"cannot mount the image `{name}`: {text or 'the image server failed'}",
                                    "check it with `sqenv info --verify "
                                    f"{shlex.quote(str(install.prefix))}`")  # fmt: skip
                time.sleep(0.005)
        yield [str(mnt) for mnt, _ in reversed(procs)]
    finally:
        for mnt, proc in procs:
            with contextlib.suppress(Exception):
                proc.terminate()  # the server unmounts on SIGTERM
                proc.wait(timeout=10)
            if _mounted(mnt):
                _unmount(mnt)


def changed(upper: Path, lowers: list[str]) -> bool:
    """Does the upper directory hold anything but directories overlayfs merely copied up?

    uv opens the venv's empty `.lock` for writing, which copies it up: drop that copy first."""
    lock = upper / ".lock"
    if lock.is_file() and not lock.is_symlink() and lock.stat().st_size == 0:
        lock.unlink()
    for root, dirs, files in os.walk(upper):
        if files:
            return True
        for name in dirs:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, upper)
            if os.path.islink(path) or b"y" == _xattr(path, "user.overlay.opaque"):
                return True
            if not any(os.path.isdir(os.path.join(lower, rel)) for lower in lowers):
                return True
    return False


_MODE = re.compile(r"([-d])[-r][-w]([-xsS])[-r][-w]([-xsS])([-r])[-w]([-xtT])\s")


def unreadable(image: Path) -> bool:
    """Does the image hold a file others cannot read (or run), or a directory they cannot enter?

    Inside an image everything belongs to root. Through a plain bind (one
    layer) squashfuse checks no modes, but overlayfs does: a layer packed
    with a umask's modes (0027, 0007, or a uv cache filled under one) would
    shut out everyone but root. Read from the image's tables (fast)."""
    proc = subprocess.run(["unsquashfs", "-lls", str(image)], capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        return True
    for line in proc.stdout.splitlines():
        m = _MODE.match(line)
        if m:
            kind, user_x, group_x, other_r, other_x = m.groups()
            runnable = kind == "d" or user_x in "xs" or group_x in "xs"
            if other_r != "r" or (runnable and other_x not in "xt"):
                return True
    return False


def world_readable(upper: Path) -> None:
    """a+rX on what the update wrote, its top directory included (whiteouts and symlinks left alone).

    The image marker is made here too, readable: `pack()` then only rewrites its content."""
    marker = upper / IMAGE_MARKER
    marker.touch()
    os.chmod(marker, 0o644)
    for root, dirs, files in os.walk(upper):
        for path in [root] * (root == str(upper)) + [os.path.join(root, name) for name in dirs + files]:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                extra = 0o555 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o100 else 0o444
                if st.st_mode & extra != extra:
                    os.chmod(path, st.st_mode | extra)


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
