"""`sqenv info PREFIX [--json] [--verify]`: what an install holds and costs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sqenv.errors import PrefixError
from sqenv.pack.squashfs import sha256_of
from sqenv.publish import metadata
from sqenv.publish.layout import Install
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser("info", help="show an install's packages, sizes and files")
    p.add_argument("prefix", type=Path, metavar="PREFIX")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify", action="store_true", help="check the images' checksums")
    add_output_options(p)
    p.set_defaults(execute=execute)


def files_on_disk(prefix: Path) -> int:
    return sum(len(dirs) + len(files) for _root, dirs, files in os.walk(prefix))


def summary(install: Install) -> dict:
    data = metadata.load(install.metadata)
    version = metadata.current(data)
    images = version["images"]
    return {
        "prefix": str(install.prefix),
        "kind": data["kind"],
        "version": version["number"],
        "created": version["created"],
        "first_created": data["created"],
        "python": version.get("python"),
        "mount_path": data["mount_path"],
        "layers": version["layers"],
        "image_size": sum(i["size"] for i in images),
        "installed_size": sum(i["installed_size"] for i in images),
        "files_inside": sum(i["files_inside"] for i in images),
        "files_on_disk": files_on_disk(install.prefix),
        "programs": version["programs"],
        "packages": version["packages"],
    }


def verify(install: Install, data: dict) -> list[str]:
    bad = []
    version = metadata.current(data)
    for image in version["images"]:
        path = install.image(image["file"])
        if not path.is_file():
            bad.append(f"{image['file']}: missing")
        elif sha256_of(path) != image["sha256"]:
            bad.append(f"{image['file']}: checksum mismatch (corrupt)")
    return bad


def execute(args: argparse.Namespace, ui: UI) -> int:
    install = Install.open(args.prefix)
    info = summary(install)
    if args.verify:
        bad = verify(install, metadata.load(install.metadata))
        if bad:
            raise PrefixError(
                "the install is damaged: " + "; ".join(bad),
                "rebuild it with `sqenv create --force` or roll back with `sqenv rollback`",
            )
        info["verified"] = True
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    out = Console(highlight=False)
    py = info["python"] or {}
    out.print(f"[bold]{info['prefix']}[/]  ({info['kind']} environment, version {info['version']})")
    out.print(f"  created        {info['created']}")
    if py:
        out.print(f"  python         {py.get('version')} ({py.get('executable')})")
    out.print(
        f"  image          {info['image_size'] / 1e6:,.1f} MB in {len(info['layers'])} layer(s)"
        f"  (installed size {info['installed_size'] / 1e6:,.1f} MB)"
    )
    out.print(f"  files          {info['files_inside']:,} inside the image, {info['files_on_disk']:,} on disk")
    out.print(f"  programs       {len(info['programs'])} in {info['prefix']}/bin")
    if args.verify:
        out.print("  checksums      ok")
    table = Table(box=None, pad_edge=False)
    for col in ("package", "version", "manager", "channel / build"):
        table.add_column(col)
    for pkg in info["packages"]:
        extra = " ".join(x for x in (pkg.get("channel"), pkg.get("build")) if x)
        table.add_row(pkg["name"], pkg["version"], pkg.get("manager", "pip"), extra)
    out.print(table)
    return 0
