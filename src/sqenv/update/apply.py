"""Update and compact an install: a new image layer holding only the changes.

The current layers are mounted read-only (sqenv's image server, in the build
directory; for non-root users inside a user namespace of our own, see
`layers.own_namespace`) and stacked with overlayfs under a writable upper
directory at the mount path, inside the build namespace. The builder (uv for pip envs) and the
post-install script run there; the upper directory then holds exactly what
changed (new files, whiteouts for removed ones, opaque markers for replaced
directories) and becomes the new top layer. Past `MAX_LAYERS` the merged tree
is packed into one image instead, as it is when a layer below was packed
with modes other users cannot read through overlayfs (`layers.unreadable`).
Publishing follows `sqenv.publish.versions`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from packaging.utils import canonicalize_name

from sqenv.builders import BuildContext, BuildResult, scripts, workdir
from sqenv.builders.base import builder_for
from sqenv.config import cache_dir
from sqenv.errors import BuildError, InputError, PackError, PrefixError, SqenvError
from sqenv.inputs import BuildSpec, Kind, check_packing
from sqenv.inputs.index import IndexOptions
from sqenv.inputs.index import resolve as resolve_index
from sqenv.launch import IMAGE_MARKER, MOUNT_PATH
from sqenv.launch.helper import enter_binary
from sqenv.pack import Image, pack
from sqenv.pack.squashfs import LEVELS, sha256_of
from sqenv.pipeline import check_tools
from sqenv.publish import launchers, versions
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


def _programs(ctx: BuildContext) -> list[str]:
    """The merged bin/ seen at the mount path, classified by `launchers.programs`."""
    script = ('cd "$1/bin" 2>/dev/null || exit 0; for f in * .[!.]*; do if [ -L "$f" ]; then echo "L $f"; '
              'elif [ -f "$f" ] && [ -x "$f" ]; then echo "X $f"; fi; done')  # fmt: skip
    out = ctx.run(["/bin/sh", "-c", script, "sh", ctx.mount_path], what="listing the programs")
    fake = ctx.workdir / "programs"
    (fake / "bin").mkdir(parents=True)
    for line in out.splitlines():
        kind, _, name = line.partition(" ")
        if kind == "L":
            (fake / "bin" / name).symlink_to("target")
        elif kind == "X":
            (fake / "bin" / name).touch(mode=0o755)
    return launchers.programs(fake)


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
    argv = ["mksquashfs", MOUNT_PATH, str(output), "-noappend", "-all-root", "-comp", spec.compression,
            "-processors", str(spec.jobs or os.cpu_count() or 1), "-no-progress",
            "-action", "chmod(a+rX)@true", "-root-mode", "755"]  # fmt: skip
    level = spec.compression_level if spec.compression_level is not None else LEVELS.get(spec.compression)
    argv += ["-Xcompression-level", str(level)] if level is not None else []
    readonly = tuple(x for d in dirs for x in ("-l", d))
    with ctx.ui.phase(f"Packing the whole environment into one {spec.compression} image"):
        try:
            out = replace(ctx, mounts=readonly).run(argv, what="mksquashfs", error=PackError)
        except PackError:
            if "No space left" in ctx.log.read_text(errors="replace"):
                raise PackError(f"no space left to write the image next to `{output.parent}`",
                                "free space on that file system, then retry") from None  # fmt: skip
            raise
    size = re.search(r"uncompressed filesystem size \(([\d.]+) Kbytes\)", out)
    inodes = re.search(r"Number of inodes (\d+)", out)
    return Image(path=output, sha256=sha256_of(output), size=output.stat().st_size,
                 installed_size=int(float(size.group(1)) * 1024) if size else 0,
                 files_inside=int(inodes.group(1)) - 1 if inodes else 0)  # fmt: skip


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


def _readable(install: Install, base: dict) -> bool:
    """Can every user read the version's layers through overlayfs? Checked once per image, then recorded."""
    for image in base["images"]:
        if not image.get("readable"):
            if layers.unreadable(install.image(image["file"])):
                return False
            image["readable"] = True
    return True


def _check_removals(change: Change, base: dict, prefix: Path) -> None:
    installed = {canonicalize_name(p["name"]) for p in base.get("packages", [])}
    for name in change.remove:
        if canonicalize_name(name) not in installed:
            raise InputError(f"`{name}` is not installed in {prefix}", "see `sqenv info PREFIX` for what is installed")


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
def _session(prefix: Path, ui: UI, options: Options, change: Change) -> Iterator[tuple[Install, dict, BuildContext]]:
    """Locked, repaired install with its current layers mounted; yields (install, metadata, context)."""
    check_tools()
    install = Install.open(prefix)
    layers.own_namespace()
    with versions.shared_umask(), versions.locked(install, ui):
        workdir.sweep(workdir.base_dir(options.build_dir))  # build trees of killed creates
        data = versions.repair(install, ui)
        base = versions.by_number(data, data["current"])
        change = replace(change, base=base)
        with (
            layers.update_workdir(options.build_dir) as work,
            layers.mounted(install, base["layers"], work) as lowers,
        ):
            ctx = _context(install, data["kind"], work, ui, change, options)
            ctx = replace(ctx, mounts=tuple(x for d in lowers for x in ("-l", d)))
            try:
                yield install, data, ctx
            except (BuildError, PackError) as err:
                _keep_log(ctx.log, err)
                raise


