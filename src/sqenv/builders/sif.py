"""Wrap an existing container (`sqenv wrap IMAGE.sif`, Tykky's `wrap-container`).

No image of ours is built (`BuildResult.packs` is false): the pipeline puts
the container itself into the install (`PREFIX/container.sif`, hard-linked
when it can be, else copied) with the launcher and one `bin/` entry per
program found under the `-w` paths inside the container. Launches always use the apptainer engine (or singularity):
the program runs in the container with the host's data directories bound,
found on the container's PATH with the `-w` directories first.

    PREFIX/bin/NAME        one symlink per program, all to ../launcher
    PREFIX/launcher        SQENV_LAYERS empty, SQENV_WRAP_PATH = the -w directories
    PREFIX/container.sif   the container
    PREFIX/sqenv.json      metadata (the container's checksum for `sqenv info --verify`)

`add_container` also gives an ordinary install its base image for the
apptainer engine (`--base-image`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from sqenv import snippets
from sqenv.builders.base import BuildContext, BuildResult
from sqenv.engines import RUNTIMES
from sqenv.errors import BuildError, InputError, ToolMissing
from sqenv.publish.modes import adopt
from sqenv.ui import UI

CONTAINER = "container.sif"
"""The container image the apptainer engine runs an install's programs in (see engines/apptainer.sh)."""

# Lists `DIR<TAB>NAME` for each executable under the paths given, with the container's own sh.


def runtime() -> str:
    for name in RUNTIMES:
        path = shutil.which(name)
        if path:
            return path
    raise ToolMissing(
        "wrapping a container needs `apptainer` (or `singularity`), and neither is on PATH",
        "load the site's apptainer module first",
    )


def container_paths(given: list[str]) -> tuple[str, ...]:
    paths = []
    for raw in given:
        raw = raw.strip().rstrip("/") or ("/" if raw.strip() else "")
        if not raw:
            continue
        if not raw.startswith("/"):
            raise InputError(
                f"-w `{raw}` is not an absolute path", "name paths inside the container, e.g. `-w /usr/bin`"
            )
        if ":" in raw or " " in raw:
            raise InputError(f"-w `{raw}`: paths with `:` or spaces cannot go on the container's PATH")
        paths.append(raw)
    if not paths:
        raise InputError("no wrapper paths given", "name the programs' directories with `-w /opt/app/bin[,...]`")
    return tuple(dict.fromkeys(paths))


