"""Are an install's image files there and intact?

The files checked are the ones launches really open: the layers the launcher
names (read with the shared header parser, `sqenv.publish.header`) plus the
current version's other images (a wrapped container). Checksums come from the
metadata. `sqenv doctor PREFIX` checks everything; `sqenv info` only that the
files exist (cheap), `info --verify` the checksums too.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from sqenv.errors import SqenvError
from sqenv.pack.squashfs import sha256_of
from sqenv.publish import header, metadata
from sqenv.publish.layout import Install


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


def image_files(install: Install) -> tuple[list[str], dict[str, str]]:
    """(files launches use, known sha256 by file name)."""
    data = metadata.load(install.metadata)
    known = {img["file"]: img.get("sha256", "") for v in data["versions"] for img in v.get("images", [])}
    try:
        files = header.read(install.launcher).layers
    except OSError:
        files = []
    files += [img["file"] for img in metadata.current(data).get("images", []) if img["file"] not in files]
    return files, known


def _fix(install: Install) -> str:
    q = shlex.quote(str(install.prefix))
    return f"roll back to a version with intact images (`sqenv rollback {q}`), or rebuild: `sqenv create --force`"


def image_problems(install: Install, *, checksums: bool = True) -> list[Problem]:
    """What is wrong with the images launches use (empty when all are fine)."""
    try:
        files, known = image_files(install)
    except SqenvError as err:
        return [Problem(err.message, err.hint or "rebuild it with `sqenv create --force`")]
    found = []
    for name in files:
        path = install.image(name)
        if not path.is_file():
            found.append(Problem(f"`{path}` is missing: launches of this install fail", _fix(install)))
        elif checksums and known.get(name) and sha256_of(path) != known[name]:
            found.append(Problem(f"`{path}`: checksum mismatch (the file is damaged or was replaced)", _fix(install)))
    return found + base_image_problems(install, checksums=checksums)


def base_image_problems(install: Install, *, checksums: bool) -> list[Problem]:
    """A layer on a base image (`create --base-image`): the container launches run it in, the
    copy in the install or the referenced one, is there and (checksums) is the one built on."""
    try:
        version = metadata.current(metadata.load(install.metadata))
    except SqenvError:
        return []
    base = version.get("base_image")
    if not base:
        return []
    path = install.prefix / "container.sif" if not base.get("referenced") else None
    path = path or Path(base["path"])
    fix = "put the image built on back, or rebuild the layer on another one (`sqenv create --force`)"
    if not path.is_file():
        return [Problem(f"the base image `{path}` is missing: launches of this install fail", fix)]
    if checksums and base.get("sha256") and sha256_of(path) != base["sha256"]:
        return [Problem(f"the base image `{path}`: checksum mismatch (not the image the layer was built on)", fix)]
    return []
