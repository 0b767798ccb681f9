"""What an install holds (`sqenv info PREFIX`): its current version's record, sizes, and
whether its images are present and intact."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqenv.errors import PrefixError
from sqenv.publish import hpc, metadata
from sqenv.publish.integrity import image_problems
from sqenv.publish.layout import Install


@dataclass(frozen=True)
class InfoOptions:
    """What `sqenv info` was asked for."""

    prefix: Path
    verify: bool = False  # also compare every image's checksum (reads them whole)


def files_on_disk(prefix: Path) -> int:
    return sum(len(dirs) + len(files) for _root, dirs, files in os.walk(prefix))


def summary(install: Install) -> dict:
    data = metadata.load(install.metadata)
    version = metadata.current(data)
    images = version["images"]
    return {
        "prefix": str(install.prefix),
        "kind": data["kind"],
        "version": version["number"],
        "created": version["created"],
        "first_created": data["created"],
        "python": version.get("python"),
        "mount_path": data["mount_path"],
        "layers": version["layers"],
        "image_size": sum(i["size"] for i in images),
        "installed_size": sum(i["installed_size"] for i in images),
        "files_inside": sum(i["files_inside"] for i in images),
        "files_on_disk": files_on_disk(install.prefix),
        "programs": version["programs"],
        "packages": version["packages"],
        **({"base_image": version["base_image"]} if version.get("base_image") else {}),  # a layer on a container
        **hpc.summary(install.prefix, version),  # MPI loaded at run time, target CPU
    }


def info(options: InfoOptions) -> tuple[dict, list]:
    """The summary (with `problems` and, after a clean `verify`, `verified`) and the image problems.

    A failed `verify` is an error (PrefixError); without it, problems are reported, not raised."""
    install = Install.open(options.prefix)
    found = summary(install)
    problems = image_problems(install, checksums=options.verify)
    if options.verify:
        if problems:
            raise PrefixError("the install is damaged: " + "; ".join(p.what for p in problems), problems[0].fix)
        found["verified"] = True
    found["problems"] = [p.what for p in problems]
    return found, problems
