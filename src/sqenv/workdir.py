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


def log_file(what: str, keep: int = 20) -> Path:
    """A new log file for one run, in the user's cache; the oldest beyond `keep` are removed."""
    import time

    from sqenv.launch.helper import cache_dir

    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-keep]:
        old.unlink(missing_ok=True)
    return logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{what}-{os.getpid()}.log"
