"""`sqenv export PREFIX [--format F] [-o FILE] | --sif OUT.sif`: parses, calls `sqenv.export.formats`
(package lists) or `sqenv.export.sif` (a self-contained container), prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqenv.errors import UsageError
from sqenv.export.formats import FORMATS, ExportOptions, export, write
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "export",
        help="write an install's exact packages as an explicit file, environment.yml or requirements",
        description="Write the packages of PREFIX's current version: `explicit` (conda URLs and sha256), "
        "`yml` (environment.yml with exact versions) or `requirements` (pip pins).",
    )
    p.add_argument("prefix", type=Path, metavar="PREFIX")
    p.add_argument("--format", choices=FORMATS,
                   help="output format (default: explicit for conda installs, requirements for pip ones)")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument(
        "--sif",
        type=Path,
        metavar="OUT.sif",
        help="write a self-contained Apptainer image of the environment (base OS + environment)",
    )
    p.add_argument(
        "--base-image",
        type=Path,
        metavar="OS.sif",
        help="with --sif: the operating system image (default: the install's container.sif, "
        "else $SQENV_APPTAINER_IMAGE)",
    )
    p.add_argument("--build-dir", type=Path, metavar="DIR", help="with --sif: where to unpack (default: $TMPDIR)")
    p.add_argument("--prefix-inside", help=argparse.SUPPRESS)  # cotainr: the env also at its path
    p.add_argument("--mount-point", action="append", default=[], help=argparse.SUPPRESS)  # cotainr --system binds
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    if args.sif is not None or args.base_image is not None:
        if args.sif is None or args.format or args.output:
            raise UsageError("`--sif OUT.sif` goes alone (with `--base-image`), not with --format or --output")
        from sqenv.export.sif import export as export_sif

        export_sif(
            args.prefix,
            args.sif,
            args.base_image,
            ui,
            args.build_dir,
            inside=args.prefix_inside,
            mount_points=args.mount_point,
        )
        return 0
    options = ExportOptions(prefix=args.prefix, format=args.format, output=args.output)
    text = export(options, ui)
    if options.output:
        write(text, options.output)
    else:
        sys.stdout.write(text)
    return 0
