"""Spec: what the user asked for, checked before anything is built.

The whole plan (`BuildSpec`) is made from the command line and the input files
first, so bad input fails in a second with nothing created, and the plan is
recorded in the install's metadata as the build's inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from sqenv.errors import UsageError
from sqenv.inputs.index import IndexOptions

Kind = Literal["pip", "conda", "wrap"]
COMPRESSIONS = ("zstd", "gzip", "xz", "lz4")
LEVEL_RANGES: dict[str, tuple[int, int] | None] = {"zstd": (1, 22), "gzip": (1, 9), "xz": None, "lz4": None}
"""What mksquashfs 4.5 accepts as `-Xcompression-level` (xz and lz4 take none)."""


def check_prefix_path(prefix: Path) -> None:
    """A prefix path launchers and metadata can hold as text: UTF-8, no control characters."""
    text = str(prefix)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UsageError(
            f"the prefix `{shown}` is not valid UTF-8",
            "choose a prefix path made of UTF-8 characters (launchers and metadata record it as text)",
        ) from None
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError(f"the prefix {text!r} contains a control character", "choose a prefix path without them")


def check_packing(compression: str, level: int | None, jobs: int | None) -> None:
    """Compression level and job count mksquashfs will accept, checked before any work."""
    if compression not in LEVEL_RANGES:
        raise UsageError(f"unknown compression `{compression}`", f"choose one of {', '.join(COMPRESSIONS)}")
    if level is not None:
        bounds = LEVEL_RANGES[compression]
        if bounds is None:
            raise UsageError(f"{compression} takes no compression level (got {level})", "drop `--compression-level`")
        if not bounds[0] <= level <= bounds[1]:
            raise UsageError(
                f"compression level {level} is out of range for {compression}",
                f"{compression} levels are {bounds[0]} to {bounds[1]}",
            )
    if jobs is not None and jobs <= 0:
        raise UsageError(f"`-j {jobs}`: the number of cores must be at least 1", "omit `-j` to use all cores")


@dataclass(frozen=True)
class PipInputs:
    """A venv on a base interpreter, filled by uv."""

    requirement_files: tuple[Path, ...] = ()
    packages: tuple[str, ...] = ()
    python: str | None = None
    system_site_packages: bool = False
    compile_tests: bool = False  # byte-compile packages' test suites too (`sqenv.builders.bytecode`)
    python_version: str | None = None  # `--from`: the Python the lock was made with (checked, major.minor)


@dataclass(frozen=True)
class CondaInputs:
    """A conda environment solved and installed by py-rattler."""

    environment_file: Path | None = None
    explicit_file: Path | None = None
    lock_from: Path | None = None
    specs: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    pip_requirements: tuple[str, ...] = ()
    pip_requirement_files: tuple[Path, ...] = ()
    variables: tuple[tuple[str, str], ...] = ()
    channel_alias: str | None = None
    offline: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True)
class WrapInputs:
    """An existing directory tree (or container) to pack as it is."""

    source: Path | None = None
    wrapper_paths: tuple[str, ...] = ()
    mask: bool = False


@dataclass(frozen=True)
class BuildSpec:
    """Everything one build needs; frozen so stages cannot change the plan."""

    prefix: Path
    kind: Kind
    pip: PipInputs = field(default_factory=PipInputs)
    conda: CondaInputs = field(default_factory=CondaInputs)
    wrap: WrapInputs = field(default_factory=WrapInputs)
    pre_install: Path | None = None
    post_install: Path | None = None
    environ_file: Path | None = None
    compression: str = "zstd"
    mpi: str | None = None
    target_cpu: str | None = None  # archspec name (`--target-cpu`, config); None: the build host's
    optimize_sdists: bool = False  # uv builds sdists with CFLAGS/CXXFLAGS `-march=` for target_cpu
    engine: str | None = None
    base_image: Path | None = None
    base_image_ref: bool = False  # launches use base_image where it is (a site's path), not a copy in PREFIX
    profile: str | None = None  # the site config's [profiles.NAME]: binds and variables applied at launch
    compression_level: int | None = None
    jobs: int | None = None
    force: bool = False
    build_dir: Path | None = None
    index: IndexOptions = field(default_factory=IndexOptions)

    def __post_init__(self) -> None:
        check_prefix_path(self.prefix)
        check_packing(self.compression, self.compression_level, self.jobs)
        if self.on_base_image and self.engine not in (None, "apptainer", "singularity"):
            raise UsageError(f"a layer on a base image runs in that container: `--engine {self.engine}` cannot run it",
                             "leave `--engine` out (apptainer), or give `--engine singularity`")  # fmt: skip
        if self.base_image_ref and self.base_image is None:
            raise UsageError("`--base-image-ref` needs `--base-image SIF`")

    @property
    def builder(self) -> str:
        """Which builder fills it (`builders.base.BUILDERS`): the kind's, `sif` for a wrapped container."""
        if self.kind == "wrap" and self.wrap.source is not None and self.wrap.source.is_file():
            return "sif"
        return self.kind

    @property
    def on_base_image(self) -> bool:
        """A pip layer on the base image's own Python (builders/base_image): built and run inside it.
        (A conda env or a wrapped tree brings its own Python: its base image is only the OS.)"""
        return self.kind == "pip" and self.base_image is not None

    def inputs(self) -> dict:
        """The inputs as JSON-able data, for the metadata and `sqenv history`."""

        def clean(obj: object) -> object:
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if v not in (None, (), [], False)}
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            if isinstance(obj, Path):
                return str(obj)
            return obj

        data = asdict(self)
        for key in ("prefix", "force", "build_dir"):
            data.pop(key)
        if not self.index.record():
            data.pop("index")
        for other in ("pip", "conda", "wrap"):
            if other != self.kind:
                data.pop(other)
        return clean(data)
