"""`sqenv info PREFIX [--json] [--verify]`: what an install holds and costs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sqenv.errors import PrefixError
from sqenv.publish.hpc import lines as hpc_lines
from sqenv.publish.info import InfoOptions
from sqenv.publish.info import info as read_info
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser("info", help="show an install's packages, sizes and files (or an image's lock: IMAGE.sif|.sqfs)")
    p.add_argument("prefix", type=Path, metavar="PREFIX|IMAGE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify", action="store_true", help="check the images' checksums")
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    if args.prefix.is_file():  # an image sqenv made: its lock and SBOM
        from sqenv.cli.image_info import show

        return show(args.prefix, as_json=args.json)
    info, problems = read_info(InfoOptions(prefix=args.prefix, verify=args.verify))
    if args.json:
        print(json.dumps(info, indent=1))
        return 1 if problems else 0
    out = Console(highlight=False, markup=False)  # paths and package names are not markup
    py = info["python"] or {}
    out.print(Text.assemble((info["prefix"], "bold"), f"  ({info['kind']} environment, version {info['version']})"))
    for problem in problems:
        ui.error(PrefixError(problem.what, problem.fix))
    out.print(f"  created        {info['created']}")
    if py:
        out.print(f"  python         {py.get('version')} ({py.get('executable')})")
    if info.get("base_image"):  # a layer on a container: the packages below are what the layer adds
        base = info["base_image"]
        how = "referenced" if base.get("referenced") else "copied into the install"
        out.print(f"  base image     {base.get('path')} ({how}, {base.get('size', 0) / 1e6:,.0f} MB)", soft_wrap=True)
        out.print(f"  sha256         {base.get('sha256')}", soft_wrap=True)
    out.print(
        f"  image          {info['image_size'] / 1e6:,.1f} MB in {len(info['layers'])} layer(s)"
        f"  (installed size {info['installed_size'] / 1e6:,.1f} MB)"
    )
    out.print(f"  files          {info['files_inside']:,} inside the image, {info['files_on_disk']:,} on disk")
    out.print(f"  programs       {len(info['programs'])} in {info['prefix']}/bin")
    for label, text in hpc_lines(info):
        out.print(f"  {label:<14} {text}")
    if args.verify:
        out.print("  checksums      ok")
    table = Table(box=None, pad_edge=False)
    if info.get("base_image"):
        out.print("  packages the layer adds to the base image:")
    for col in ("package", "version", "manager", "channel / build"):
        table.add_column(col)
    for pkg in info["packages"]:
        extra = " ".join(x for x in (pkg.get("channel"), pkg.get("build")) if x)
        table.add_row(pkg["name"], pkg["version"], pkg.get("manager", "pip"), extra)
    out.print(table)
    return 1 if problems else 0
