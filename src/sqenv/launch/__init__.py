"""Launch: the files that run programs from an install (the hot path).

`launcher.sh` is the POSIX sh body every `PREFIX/bin/NAME` symlink runs;
`enter.c` is the small helper that enters the private mount namespace and
execs the program without a fork. Neither starts Python.
"""

from __future__ import annotations

from importlib import resources

MOUNT_PATH = "/mnt/sqenv"
"""Where the image appears inside the namespace, on every node, for every prefix."""

IMAGE_MARKER = ".sqenv-image"
"""A file in every image's root: opened by launchers to check and pin the mount."""


def template(name: str) -> str:
    """Text of a file shipped in this package."""
    return resources.files(__package__).joinpath(name).read_text()
