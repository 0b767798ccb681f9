"""Where things live in an install prefix.

    PREFIX/bin/NAME        one symlink per program, all to ../sqenv-enter (../launcher without it)
    PREFIX/launcher        the POSIX sh launcher (names the current image)
    PREFIX/sqenv-enter     the namespace helper; started as bin/NAME it is the launcher's fast path
    PREFIX/sqenv.json      metadata: inputs, lock, history
    PREFIX/vN-ID.sqfs      the image (one per version kept, layers for updates)
    PREFIX/pyvenv.cfg      pip installs: the image's, for editors (see venvcfg.py)
    PREFIX/lib/            pip installs: empty and read-only, so tools write no packages there

That is programs + 5 entries (7 for pip installs) on the parallel file system, whatever the
environment holds inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqenv.errors import PrefixError

LINK_TO_HELPER, LINK_TO_LAUNCHER = "../sqenv-enter", "../launcher"
"""What `PREFIX/bin/NAME` links to: the helper, which starts the program itself in the common case
and runs the shell launcher for the rest (`launch/launch.h`); the launcher where there is no helper
(a wrapped container), where it always needs the shell, and in installs made before."""
PROGRAM_LINKS = (LINK_TO_HELPER, LINK_TO_LAUNCHER)


@dataclass(frozen=True)
class Install:
    prefix: Path

    @property
    def bin(self) -> Path:
        return self.prefix / "bin"

    @property
    def launcher(self) -> Path:
        return self.prefix / "launcher"

    @property
    def enter(self) -> Path:
        return self.prefix / "sqenv-enter"

    @property
    def metadata(self) -> Path:
        return self.prefix / "sqenv.json"

    def image(self, name: str) -> Path:
        return self.prefix / name

    def exists(self) -> bool:
        return self.metadata.is_file() and self.launcher.is_file()

    @classmethod
    def open(cls, prefix: Path) -> Install:
        """An existing install, or a clear error naming what is there instead."""
        install = cls(prefix.absolute())
        if not prefix.exists():
            from sqenv.publish.lock import prefix_lock
            from sqenv.publish.publisher import journal_path, recover

            if journal_path(install.prefix).is_file():  # a create was killed mid-swap: finish it
                with prefix_lock(install.prefix, wait=True):
                    recover(install.prefix)
        try:
            found, complete = prefix.exists(), install.exists()
        except OSError as exc:
            raise PrefixError(f"cannot look into `{prefix}`: {exc.strerror}") from None
        if not found:
            raise PrefixError(f"`{prefix}` does not exist", "create it with `sqenv create PREFIX ...`")
        if not complete:
            raise PrefixError(f"`{prefix}` is not a sqenv install (no sqenv.json and launcher)")
        return install


TEMP_PREFIX = ".sqenv-update-"
"""Temporary files in a prefix start with this; an update or rollback sweeps leftovers."""


def image_name(number: int, image_id: str) -> str:
    return f"v{number}-{image_id}.sqfs"
