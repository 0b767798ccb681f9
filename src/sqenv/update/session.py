"""What update and compact share: options, the locked and mounted install, packing and publishing.

The current layers are mounted read-only (sqenv's image server, in the build
directory; for non-root users inside a user namespace of our own, see
`layers.own_namespace`). An update stacks them with overlayfs under a writable
upper directory (`sqenv.update.apply`); compact packs the merged tree
(`sqenv.update.compact`). Publishing follows `sqenv.publish.versions`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from sqenv.builders import BuildContext, workdir
from sqenv.config import cache_dir
from sqenv.errors import BuildError, PackError, PrefixError, SqenvError
from sqenv.inputs import BuildSpec, Kind, check_packing
from sqenv.inputs.index import IndexOptions
from sqenv.inputs.index import resolve as resolve_index
from sqenv.launch import IMAGE_MARKER, MOUNT_PATH
from sqenv.launch.helper import enter_binary
from sqenv.pack import Image, pack
from sqenv.pipeline import check_tools
from sqenv.publish import metadata, versions
from sqenv.publish.layout import Install
from sqenv.ui import UI
from sqenv.update import layers

MAX_LAYERS = 4
"""The launcher holds one descriptor per layer and accepts at most four."""


@dataclass(frozen=True)
class Change:
    """What one update asks for. `base` is the current version's record."""

    requirement_files: tuple[Path, ...] = ()
    packages: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    environment_file: Path | None = None
    post_install: Path | None = None
    base: dict = field(default_factory=dict, compare=False)
    index: IndexOptions = field(default_factory=IndexOptions)
    """Package sources given on the command line; the install's recorded ones fill the rest."""

    def inputs(self) -> dict:
        items = {
            "requirement_files": [str(p) for p in self.requirement_files],
            "packages": list(self.packages),
            "remove": list(self.remove),
            "environment_file": str(self.environment_file) if self.environment_file else None,
            "post_install": str(self.post_install) if self.post_install else None,
        }
        return {k: v for k, v in items.items() if v}


@dataclass(frozen=True)
class Options:
    keep: int | None = None
    compression: str = "zstd"
    compression_level: int | None = None
    jobs: int | None = None
    build_dir: Path | None = None
    max_layers: int = MAX_LAYERS

    def __post_init__(self) -> None:
        check_packing(self.compression, self.compression_level, self.jobs)  # before any work


def ensure_enter(install: Install, enter: Path) -> None:
    """Installs made before layered updates have a helper that cannot stack layers: replace it."""
    if install.enter.is_file() and install.enter.read_bytes() == enter.read_bytes():
        return
    tmp = versions.temp_path(install, ".enter")
    try:
        shutil.copyfile(enter, tmp)
        versions.adopt(install, tmp, executable=True)
        os.replace(tmp, install.enter)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PrefixError(f"cannot write into `{install.prefix}`: {exc.strerror}; nothing was changed") from None


def pack_merged(ctx: BuildContext, output: Path) -> Image:
    """One image of the whole merged tree of `ctx.mounts` (upper included), read at the mount path.

    A single layer is read through a plain bind (it keeps its marker): how an
    image whose modes only its owner's group could read gets made readable."""
    dirs = [d for flag, d in zip(ctx.mounts[::2], ctx.mounts[1::2], strict=True) if flag in ("-l", "-u")]
    dirs = dirs[-1:] + dirs[:-1] if "-u" in ctx.mounts else dirs  # the upper directory is the top layer
    if len(dirs) > 1:
        marker = ctx.workdir / "marker"
        marker.mkdir()
        (marker / IMAGE_MARKER).write_text(uuid.uuid4().hex + "\n")
        dirs.insert(0, str(marker))
    spec = ctx.spec
    enter = [str(ctx.enter), *(x for d in dirs for x in ("-l", d)), "--"]
    return pack(ctx.ui, Path(MOUNT_PATH), output, compression=spec.compression, level=spec.compression_level,
                jobs=spec.jobs, log=ctx.log, enter=enter)  # fmt: skip


def _context(install: Install, kind: str, work: Path, ui: UI, change: Change, options: Options) -> BuildContext:
    """The builder's context in update mode: what to install comes from `change`, not from the spec."""
    from sqenv.config import load_config

    index = resolve_index(change.index, load_config(), ui, (change.base.get("inputs") or {}).get("index"))
    spec = BuildSpec(prefix=install.prefix, kind=cast(Kind, kind), post_install=change.post_install,
                     compression=options.compression, compression_level=options.compression_level,
                     jobs=options.jobs, build_dir=options.build_dir, index=index,
                     # solved as at create: external MPI builds (`--mpi host`), the target CPU
                     mpi=(change.base.get("inputs") or {}).get("mpi"),
                     target_cpu=(change.base.get("inputs") or {}).get("target_cpu"))  # fmt: skip
    return BuildContext(spec=spec, staging=work / "upper", workdir=work, enter=enter_binary(), ui=ui, cwd=Path.cwd(),
                        mode="update")  # fmt: skip


