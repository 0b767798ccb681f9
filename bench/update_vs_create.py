"""Update vs create: adding one pure-Python package must take <= 10% of a full create.

    python bench/update_vs_create.py [--dir DIR] [--package idna] [--runs 3]

Same run, warm caches: a first (untimed) create fills uv's cache with the
scientific stack and the added package; then a timed `sqenv create` of
numpy/scipy/pandas/matplotlib on /usr/bin/python3 and timed `sqenv update
PREFIX PKG` runs (each on a fresh copy of the created install's version 1,
by rolling back and updating again), through the real CLI. Prints both times
and the ratio; exits 1 if the ratio is above the target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STACK = ["numpy", "scipy", "pandas", "matplotlib"]
BASE_PYTHON = "/usr/bin/python3"
TARGET = 0.10


def sqenv(*args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(["sqenv", *args], capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"`sqenv {' '.join(args)}` failed:\n{proc.stderr}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where to build (default: a temp dir, removed after)")
    parser.add_argument("--package", default="idna", help="the pure-Python package to add (default: idna)")
    parser.add_argument("--runs", type=int, default=3, help="timed updates (the median is used)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sqenv-bench-", dir=args.dir))
    try:
        print(f"warming caches: create {' '.join(STACK)} {args.package} ...", flush=True)
        sqenv("create", str(root / "warm"), *STACK, args.package, "--python", BASE_PYTHON, "-q")
        shutil.rmtree(root / "warm")
        prefix = root / "env"
        create = sqenv("create", str(prefix), *STACK, "--python", BASE_PYTHON, "-q")
        print(f"create  {' '.join(STACK)}: {create:6.2f} s", flush=True)
        updates = []
        for run in range(args.runs):
            if run:
                sqenv("rollback", str(prefix), "--to", "1", "-q")
            updates.append(sqenv("update", str(prefix), args.package, "--keep", "10", "-q"))
            print(f"update  +{args.package} (run {run + 1}): {updates[-1]:6.2f} s", flush=True)
        update = statistics.median(updates)
        ratio = update / create
        verdict = "ok" if ratio <= TARGET else "TOO SLOW"
        print(f"\nupdate {update:.2f} s / create {create:.2f} s = {ratio:.1%} (target <= {TARGET:.0%}): {verdict}")
        return 0 if ratio <= TARGET else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
