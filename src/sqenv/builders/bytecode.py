"""Byte-compiling what uv installed, at the mount path, when uv could not do it itself.

When uv hard-links from its cache (`sqenv.builders.uv.linked_install`) it
installs into the staging directory by its real path, so its own
`--compile-bytecode` would write that path (a random build directory) into
every `.pyc` as the code's file name: images of one lock would differ and
tracebacks would name the build directory. So uv installs without compiling
and this step compiles the same files the way uv does (`compileall.compile_file`
with `force=True`, errors muted like pip and uv, one interpreter per core),
through the mount: the `.pyc` files are byte for byte what uv writes.

Only the distributions that install added are compiled (uv compiles what it
installs, not the packages `uv venv --seed` put there), found by their
`RECORD` files.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from sqenv.builders.base import BuildContext

# Runs in the environment's interpreter (argv: workers, the file listing the paths, one a line):
# that many interpreters, worker N compiling every Nth path of the list, all at once, like uv's
# pool (no pipes: a worker fed through one would hold the next back until its pipe drained).
_COMPILE = r"""
import subprocess, sys
WORKER = '''
import compileall, sys, warnings
n, jobs = int(sys.argv[2]), int(sys.argv[3])
with open(sys.argv[1], encoding="utf-8", errors="surrogateescape") as fh:
    paths = [p for p in fh.read().split(chr(10)) if p][n::jobs]
with warnings.catch_warnings():
    warnings.filterwarnings("ignore")
    for path in paths:
        compileall.compile_file(path, force=True, quiet=2)
'''
jobs = max(1, int(sys.argv[1]))
procs = [subprocess.Popen([sys.executable, "-c", WORKER, sys.argv[2], str(n), str(jobs)]) for n in range(jobs)]
sys.exit(max(proc.wait() for proc in procs))
"""


def dist_infos(site_packages: Path | None) -> set[str]:
    """The names of the `*.dist-info` directories in site-packages (none if there is none)."""
    if site_packages is None or not site_packages.is_dir():
        return set()
    return {p.name for p in site_packages.glob("*.dist-info")}


def sources_of(site_packages: Path, info: str) -> list[str]:
    """The `.py` files a distribution's RECORD lists inside site-packages, relative to it (not
    stat'ed: thousands of calls for nothing, the compiler ignores a missing one)."""
    try:
        with open(site_packages / info / "RECORD", newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    found = []
    for row in rows:
        if not row or not row[0].endswith(".py"):
            continue
        rel = os.path.normpath(row[0])
        if rel.startswith(("..", "/")) or "__pycache__" in rel.split(os.sep):
            continue
        found.append(rel)  # one a RECORD names but that is gone: the compiler skips it, as uv's does
    return found


def cpus() -> int:
    """The CPUs this process may run on (a Slurm job's share, not the node's), like uv's worker count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def compile_new(ctx: BuildContext, site_packages: Path, before: set[str], jobs: int | None = None) -> int:
    """Compile the `.py` files of the distributions added since `before` (names of dist-info
    directories), seen at the mount path; how many files were given to the compiler."""
    rel_site = site_packages.relative_to(ctx.staging)
    mounted = Path(ctx.mount_path) / rel_site
    added = sorted(dist_infos(site_packages) - before)
    files = [str(mounted / rel) for info in added for rel in sources_of(site_packages, info)]
    files = [f for f in files if "\n" not in f and "\r" not in f]
    if not files:
        return 0
    listing = ctx.workdir / "compile.list"
    listing.write_text("".join(f + "\n" for f in files), encoding="utf-8", errors="surrogateescape")
    workers = str(min(jobs or cpus(), len(files)))
    ctx.run(
        [f"{ctx.mount_path}/bin/python", "-c", _COMPILE, workers, str(listing)],
        what="byte-compiling the installed packages",
    )
    listing.unlink(missing_ok=True)
    return len(files)
