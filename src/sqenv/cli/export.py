"""`sqenv export PREFIX [--format F] [-o FILE]`: parses, calls `sqenv.publish.export`, prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqenv.publish.export import FORMATS, ExportOptions, export, write
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
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    options = ExportOptions(prefix=args.prefix, format=args.format, output=args.output)
    text = export(options, ui)
    if options.output:
        write(text, options.output)
    else:
        sys.stdout.write(text)
    return 0