def _pack_and_publish(install: Install, data: dict, record: dict, ctx: BuildContext, whole: bool) -> dict:
    """Pack the upper directory (or, `whole`, the merged layers) next to the images, then publish."""
    ensure_enter(install, ctx.enter)
    tmp = versions.temp_path(install, ".sqfs")
    opts = ctx.spec
    try:
        if whole:
            image = pack_merged(ctx, tmp)
        else:
            layers.world_readable(ctx.staging)
            image = pack(ctx.ui, ctx.staging, tmp, compression=opts.compression, level=opts.compression_level,
                         jobs=opts.jobs, log=ctx.log)  # fmt: skip
        return versions.publish(install, data, record, tmp, image, ctx.ui, whole=whole)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _runs_in_container(version: dict) -> bool:
    """Whether launches of this install go to Apptainer/Singularity: its own engine, or a forced config."""
    from sqenv.config import load_config
    from sqenv.engines import stacks_layers

    config = load_config()
    engine = config.get("engine") if config.setting("engine").forced else (version.get("launch") or {}).get("engine")
    return not stacks_layers(engine)


def update(prefix: Path, change: Change, ui: UI, options: Options = Options()) -> dict | None:
    """Apply `change` as a new version; None when it changed nothing."""
    with _session(prefix, ui, options, change) as (install, data, ctx):
        base = versions.by_number(data, data["current"])
        change = replace(change, base=base)
        _check_removals(change, base, install.prefix)
        builder = builder_for(data["kind"])  # a wrapped tree's refuses the update
        if options.keep is not None:
            data["keep"] = options.keep
        lowers = ctx.mounts[1::2]
        (ctx.staging).mkdir()
        (ctx.workdir / "overlay-work").mkdir()
        ctx = replace(ctx, mounts=(*ctx.mounts, "-u", str(ctx.staging), "-W", str(ctx.workdir / "overlay-work")))
        result: BuildResult = builder.update(ctx, change)
        if change.post_install:
            scripts.run(ctx, change.post_install, result)
            result = builder.refresh(ctx, result)
        if not layers.changed(ctx.staging, lowers):
            ui.info(f"Nothing changed: {install.prefix} stays at version {base['number']}")
            if options.keep is not None:
                versions.finish(install, data, base["number"], ui)
            return None
        packages = [{k: v for k, v in vars(p).items() if v is not None} for p in result.packages]
        # Past the launcher's limit, over an image others cannot read through overlayfs, or for an
        # install that runs in Apptainer (which cannot stack layers over PREFIX): pack it all.
        single = _runs_in_container(base)
        whole = single or len(lowers) + 1 > options.max_layers or not _readable(install, base)
        parts = [versions.package_diff(base.get("packages", []), packages)]
        parts += [f"post-install {change.post_install.name}"] if change.post_install else []
        summary = "; ".join(p for p in parts if p) or "files changed"
        if whole and not single:
            summary += " (layers compacted)" if len(lowers) + 1 > options.max_layers else " (repacked readable)"
        inputs = {**change.inputs(), **({"index": ctx.spec.index.record()} if ctx.spec.index.record() else {})}
        record = versions.new_record(base, "update", inputs=inputs, packages=packages,
                                     programs=_programs(ctx), summary=summary,
                                     python=result.python, **result.extra)  # fmt: skip
        record = _pack_and_publish(install, data, record, ctx, whole)
    ui.info(f"Updated {install.prefix} to version {record['number']}: {record['summary']}")
    return record


def compact(prefix: Path, ui: UI, options: Options = Options()) -> dict | None:
    """Squash the current version's layers into one (world-readable) image, as a new version."""
    with _session(prefix, ui, options, Change()) as (install, data, ctx):
        base = versions.by_number(data, data["current"])
        if len(base["layers"]) == 1 and _readable(install, base):
            ui.info(f"{install.prefix} is one layer already; nothing to compact")
            return None
        summary = f"{len(base['layers'])} layers into one" if len(base["layers"]) > 1 else "made readable for layers"
        record = versions.new_record(base, "compact", inputs={}, summary=summary)
        record = _pack_and_publish(install, data, record, ctx, whole=True)
    ui.info(f"Compacted {install.prefix} into one layer as version {record['number']}")
    return record