def readable(install: Install, base: dict) -> bool:
    """Can every user read the version's layers through overlayfs? Checked once per image, then recorded."""
    for image in base["images"]:
        if not image.get("readable"):
            if layers.unreadable(install.image(image["file"])):
                return False
            image["readable"] = True
    return True


def _keep_log(log: Path, err: SqenvError) -> None:
    """The build directory goes away: keep a failed update's log where the message can point."""
    if not log.is_file():
        return
    dest = cache_dir() / "logs" / f"update-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with contextlib.suppress(OSError):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, dest)
        if str(log) in err.message:
            err.message = err.message.replace(str(log), str(dest))
        elif err.details and str(log) in err.details:
            err.details = err.details.replace(str(log), str(dest))
        else:
            err.details = "\n".join(x for x in (err.details, f"  full log: {dest}") if x)


@contextlib.contextmanager
def session(prefix: Path, ui: UI, options: Options, change: Change) -> Iterator[tuple[Install, dict, BuildContext]]:
    """Locked, repaired install with its current layers mounted; yields (install, metadata, context).

    A layer on a base image (`builders/base_image`) is built inside that container, which cannot
    see our mounts: its one layer is unpacked into the staging directory instead (it is small:
    the big packages are the container's), and `ctx.container` is set."""
    check_tools()
    install = Install.open(prefix)
    on_container = any(v.get("base_image") for v in metadata.load(install.metadata).get("versions", []))
    # checked before our own user namespace, where root's files show as owned by "nobody"
    base_dir = workdir.safe_base(options.build_dir)
    if not on_container:
        layers.own_namespace()
    with versions.shared_umask(), versions.locked(install, ui):
        workdir.sweep(base_dir)  # build trees of killed creates
        data = versions.repair(install, ui)
        base = versions.by_number(data, data["current"])
        change = replace(change, base=base)
        with contextlib.ExitStack() as stack:
            work = stack.enter_context(layers.update_workdir(base_dir))
            ctx = _context(install, data["kind"], work, ui, change, options)
            if on_container:
                ctx = replace(ctx, container=_unpacked(install, base, work, ctx, change))
            else:
                lowers = stack.enter_context(layers.mounted(install, base["layers"], work))
                ctx = replace(ctx, mounts=tuple(x for d in lowers for x in ("-l", d)))
            try:
                yield install, data, ctx
            except (BuildError, PackError) as err:
                _keep_log(ctx.log, err)
                raise


def _unpacked(install: Install, base: dict, work: Path, ctx: BuildContext, change: Change):
    """The current layer unpacked into the staging directory; how to run commands in its container."""
    from uv import find_uv_bin

    from sqenv.builders.base_image import check_ref, container_run
    from sqenv.builders.uv import default_cache_dir
    from sqenv.tools.run import run

    if len(base["layers"]) != 1:
        raise PrefixError(f"{install.prefix} has {len(base['layers'])} layers; a layer on a base image has one",
                          f"run `sqenv compact {install.prefix}` first")  # fmt: skip
    image = Path(base["launch"].get("container") or install.prefix / "container.sif")
    if not image.is_file():
        raise PrefixError(f"the base image `{image}` of {install.prefix} is missing",
                          "restore it, or rebuild the environment with `sqenv create --force`")  # fmt: skip
    if base["launch"].get("container"):  # referenced: still only yours or root's to change
        check_ref(image)
    with ctx.ui.phase("Unpacking the current layer"):
        run(ctx.ui, ["unsquashfs", "-no-xattrs", "-d", str(ctx.staging), str(install.image(base["layers"][0]))],
            log=ctx.log, error=PackError, what="unpacking the current layer")  # fmt: skip
    inputs = [*change.requirement_files, *([change.post_install] if change.post_install else [])]
    return container_run(image, workdir=work, cwd=Path.cwd(), inputs=inputs, cache=default_cache_dir(),
                         uv_host=find_uv_bin())  # fmt: skip


def pack_and_publish(install: Install, data: dict, record: dict, ctx: BuildContext, whole: bool) -> dict:
    """Pack the upper directory (or, `whole`, the merged layers) next to the images, then publish."""
    ensure_enter(install, ctx.enter)
    tmp = versions.temp_path(install, ".sqfs")
    opts = ctx.spec
    try:
        if whole and ctx.container is None:
            image = pack_merged(ctx, tmp)
        else:
            layers.world_readable(ctx.staging)
            image = pack(ctx.ui, ctx.staging, tmp, compression=opts.compression, level=opts.compression_level,
                         jobs=opts.jobs, log=ctx.log)  # fmt: skip
        return versions.publish(install, data, record, tmp, image, ctx.ui, whole=whole)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
