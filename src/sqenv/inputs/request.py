"""What `sqenv create` was asked, as plain values, and the plan made from it.

The CLI only parses: it fills a `CreateRequest` and hands it over. `plan` is
the spec stage: the site/user config merged in (a forced value wins over the
command line, with a warning), every input checked, and the frozen
`BuildSpec` returned, before anything is touched on disk. Tests and other
front ends (Tykky's and cotainr's commands) make requests the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqenv.config import BUILD_OPTIONS, Config, load_config, resolve_build_options
from sqenv.errors import UsageError
from sqenv.inputs import BuildSpec, PipInputs
from sqenv.inputs.cpu import resolve as resolve_cpu
from sqenv.inputs.index import IndexOptions
from sqenv.inputs.index import resolve as resolve_index
from sqenv.inputs.requirements import check_file, check_spec
from sqenv.ui import NORMAL, QUIET, UI


@dataclass(frozen=True)
class CreateRequest:
    """Every option of `sqenv create`, as given (None: not given, the config decides)."""

    prefix: Path
    packages: tuple[str, ...] = ()
    requirement_files: tuple[Path, ...] = ()
    python: str | None = None
    system_site_packages: bool = False
    compile_tests: bool = False
    file: Path | None = None  # conda environment.yml or explicit file
    channels: tuple[str, ...] = ()
    lock_from: Path | None = None
    channel_alias: str | None = None
    offline: bool = False
    pkgs_dir: Path | None = None
    mpi: str | None = None
    target_cpu: str | None = None
    optimize_sdists: bool = False
    engine: str | None = None
    base_image: Path | None = None
    base_image_ref: bool = False
    profile: str | None = None
    post_install: Path | None = None
    pre_install: Path | None = None
    environ: Path | None = None
    compression: str | None = None
    compression_level: int | None = None
    build_dir: Path | None = None
    jobs: int | None = None
    force: bool = False
    index: IndexOptions = field(default_factory=IndexOptions)
    quiet: bool = False

    @property
    def is_conda(self) -> bool:
        return bool(self.file or self.channels or self.lock_from)


def plan(request: CreateRequest, config: Config | None = None) -> BuildSpec:
    """The checked plan of one create (see the module's doc)."""
    config = config or load_config()
    ui = UI(level=QUIET if request.quiet else NORMAL)
    given = {key: getattr(request, key) for key in BUILD_OPTIONS}
    values, _ = resolve_build_options({**given, "quiet": request.quiet}, config, ui)
    request = replace(request, **values)
    request = replace(
        request,
        target_cpu=resolve_cpu(request.target_cpu, config.get("cpus")),
        profile=check_profile(config.get("profile", request.profile), config),
    )
    if request.optimize_sdists and not request.target_cpu:
        raise UsageError("`--optimize-sdists` needs the CPU to build for",
                         "add `--target-cpu NAME` (e.g. zen3), or set `target_cpu` in the config")  # fmt: skip
    index = resolve_index(request.index, config, ui)
    if index.no_index and not index.find_links:
        raise UsageError("`--no-index` leaves uv nowhere to find packages", "add `--find-links DIR`")
    if request.post_install and not request.post_install.is_file():
        raise UsageError(f"post-install script `{request.post_install}` does not exist")
    if request.is_conda:
        from sqenv.inputs.conda import conda_spec

        return replace(conda_spec(request), index=index)
    if request.base_image is not None:
        from sqenv.builders.sif import check_image

        check_image(request.base_image, "the base image")
        if request.base_image_ref:
            from sqenv.builders.base_image import check_ref

            check_ref(request.base_image)
    if not request.requirement_files and not request.packages:
        raise UsageError("nothing to install", "give packages, `-r requirements.txt`, or `-f environment.yml`")
    return replace(pip_spec(request), index=index)


def check_profile(name: str | None, config: Config) -> str | None:
    """A launch profile the config defines (`[profiles.NAME]`)."""
    known = config.get("profiles")
    if name is not None and name not in known:
        listed = ", ".join(sorted(known)) or "none is defined"
        raise UsageError(f"no launch profile `{name}` in the sqenv config ({listed})",
                         "see `sqenv config`; a site defines them as [profiles.NAME]")  # fmt: skip
    return name


def common(request: CreateRequest) -> dict:
    """The BuildSpec fields every kind takes from the request."""
    return {
        "prefix": request.prefix.absolute(),
        "post_install": request.post_install.absolute() if request.post_install else None,
        "pre_install": request.pre_install.absolute() if request.pre_install else None,
        "environ_file": request.environ.absolute() if request.environ else None,
        "compression": request.compression or "zstd",
        "mpi": request.mpi,
        "target_cpu": request.target_cpu,
        "optimize_sdists": request.optimize_sdists,  # conda: for the `pip:` part's sdists
        "engine": request.engine,
        # a referenced image by its real path: what was checked is what launches run (check_ref)
        "base_image": base_image_path(request),
        "base_image_ref": request.base_image_ref,
        "profile": request.profile,
        "compression_level": request.compression_level,
        "jobs": request.jobs,
        "force": request.force,
        "build_dir": request.build_dir,
    }


def base_image_path(request: CreateRequest) -> Path | None:
    if request.base_image is None:
        return None
    return Path(os.path.realpath(request.base_image)) if request.base_image_ref else request.base_image.absolute()


def pip_spec(request: CreateRequest) -> BuildSpec:
    for path in request.requirement_files:
        check_file(path)
    for i, pkg in enumerate(request.packages, 1):
        check_spec(pkg, f"package argument {i}")
    pip = PipInputs(
        requirement_files=tuple(p.absolute() for p in request.requirement_files),
        packages=request.packages,
        python=request.python,
        system_site_packages=request.system_site_packages,
        compile_tests=request.compile_tests,
    )
    return BuildSpec(kind="pip", pip=pip, **common(request))
