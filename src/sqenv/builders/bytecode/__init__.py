"""Byte-compiling what uv installed, at the mount path (a create's; uv compiles in base images).

When uv hard-links from its cache (`sqenv.builders.uv.linked_install`) it
installs into the staging directory by its real path, so its own
`--compile-bytecode` would write that path (a random build directory) into
every `.pyc` as the code's file name: images of one lock would differ and
tracebacks would name the build directory. So uv installs without compiling
and this step compiles the same files the way uv does (`compileall.compile_file`
with `force=True`, errors muted like pip and uv, one interpreter per core),
through the mount: the `.pyc` files are what uv writes, with the image's fixed
time in their headers (what `sqenv.pack.reproducible` would put there). A
copying install is compiled here too, so both give the same image.

Those bytes depend only on the file, the interpreter and that fixed path and
time, so finished `.pyc` files are kept in sqenv's cache and hard-linked again
by the next build of the same packages, as uv does with the files themselves:
compiling was most of a create's time (`worker.py`).

Every distribution's files are compiled, found by their `RECORD` files: also
what `uv venv --seed` put there (uv compiles only what it installs), since a
plain venv compiles those on first use and an image never can: setuptools'
`.pth` imports `_distutils_hack` at every start, 0.6 ms to compile each time.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from sqenv.builders.base import BuildContext
from sqenv.builders.workdir import private_dir
from sqenv.config import cache_dir
from sqenv.pack.reproducible import epoch

WORKER = Path(__file__).with_name("worker.py")
"""Run by the environment's interpreter: compiles, through the cache (`worker.py` says how)."""


def dist_infos(site_packages: Path | None) -> set[str]:
    """The names of the `*.dist-info` directories in site-packages (none if there is none)."""
    if site_packages is None or not site_packages.is_dir():
        return set()
    return {p.name for p in site_packages.glob("*.dist-info")}


def sources_of(site_packages: Path, info: str) -> list[tuple[int, str]]:
    """The `.py` files a distribution's RECORD lists inside site-packages, relative to it, with the
    sizes it gives (0 where it gives none): not stat'ed, thousands of calls for nothing, and the
    compiler ignores a missing file."""
    try:
        with open(site_packages / info / "RECORD", newline="", encoding="utf-8") as fh:
            text = fh.read()
        # quoted fields (a comma in a name) need the csv module; the rest splits 5x faster
        rows = list(csv.reader(text.splitlines())) if '"' in text else [line.split(",") for line in text.splitlines()]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    found = []
    for row in rows:
        if not row or not row[0].endswith(".py"):
            continue
        rel = os.path.normpath(row[0])
        if rel.startswith(("..", "/")) or "__pycache__" in rel.split(os.sep):
            continue
        size = row[2] if len(row) > 2 else ""
        found.append((int(size) if size.isdigit() else 0, rel))  # gone since: skipped, as uv's does
    return found


def cpus() -> int:
    """The CPUs this process may run on (a Slurm job's share, not the node's), like uv's worker count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Compiled:
    """What `compile_site` did: files given to the compiler, pycs taken from the cache, pycs made."""

    files: int = 0
    taken: int = 0
    compiled: int = 0
    tests: int = 0  # files of test suites left uncompiled

    def summary(self) -> str:
        text = f"{self.files:,} file{'s' if self.files != 1 else ''}"
        text += f", {self.taken:,} from sqenv's cache" if self.taken else ""
        return text + (f"; {self.tests:,} of test suites left out" if self.tests else "")


TEST_DIRS = frozenset({"tests", "test"})
"""Where packages keep their own test suites (`pandas/tests`, `scipy/*/tests`): half the byte code
of numpy, scipy, pandas and matplotlib, imported only by those packages' tests."""


def in_tests(rel: str) -> bool:
    """Whether a file lies in a test-suite directory (its file name itself does not count)."""
    return not TEST_DIRS.isdisjoint(rel.split(os.sep)[:-1])


def compile_site(ctx: BuildContext, site_packages: Path, jobs: int | None = None, *, tests: bool = False) -> Compiled:
    """Compile the `.py` files of every distribution in site-packages, seen at the mount path; test
    suites only with `tests` (`--compile-tests`).

    Without their pycs test modules still import: Python compiles them in memory each time (the
    image is read-only), which only a run of a package's own test suite notices. Compiling them
    was half of a first create's CPU time for nobody."""
    mounted = f"{ctx.mount_path}/{site_packages.relative_to(ctx.staging)}/"
    infos = sorted(dist_infos(site_packages))
    # largest first: the workers share them out in that order (`worker.py`), so none is left alone
    # with a big module at the end while the other CPUs wait
    sized = sorted((entry for info in infos for entry in sources_of(site_packages, info)), key=lambda e: -e[0])
    files = [mounted + rel for _, rel in sized if "\n" not in rel and "\r" not in rel]
    if not tests:
        kept = [f for f in files if not in_tests(f[len(mounted) :])]
        left, files = len(files) - len(kept), kept
    else:
        left = 0
    if not files:
        return Compiled(tests=left)
    listing = ctx.workdir / "compile.list"
    listing.write_text("".join(f + "\n" for f in files), encoding="utf-8", errors="surrogateescape")
    workers = str(min(jobs or cpus(), len(files)))
    # -S: no `.pth` of the environment runs while it is built (setuptools' would import, and so write
    # the byte code of, `_distutils_hack` as a side effect, or not, as PYTHONDONTWRITEBYTECODE says)
    output = ctx.run(
        [f"{ctx.mount_path}/bin/python", "-S", str(WORKER), str(listing), str(cache_of(ctx) or ""),
         str(epoch()), workers, ctx.mount_path, str(ctx.staging)],
        what="byte-compiling the installed packages",
    )  # fmt: skip
    listing.unlink(missing_ok=True)
    counts = [line.split()[1:] for line in output.splitlines() if line.startswith("sqenv-bytecode ")]
    taken, made = sum(int(t) for t, _ in counts), sum(int(c) for _, c in counts)
    return Compiled(files=len(files), taken=taken, compiled=made, tests=left)


def cache_of(ctx: BuildContext) -> Path | None:
    """sqenv's cache of finished `.pyc` files (`cache_dir()/bytecode`, made 0700); None to compile
    everything again (SQENV_BYTECODE_CACHE=0). What is in it goes into images as it is, so it is
    held to more than uv's cache: `private_dir`."""
    if os.environ.get("SQENV_BYTECODE_CACHE", "").lower() in ("0", "no", "off", "false"):
        return None
    hint = "set SQENV_CACHE_DIR to a directory of yours that only you can write to (or SQENV_BYTECODE_CACHE=0)"
    return private_dir(cache_dir() / "bytecode", "sqenv's byte-code cache", hint)
