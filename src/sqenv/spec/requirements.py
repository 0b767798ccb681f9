"""Checks of pip requirement files and specs before uv sees them.

uv parses requirements itself; this module only makes the common mistakes
fail early with the file and line named: a missing or unreadable file, a line
that is not a requirement, a nested `-r` that does not exist.
"""

from __future__ import annotations

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


def read_file(path: Path) -> str:
    """Read an input file, naming it on failure."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise InputError(f"requirements file `{path}` does not exist", "check the path given to `-r`") from None
    except IsADirectoryError:
        raise InputError(f"`{path}` is a directory, not a requirements file") from None
    except (PermissionError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read requirements file `{path}`: {exc}") from None


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
