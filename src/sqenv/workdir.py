"""The private build directory: chosen by the user, removed whatever happens."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqenv.errors import InputError
from sqenv.publish.publisher import remove_tree


def base_dir(requested: Path | None) -> Path:
    """--build-dir > SQENV_BUILD_DIR > $TMPDIR > /tmp."""
    chosen = requested or os.environ.get("SQENV_BUILD_DIR") or tempfile.gettempdir()
    return Path(chosen)


@contextlib.contextmanager
def workdir(requested: Path | None) -> Iterator[Path]:
    base = base_dir(requested)
    try:
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="sqenv-build-", dir=base))
    except OSError as exc:
        raise InputError(
            f"cannot use the build directory `{base}`: {exc.strerror}",
            "pass `--build-dir DIR` or set SQENV_BUILD_DIR to a writable directory",
        ) from None
    try:
        yield path
    finally:
        remove_tree(path)
