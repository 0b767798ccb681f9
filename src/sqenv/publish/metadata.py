"""The install's metadata file: inputs, the lock, and the history of versions.

Written atomically (temp file, then rename), versioned by `format`, so a
crash never leaves a half-written file and later sqenv versions can migrate.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from sqenv.errors import PrefixError

FORMAT = 1


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PrefixError(f"`{path.parent}` is not a sqenv install (no {path.name})") from None
    except (OSError, ValueError) as exc:
        raise PrefixError(f"cannot read `{path}`: {exc}", "the install's metadata is damaged") from None
    if data.get("format", 0) > FORMAT:
        raise PrefixError(
            f"`{path.parent}` was made by a newer sqenv (format {data['format']})", "upgrade sqenv to work with it"
        )
    return data


def save(path: Path, data: dict, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".sqenv.json.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current(data: dict) -> dict:
    """The version record new launches use."""
    number = data["current"]
    for version in data["versions"]:
        if version["number"] == number:
            return version
    raise PrefixError(f"the metadata names version {number}, which it does not hold")
