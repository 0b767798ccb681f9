"""`sqenv module PREFIX [--dir DIR] [--name NAME/VERSION] [--format lua|tcl]`.

A module file for an install (`sqenv.integrations.module`).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from sqenv.integrations import module
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "module",
        help="write an Lmod (Lua) or Environment Modules (Tcl) module file for an install",
        description="Write a module file that puts PREFIX/bin first on PATH and sets what `PREFIX/bin/activate` sets.",
    )
    p.add_argument("prefix", type=Path, metavar="PREFIX")
    p.add_argument("--dir", type=Path, metavar="DIR", help="a MODULEPATH directory (default: ~/modulefiles)")
    p.add_argument("--name", metavar="NAME/VERSION", help="module name (default: the prefix's name)")
    p.add_argument("--format", choices=("lua", "tcl"), default="lua", help="lua (Lmod, default) or tcl")
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    done = module.write(args.prefix, directory=args.dir, name=args.name, fmt=args.format)
    ui.info(f"Wrote {done.path}")
    ui.info(f"Use it with:  module use {shlex.quote(str(done.directory))}; module load {done.name}")
    return 0