def list_programs(exe: str, image: Path, paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """(directory, name) of each program under PATHS inside the container; the first directory wins a name."""
    argv = [exe, "-s", "exec", str(image), "/bin/sh", "-c", snippets.text("sif-programs.sh"), "sh", *paths]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=600, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildError(f"listing the programs of `{image}` timed out") from None
    if proc.returncode != 0:
        tail = "\n".join("  | " + line for line in proc.stderr.strip().splitlines()[-10:])
        raise BuildError(
            f"cannot look inside `{image}` with `{' '.join(argv[:3])} ... /bin/sh` (exit code {proc.returncode})",
            "check that it is a container image apptainer can run, with a /bin/sh",
            tail,
        )
    found: dict[str, str] = {}
    missing = []
    for line in proc.stdout.splitlines():
        directory, _, name = line.partition("\t")
        if not directory:
            missing.append(name)
        elif name and not name.startswith(".") and " " not in name and name not in found:
            found[name] = directory
    if missing:
        raise InputError(f"-w `{missing[0]}` does not exist in `{image}` (or is not executable)")
    if not found:
        raise InputError(f"no programs (executable files) under {', '.join(paths)} in `{image}`")
    return [(directory, name) for name, directory in found.items()]


def add_container(install_dir: Path, image: Path, ui: UI) -> Path:
    """Put IMAGE into the install as its container: a hard link when allowed, else a copy (atomic)."""
    target = install_dir / CONTAINER
    tmp = install_dir / f".{CONTAINER}.new"
    tmp.unlink(missing_ok=True)
    try:
        # a hard link shares the file: only when nobody else can write to it (else they could change
        # what the install runs, checksum and all); a copy otherwise
        st = os.stat(image)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise PermissionError
        os.link(image, tmp)
        ui.detail(f"hard-linked {image} into the install")
    except OSError:
        with ui.phase(f"Copying {image.name} ({image.stat().st_size / 1e6:,.0f} MB) into the install"):
            try:
                shutil.copyfile(image, tmp)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise InputError(f"cannot copy `{image}` into `{install_dir}`: {exc.strerror}") from None
        adopt(install_dir, tmp)
    os.replace(tmp, target)
    return target


_ENTRY = re.compile(r"^(\S)\S*\s+\S+\s+.*? \d{4}-\d\d-\d\d \d\d:\d\d (/.*)$")


def container_dirs(image: Path) -> str | None:
    """The container's top-level entries a host directory must not be bound over, `:`-separated
    (`/opt:/usr:...`): non-empty directories, and anything that is not a directory. Empty ones
    (`/home`, `/mnt`, `/srv` of a Debian image) are left to the host: binding over them hides
    nothing. Read from the image's squashfs with `unsquashfs -lls` (the SIF's partition at its
    offset), without running the container, whose runtime would add its own mount points.
    None when the image cannot be read that way (the launcher then binds as before)."""
    from sqenv.export.sifreader import DATA_PARTITION, descriptors, is_sif

    tool = shutil.which("unsquashfs")
    if tool is None:
        return None
    offset = 0
    try:
        if is_sif(image):
            part = next((d for d in descriptors(image) if d.datatype == DATA_PARTITION), None)
            if part is None:
                return None
            offset = part.offset
        proc = subprocess.run([tool, *(["-o", str(offset)] if offset else []), "-lls", "-d", "", str(image)],
                              capture_output=True, text=True, errors="surrogateescape", timeout=600)  # fmt: skip
    except (OSError, InputError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    has: set[str] = set()
    for line in proc.stdout.splitlines():
        m = _ENTRY.match(line)
        if not m:
            continue
        kind, path = m.group(1), m.group(2)
        if kind == "l":
            path = path.split(" -> ", 1)[0]
        parts = path.split("/")
        if len(parts) > 2 or (len(parts) == 2 and parts[1] and kind != "d"):
            has.add(parts[1])
    return ":".join(f"/{name}" for name in sorted(has) if ":" not in name and "," not in name)


def check_image(source: Path, what: str = "") -> Path:
    image = source.absolute()
    named = f"{what} `{source}`".strip()
    if not image.is_file():
        raise InputError(f"{named} is not a file" if image.exists() else f"{named} does not exist",
                         "give the path of a container image (.sif)")  # fmt: skip
    if not os.access(image, os.R_OK):
        raise InputError(f"{named} is not readable by you")
    with image.open("rb") as fh:
        head = fh.read(64)
    if b"SIF_MAGIC" not in head and not head.startswith(b"hsqs"):
        raise InputError(f"{named} is not a SIF or squashfs container image", "give a container image (.sif)")
    return image


def build(ctx: BuildContext) -> BuildResult:
    """The builder of a wrapped container: nothing to pack, only its programs and how to run them
    (the pipeline places the container itself, see `sqenv.pipeline`)."""
    image = ctx.spec.wrap.source
    assert image is not None
    paths = ctx.spec.wrap.wrapper_paths
    exe = runtime()
    with ctx.ui.phase(f"Listing the programs under {', '.join(paths)} in {image.name}"):
        programs = list_programs(exe, image, paths)
    wrap_path = ":".join(dict.fromkeys(directory for directory, _name in programs))
    launch = {"engine": "apptainer", "only_engine": "apptainer", "wrap_path": wrap_path}
    extra = {"programs": [name for _directory, name in programs], "launch": launch, "wrap_path": wrap_path}
    return BuildResult(packages=[], python=None, extra=extra, packs=False)


def refresh(ctx: BuildContext, result: BuildResult) -> BuildResult:
    return result


def update(ctx: BuildContext, change: object) -> BuildResult:
    from sqenv.builders.container import update as refuse

    return refuse(ctx, change)
