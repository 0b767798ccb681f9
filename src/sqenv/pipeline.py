"""The stages in order: spec → build → pack → publish (→ launch, at run time).

`create` is the library entry the CLI calls (and tests may call directly).
"""

from __future__ import annotations

import os
import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path

from sqenv import __version__
from sqenv.builders import BuildContext, BuildResult, build
from sqenv.builders.workdir import discard, log_file, workdir
from sqenv.config import load_config
from sqenv.errors import Interrupted, ToolMissing
from sqenv.inputs import BuildSpec
from sqenv.launch import MOUNT_PATH
from sqenv.launch.helper import enter_binary
from sqenv.pack import Image, pack
from sqenv.publish import activation, launchers, metadata, modes, venvcfg
from sqenv.publish.layout import Install, image_name
from sqenv.publish.modes import adopt, file_mode
from sqenv.publish.parents import parent_dirs
from sqenv.publish.publisher import Publisher
from sqenv.ui import UI


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_tools() -> None:
    if not shutil.which("mksquashfs"):
        raise ToolMissing(
            "`mksquashfs` is not installed", "run `sqenv doctor` (Debian: `apt-get install squashfs-tools`)"
        )


def version_record(
    number: int,
    spec: BuildSpec,
    result: BuildResult,
    images: list[Image],
    layers: list[str],
    programs: list[str],
    change: str,
    launch: dict[str, str] | None = None,
) -> dict:
    return {
        "number": number,
        "created": now(),
        "change": change,
        "sqenv_version": __version__,
        "layers": layers,
        "images": [img.record(name) for name, img in zip(layers[-len(images) :], images, strict=True)],
        "inputs": spec.inputs(),
        "python": result.python,
        "packages": [{k: v for k, v in vars(p).items() if v is not None} for p in result.packages],
        "programs": programs,
        "activate": result.activate,
        "launch": launch or {},
        **result.extra,
    }


_HELD = {signal.SIGINT, signal.SIGTERM}


def create(spec: BuildSpec, ui: UI) -> Install:
    """Build, pack and publish a new install at spec.prefix (its missing parents made like `mkdir -p`).

    The prefix's lock is taken first (a second create of it fails at once),
    then the build directory. From the commit on, Ctrl-C and SIGTERM wait
    until the old tree and the build directory are gone; one that arrived
    meanwhile is then reported as what it is: the install exists."""
    if spec.builder != "sif":  # a wrapped container packs nothing
        check_tools()
    with parent_dirs(spec.prefix.absolute()):
        return _create(spec, ui)


def _create(spec: BuildSpec, ui: UI) -> Install:
    publisher = Publisher(spec.prefix, spec.force)
    enter = enter_binary()
    mask = None
    pending: set[signal.Signals] = set()
    try:
        with modes.shared_umask(), publisher as out, workdir(spec.build_dir) as work:
            from sqenv.update.layers import sweep_update_dirs

            sweep_update_dirs(work.parent)  # what killed updates left
            image, names, result = _build_into(spec, ui, out, work, enter)
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
            publisher.commit()
    finally:
        if mask is not None:
            pending = signal.sigpending() & _HELD
            for sig in pending:
                signal.sigtimedwait([sig], 0)  # consumed: reported below instead
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if image is None:
        ui.info(f"Wrapped {len(names)} programs of {spec.wrap.source} into {spec.prefix} (run with apptainer)")
    else:
        ui.info(f"Installed {len(result.packages)} packages into {spec.prefix} "
                f"({image.size / 1e6:,.0f} MB image, {len(names)} programs)")  # fmt: skip
    if pending:
        raise Interrupted(f"interrupted after the install was complete: {spec.prefix} is installed and works",
                          f"remove it with `rm -r {spec.prefix}` if you did not want it")  # fmt: skip
    return Install(spec.prefix.absolute())


def _provenance(spec: BuildSpec, result: BuildResult, staging: Path, mount_path: str) -> int | None:
    """The lock and SBOM into the image (`sqenv.export.provenance`); the fixed time to pack with
    (pip and conda environments: byte-identical images from one lock), None for wrapped trees."""
    from sqenv.export import provenance
    from sqenv.pack.reproducible import epoch

    when = epoch()
    provenance.write_into(staging, provenance.for_build(spec, result, staging, mount_path), "sqenv-environment", when)
    return when if spec.kind in ("pip", "conda") else None


def layer_run(spec: BuildSpec, work: Path):
    """How a layer on a base image's Python runs its build commands inside that image."""
    from uv import find_uv_bin

    from sqenv.builders.base_image import container_run
    from sqenv.builders.uv import default_cache_dir

    assert spec.base_image is not None
    scripts = [p for p in (spec.pre_install, spec.post_install, spec.environ_file) if p]
    return container_run(spec.base_image, workdir=work, cwd=Path.cwd(), inputs=[*spec.pip.requirement_files, *scripts],
                         cache=default_cache_dir(), uv_host=find_uv_bin())  # fmt: skip


