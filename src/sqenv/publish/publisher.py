"""Atomic publication of a new install.

Everything is written into a hidden sibling directory of PREFIX (same file
system, so the image is written once and never copied), then renamed into
place. Until that rename PREFIX is untouched; on any failure, Ctrl-C or
SIGTERM the sibling is removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from sqenv.errors import PrefixError


def remove_tree(path: Path) -> None:
    """rm -rf that also removes trees with read-only or mode-000 directories
    (installed packages have some; so does overlayfs's work directory)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):  # top-down: each directory is opened after its chmod
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
    shutil.rmtree(path)


def check_prefix(prefix: Path, force: bool) -> None:
    """Fail early, before any build, when PREFIX cannot be published to."""
    if prefix.is_symlink() or prefix.is_file():
        raise PrefixError(f"`{prefix}` exists and is not a directory")
    if prefix.is_dir() and any(prefix.iterdir()) and not force:
        raise PrefixError(
            f"`{prefix}` exists and is not empty", "choose another prefix, or pass `--force` to replace it"
        )
    parent = prefix.parent
    if not parent.is_dir():
        raise PrefixError(f"the parent directory `{parent}` does not exist", f"create it first: `mkdir -p {parent}`")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PrefixError(
            f"cannot write to `{parent}` (permission denied)", "choose a prefix in a directory you can write to"
        )


class Publisher:
    """`with Publisher(prefix) as staging_dir: ...; publisher.commit()`."""

    def __init__(self, prefix: Path, force: bool = False) -> None:
        self.prefix = prefix.absolute()
        self.force = force
        check_prefix(self.prefix, force)
        self.tmp = self.prefix.parent / f".{self.prefix.name}.sqenv-new-{secrets.token_hex(4)}"
        self.committed = False

    def __enter__(self) -> Path:
        try:
            self.tmp.mkdir()
        except OSError as exc:
            raise PrefixError(f"cannot create files next to `{self.prefix}`: {exc.strerror}") from None
        return self.tmp

    def commit(self) -> None:
        """Move the finished install into place."""
        old = None
        if self.prefix.exists():
            if any(self.prefix.iterdir()):
                old = self.prefix.parent / f".{self.prefix.name}.sqenv-old-{secrets.token_hex(4)}"
                os.rename(self.prefix, old)
            else:
                self.prefix.rmdir()
        os.rename(self.tmp, self.prefix)
        self.committed = True
        if old is not None:
            remove_tree(old)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self.committed:
            remove_tree(self.tmp)
