"""The directories above a new PREFIX: made like conda, uv and venv do, or a clear refusal.

`sqenv create ~/envs/sci` when `~/envs` does not exist creates it (`mkdir -p`),
as the other tools do. Where the user cannot create it (`/opt/envs/x`), a hint
like "mkdir -p /opt/envs" is useless: the message says the location is not
writable for them and suggests their own directories. If the create then
fails, the directories made here are removed again (only those, only if
still empty): nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from sqenv.errors import PrefixError


def _suggestion(prefix: Path) -> str:
    for var in ("PROJECT", "SCRATCH"):
        if os.environ.get(var) and os.path.isdir(os.environ[var]):
            return shlex.quote(os.path.join(os.environ[var], "envs", prefix.name))
    return shlex.quote(str(Path.home() / "envs" / prefix.name))


def not_writable(prefix: Path, where: Path) -> PrefixError:
    return PrefixError(
        f"cannot create `{prefix}`: `{where}` is not writable for you",
        f"choose a prefix in your project or home directory, e.g. `sqenv create {_suggestion(prefix)} ...`",
    )


def missing(prefix: Path) -> list[Path]:
    """The directories above `prefix` that do not exist yet (outermost first); checks the one that does."""
    todo: list[Path] = []
    parent = prefix.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        todo.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise PrefixError(f"cannot create `{prefix}`: `{parent}` is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise not_writable(prefix, parent)
    return list(reversed(todo))


@contextlib.contextmanager
def parent_dirs(prefix: Path) -> Iterator[list[Path]]:
    """Make the missing directories above `prefix`; remove them again if the block fails."""
    made: list[Path] = []
    try:
        for directory in missing(prefix):
            try:
                directory.mkdir()
            except OSError as exc:
                raise PrefixError(f"cannot create `{directory}`: {exc.strerror}") from None
            made.append(directory)
        yield made
    except BaseException:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
