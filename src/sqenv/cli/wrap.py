"""`sqenv wrap SOURCE --prefix DIR -w PATH[,PATH...] [--mask]`: launchers for what already exists.

SOURCE is a container image (`IMAGE.sif`, Tykky's `wrap-container`: the
programs under the `-w` paths inside it, run with apptainer) or a directory
(Tykky's `wrap-install`: the tree packed into an image like any environment,
its prefix fixed, or with `--mask` shown at its original path).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sqenv.cli.create import use_it
from sqenv.engines import CHOICES
from sqenv.errors import InputError, UsageError
from sqenv.inputs import COMPRESSIONS
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "wrap",
        help="launchers for an existing container (.sif) or directory tree",
        description="Put launchers in DIR/bin for the programs of an existing container image (run with "
        "apptainer) or directory tree (a conda env or venv made elsewhere: packed into one image).",
    )
    p.add_argument("source", type=Path, metavar="SOURCE", help="IMAGE.sif, or a directory")
    p.add_argument("--prefix", type=Path, required=True, metavar="DIR", help="the install to create")
    p.add_argument(
        "-w",
        "--wrapper-paths",
        required=True,
        metavar="PATH[,PATH...]",
        help="where the programs are: paths inside the container, or relative to the directory (e.g. bin)",
    )
    p.add_argument(
        "--mask",
        action="store_true",
        help="directory: show the image at the tree's original path (no relocation) instead of /mnt/sqenv",
    )
    p.add_argument("--engine", choices=CHOICES, help="directory: how its launchers run programs (default: auto)")
    p.add_argument(
        "--base-image",
        type=Path,
        metavar="SIF",
        help="directory: the container the apptainer engine runs it in (an image of this system's OS)",
    )
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--compression", choices=COMPRESSIONS, help="image compression (default: zstd level 3)")
    p.add_argument("--compression-level", type=int, metavar="N", help="compressor level")
    p.add_argument(
        "--build-dir", type=Path, metavar="DIR", help="where to build (default: $SQENV_BUILD_DIR or $TMPDIR)"
    )
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="cores for packing (default: all)")
    add_output_options(p)
    p.set_defaults(execute=execute)


def _nested(a: Path, b: Path) -> bool:
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return a == b or a in b.parents or b in a.parents


def execute(args: argparse.Namespace, ui: UI) -> int:
    source: Path = args.source
    prefix = args.prefix.absolute()
    given = args.wrapper_paths.split(",")
    if not source.exists():
        raise InputError(f"`{source}` does not exist", "give a container image (.sif) or a directory")
    if _nested(source, prefix):
        raise UsageError(f"the prefix `{prefix}` and `{source}` must not contain each other", "choose another prefix")
    if args.base_image is not None and not args.base_image.is_file():
        raise InputError(f"the base image `{args.base_image}` does not exist")
    if source.is_file():
        for flag, value in (("--mask", args.mask), ("--engine", args.engine), ("--base-image", args.base_image)):
            if value:
                raise UsageError(f"{flag} applies to directories; a container runs with apptainer as it is")
        wrap_container(args, source, prefix, given, ui)
    else:
        wrap_directory(args, source, prefix, given, ui)
    ui.info(use_it(prefix.absolute()))
    return 0


def wrap_container(args: argparse.Namespace, source: Path, prefix: Path, given: list[str], ui: UI) -> None:
    """A container's programs, through the pipeline (builders/sif: no image of ours)."""
    from sqenv.builders.sif import check_image, container_paths, runtime
    from sqenv.inputs import BuildSpec, WrapInputs
    from sqenv.pipeline import create

    image = check_image(source)
    paths = container_paths(given)
    runtime()  # before any work: apptainer (or singularity) must be there
    create(
        BuildSpec(prefix=prefix, kind="wrap", wrap=WrapInputs(source=image, wrapper_paths=paths), force=args.force), ui
    )


def wrap_directory(args: argparse.Namespace, source: Path, prefix: Path, given: list[str], ui: UI) -> None:
    from sqenv.builders import container as wrap
    from sqenv.config import resolve_build_options
    from sqenv.inputs import BuildSpec, WrapInputs
    from sqenv.pipeline import create

    if not os.access(source, os.R_OK | os.X_OK):
        raise InputError(f"`{source}` is not readable by you")
    source = Path(os.path.normpath(source.absolute()))
    if args.mask and source == Path("/"):
        raise UsageError("`--mask` cannot show an image over `/`")
    paths = wrap.wrapper_paths(source, given)
    given = {key: getattr(args, key) for key in ("build_dir", "compression", "compression_level", "jobs", "quiet")}
    values, _ = resolve_build_options(given)  # the config's defaults; forced values win, with a warning
    spec = BuildSpec(
        prefix=prefix,
        kind="wrap",
        wrap=WrapInputs(source=source, wrapper_paths=paths, mask=args.mask),
        compression=values["compression"] or "zstd",
        compression_level=values["compression_level"],
        jobs=values["jobs"],
        force=args.force,
        build_dir=values["build_dir"],
        engine=args.engine,
        base_image=args.base_image.absolute() if args.base_image else None,
    )
    create(spec, ui)
