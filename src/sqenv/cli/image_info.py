"""`sqenv info IMAGE.sif|IMAGE.sqfs`: the lock and SBOM an image carries (`sqenv.export.sifreader`)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sqenv.export.sifreader import read


def show(image: Path, *, as_json: bool) -> int:
    found = read(image)
    lock = found.lock
    if as_json:
        print(json.dumps({"image": str(image), "lock": lock, "sbom": found.sbom, "found_in": found.where}, indent=1))
        return 0
    out = Console(highlight=False, markup=False)
    packages = lock.get("packages", [])
    out.print(Text.assemble((str(image), "bold"), f"  ({lock.get('kind')} environment, {len(packages)} packages)"))
    python = lock.get("python") or {}
    if python:
        out.print(f"  python         {python.get('version')} ({python.get('executable')})")
    if lock.get("platform"):
        out.print(f"  platform       {lock['platform']}")
    sbom = found.sbom or {}
    if sbom:
        out.print(f"  sbom           CycloneDX {sbom.get('specVersion')}, {len(sbom.get('components', []))} components")
    out.print(f"  lock           {found.where}")
    table = Table(box=None, pad_edge=False)
    for col in ("package", "version", "manager", "build", "sha256"):
        table.add_column(col)
    for pkg in packages:
        table.add_row(pkg["name"], pkg.get("version", ""), pkg.get("manager", ""), pkg.get("build") or "",
                      (pkg.get("sha256") or "-")[:16])  # fmt: skip
    out.print(table)
    return 0
