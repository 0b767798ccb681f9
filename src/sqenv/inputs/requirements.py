"""Checks of pip requirement files and specs before uv sees them.

uv parses requirements itself; this module only makes the common mistakes
fail early with the file and line named: a missing or unreadable file, a line
that is not a requirement, a nested `-r` that does not exist.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from sqenv.errors import InputError

# Options a requirements line may carry (pip's own file format).
_OPTIONS = (
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-e",
    "--editable",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--no-index",
    "--pre",
    "--only-binary",
    "--no-binary",
    "--prefer-binary",
    "--trusted-host",
    "--hash",
    "--require-hashes",
)


MAX_INPUT_BYTES = 16 << 20
"""Input files larger than this are refused (a requirements file with hashes for 1,000 packages is ~1 MB)."""

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}  # fmt: skip


def read_input(path: Path, what: str, hint: str | None = None) -> str:
    """Read a user's input file: a regular file, at most MAX_INPUT_BYTES, UTF-8; else one clear error.

    Opened without blocking (a FIFO would wait forever) and read with a bound
    (`/dev/zero` or a huge file would exhaust memory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{what} `{path}` does not exist", hint) from None
    except OSError as exc:
        raise InputError(f"cannot read {what} `{path}`: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise InputError(f"{what} `{path}` is {kind}, not a regular file", "give a path to a regular file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise InputError(f"cannot read {what} `{path}`: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{what} `{path}` is larger than {MAX_INPUT_BYTES >> 20} MB", "is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {what} `{path}`: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_file(path: Path) -> str:
    """Read a requirements file, naming it on failure."""
    return read_input(path, "requirements file", "check the path given to `-r`")


def check_spec(text: str, where: str) -> None:
    """Check one requirement string (`numpy>=1.26`, `pkg @ URL`, a path or URL)."""
    if text.startswith(("./", "/", "../", "file:", "http://", "https://", "git+")):
        return
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        raise InputError(
            f"{where}: `{text}` is not a valid requirement ({exc})", "write it as `name`, `name==1.2` or `name>=1.2,<2`"
        ) from None


def check_file(path: Path, seen: frozenset[Path] = frozenset()) -> None:
    """Check a requirements file and the files it includes with `-r`/`-c`."""
    path = path.resolve()
    if path in seen:
        return
    for number, raw in enumerate(read_file(path).splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if line.startswith("-"):
            option, _, value = line.replace("=", " ", 1).partition(" ")
            if option not in _OPTIONS:
                raise InputError(f"{where}: unknown option `{option}`")
            if option in ("-r", "--requirement", "-c", "--constraint"):
                check_file(path.parent / value.strip(), seen | {path})
            continue
        check_spec(line.split(" --", 1)[0].strip(), where)