def place_base_image(spec: BuildSpec, out: Path, launch: dict, result: BuildResult, ui: UI) -> None:
    """The install's base image (`place_container`, referenced where it is with `--base-image-ref`,
    a site's path). A layer on it runs only there, and its record names the image it was built on."""
    assert spec.base_image is not None
    placed = place_container(spec.base_image, out, launch, ui, referenced=spec.base_image_ref)
    if not spec.on_base_image:
        return
    launch.update(engine=spec.engine or "apptainer", only_engine=spec.engine or "apptainer", on_container="1")
    if spec.base_image_ref:
        launch["container"] = str(spec.base_image)
    digest, size = checksum(placed, f"the base image {spec.base_image.name}", ui)
    record = result.extra.setdefault("base_image", {})
    record.update(path=str(spec.base_image), referenced=spec.base_image_ref, sha256=digest, size=size)


def _pack_into(spec: BuildSpec, ctx: BuildContext, out: Path, launch: dict, result: BuildResult) -> Image:
    """The staging tree (with its provenance) as the install's first image layer."""
    tmp_image = out / ".image.sqfs"
    when = _provenance(spec, result, ctx.staging, launch.get("mount_path", MOUNT_PATH))
    image = pack(ctx.ui, ctx.staging, tmp_image, compression=spec.compression, level=spec.compression_level,
                 jobs=spec.jobs, log=ctx.log, epoch=when, read=lambda: discard(ctx.staging))  # fmt: skip
    layer = image_name(1, image.id)
    os.replace(tmp_image, out / layer)
    adopt(out, out / layer)
    return image


def place_container(image: Path, out: Path, launch: dict, ui: UI, *, referenced: bool = False) -> Path:
    """A container into the install (`PREFIX/container.sif`, hard-linked or copied), or `referenced`
    where it is; its top-level entries are never hidden by host directories (engines/apptainer.sh)."""
    from sqenv.builders.sif import add_container, container_dirs

    placed = image if referenced else add_container(out, image, ui)
    found = container_dirs(placed)
    if found is not None:
        launch["container_dirs"] = found
    return placed


def checksum(placed: Path, what: str, ui: UI) -> tuple[str, int]:
    """(sha256, size) of a container, for `sqenv info --verify`."""
    from sqenv.pack.squashfs import sha256_of

    with ui.phase(f"Checksumming {what}"):
        return sha256_of(placed), placed.stat().st_size


def _build_into(
    spec: BuildSpec, ui: UI, out: Path, work: Path, enter: Path
) -> tuple[Image | None, list[str], BuildResult]:
    """Build in `work`, write the image, helper, launchers and metadata into `out`."""
    staging = work / "root"
    staging.mkdir()
    ctx = BuildContext(
        spec=spec,
        staging=staging,
        workdir=work,
        enter=enter,
        ui=ui,
        cwd=Path.cwd(),
        log_path=log_file("create"),
        container=layer_run(spec, work) if spec.on_base_image else None,
    )
    result = build(ctx)
    # a builder may name its programs (wrap -w) and launch options (wrap --mask: the mount path)
    names = result.extra.pop("programs", None) or launchers.programs(staging)
    launch = {key: value for key, value in (("mpi", spec.mpi), ("engine", spec.engine)) if value}
    launch.update(result.extra.pop("launch", {}))
    if spec.profile:  # recorded resolved: updates and rollbacks keep what this version was made with
        launch.update(profile=spec.profile, **load_config().get("profiles")[spec.profile])
    install = Install(out)
    # editors: a venv on the host too, whose host `lib` takes no packages (read before packing:
    # the staging tree goes as soon as it is packed)
    if venvcfg.write(staging, out, spec.kind):
        venvcfg.guard_lib(out)
    if result.packs:
        image: Image | None = _pack_into(spec, ctx, out, launch, result)
        layers = [image_name(1, image.id)]
        shutil.copy2(enter, install.enter)
        adopt(out, install.enter, executable=True)
    else:  # a wrapped container (builders/sif): the install holds it, no image of ours, no helper
        image, layers = None, []
        assert spec.wrap.source is not None
        placed = place_container(spec.wrap.source, out, launch, ui)
    if spec.base_image:
        place_base_image(spec, out, launch, result, ui)
    launchers.write(install, layers, names, activate=result.activate, options=launch)
    activation.write(out, spec.prefix.absolute(), spec.kind)
    record = version_record(1, spec, result, [image] if image else [], layers, names, "create", launch)
    if not result.packs:
        digest, size = checksum(placed, "the container", ui)
        image_record = {"file": placed.name, "sha256": digest, "size": size, "installed_size": size, "files_inside": 0}
        record.update(images=[image_record], container=placed.name)
    data = {
        "format": metadata.FORMAT,
        "kind": spec.kind,
        "mount_path": launch.get("mount_path", MOUNT_PATH if result.packs else "/"),
        "created": now(),
        "current": 1,
        "keep": load_config().get("keep_versions") if result.packs else 1,
        "versions": [record],
    }
    metadata.save(install.metadata, data, mode=file_mode())
    return image, names, result
