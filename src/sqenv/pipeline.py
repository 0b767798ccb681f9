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
from sqenv.builders.workdir import log_file, workdir
from sqenv.config import load_config
from sqenv.errors import Interrupted, ToolMissing
from sqenv.inputs import BuildSpec
from sqenv.launch import MOUNT_PATH
from sqenv.launch.helper import enter_binary
from sqenv.pack import Image, pack
from sqenv.publish import activation, launchers, metadata, modes
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
    ui.info(
        f"Installed {len(result.packages)} packages into {spec.prefix} "
        f"({image.size / 1e6:,.0f} MB image, {len(names)} programs)"
    )
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


def _build_into(spec: BuildSpec, ui: UI, out: Path, work: Path, enter: Path) -> tuple[Image, list[str], BuildResult]:
    """Build in `work`, write the image, helper, launchers and metadata into `out`."""
    staging = work / "root"
    staging.mkdir()
    ctx = BuildContext(
        spec=spec, staging=staging, workdir=work, enter=enter, ui=ui, cwd=Path.cwd(), log_path=log_file("create")
    )
    result = build(ctx)
    # a builder may name its programs (wrap -w) and launch options (wrap --mask: the mount path)
    names = result.extra.pop("programs", None) or launchers.programs(staging)
    launch = {key: value for key, value in (("mpi", spec.mpi), ("engine", spec.engine)) if value}
    launch.update(result.extra.pop("launch", {}))
    tmp_image = out / ".image.sqfs"
    when = _provenance(spec, result, staging, launch.get("mount_path", MOUNT_PATH))
    image = pack(
        ui,
        staging,
        tmp_image,
        compression=spec.compression,
        level=spec.compression_level,
        jobs=spec.jobs,
        log=ctx.log,
        epoch=when,
    )
    layer = image_name(1, image.id)
    os.replace(tmp_image, out / layer)
    adopt(out, out / layer)
    install = Install(out)
    shutil.copy2(enter, install.enter)
    adopt(out, install.enter, executable=True)
    if spec.base_image:
        from sqenv.builders.sif import add_container, container_dirs

        found = container_dirs(add_container(out, spec.base_image, ui))
        if found is not None:  # host directories are not bound over these (engines/apptainer.sh)
            launch["container_dirs"] = found
    launchers.write(install, [layer], names, activate=result.activate, options=launch)
    activation.write(out, spec.prefix.absolute(), spec.kind)
    data = {
        "format": metadata.FORMAT,
        "kind": spec.kind,
        "mount_path": launch.get("mount_path", MOUNT_PATH),
        "created": now(),
        "current": 1,
        "keep": load_config().get("keep_versions"),
        "versions": [version_record(1, spec, result, [image], [layer], names, "create", launch)],
    }
    metadata.save(install.metadata, data, mode=file_mode())
    return image, names, result
