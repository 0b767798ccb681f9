#!/usr/bin/env python3
"""Core benchmark: a sqenv install against a plain venv of the same packages, side by side.

Timings alternate between the two, so a busy machine slows both alike.

    python bench/core.py [--packages numpy scipy pandas matplotlib] [--runs 20] [--workdir DIR]

Prints one table of figures and ratios measured in this run (medians of
--runs repetitions where timing). Nothing here asserts: targets are printed
next to the figures. Needs strace and a warm network to PyPI on first use.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from uv import find_uv_bin

BASE = "/usr/bin/python3"
IMPORT = "import numpy, scipy.linalg, pandas"


def timed(argv: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def side_by_side(a: list[str], b: list[str], runs: int, env_b: dict | None = None) -> tuple[float, float]:
    """Medians of `a` and `b`, run alternately so that drift of a shared machine hits both alike."""
    ta, tb = [], []
    for _ in range(runs):
        ta.append(timed(a))
        tb.append(timed(b, env_b))
    return statistics.median(ta), statistics.median(tb)


def median_time(argv: list[str], runs: int, env: dict | None = None, before=None) -> float:
    samples = []
    for _ in range(runs):
        if before:
            before()
        samples.append(timed(argv, env))
    return statistics.median(samples)


def count_files(root: Path) -> int:
    return sum(len(d) + len(f) for _, d, f in os.walk(root))


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


_MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter();"
    " subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
    " print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measured(argv: list[str]) -> tuple[float, float]:
    """Wall time (s) of a command and the peak resident memory (MB) of its largest process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], check=True, capture_output=True, text=True)
    seconds, kb = out.stdout.split()
    return float(seconds), int(kb) / 1024


def daemon_rss_mb(runtime: Path) -> float:
    """Resident memory of the image servers (`sqenv-enter --serve`) serving mounts under `runtime`, in MB."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if cmdline[1:2] != [b"--serve"] or str(runtime).encode() not in b" ".join(cmdline):
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def plain_venv(target: Path, packages: list[str]) -> list[str]:
    uv = find_uv_bin()
    py = target / "bin" / "python"
    return [
        "sh",
        "-c",
        f"{uv} venv -q --seed --python {BASE} {target} && "
        f"{uv} pip install -q --python {py} --compile-bytecode {' '.join(packages)}",
    ]


def sqenv_create(target: Path, packages: list[str]) -> list[str]:
    return [sys.executable, "-m", "sqenv", "create", "-q", str(target), "--python", BASE, *packages]


def syscalls_touching(prefix: Path, argv: list[str], env: dict | None = None) -> tuple[int, int]:
    """(path syscalls naming PREFIX that reach the host file system, all that name it).

    After sqenv-enter binds the image over PREFIX, paths under PREFIX resolve
    inside the image (a local FUSE mount), not on the parallel file system:
    only the calls before that bind count against the file system.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(
            ["strace", "-f", "-qq", "-e", "trace=%file,mount", "-o", out.name, *argv],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lines = out.read().splitlines()
    named = [line for line in lines if str(prefix) in line and "mount(" not in line]
    host = 0
    for line in lines:
        if re.search(r"mount\([^,]*, \"" + re.escape(str(prefix)) + r"\"", line):
            break
        if str(prefix) in line:
            host += 1
    else:
        host = len(named)
    return host, len(named)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=["numpy", "scipy", "pandas", "matplotlib"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--build-runs", type=int, default=3, help="builds of each, alternating (median)")
    parser.add_argument("--import-stmt", default=IMPORT, help="what the import rows time and trace")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    for tool in ("strace", "mksquashfs", "fusermount3"):
        if not shutil.which(tool):
            sys.exit(f"bench: `{tool}` is needed")
    work = Path(tempfile.mkdtemp(prefix="sqenv-bench-", dir=args.workdir))
    venv, install = work / "venv", work / "install"
    rows: list[tuple[str, str, str, str, str]] = []
    try:
        print(f"warming the uv cache with {' '.join(args.packages)} ...", file=sys.stderr)
        subprocess.run(plain_venv(work / "warm", args.packages), check=True)
        shutil.rmtree(work / "warm")

        builds: list[tuple[float, float, float, float]] = []
        for i in range(args.build_runs):  # alternating, the last pair is kept for the rest
            if i:
                shutil.rmtree(venv)
                shutil.rmtree(install)
            builds.append((*measured(plain_venv(venv, args.packages)), *measured(sqenv_create(install, args.packages))))
        t_venv = statistics.median(b[0] for b in builds)
        m_venv = max(b[1] for b in builds)
        t_create = statistics.median(b[2] for b in builds)
        m_create = max(b[3] for b in builds)
        rows.append(
            (
                f"build time (warm uv cache, median of {args.build_runs})",
                f"{t_venv:.1f} s",
                f"{t_create:.1f} s",
                f"{t_create / t_venv:.2f}x",
                "<= 1.3x",
            )
        )
        rows.append(
            (
                "build: peak memory of one process",
                f"{m_venv:,.0f} MB",
                f"{m_create:,.0f} MB",
                f"{m_create / m_venv:.2f}x",
                "-",
            )
        )

        programs = len(os.listdir(install / "bin"))
        rows.append(
            (
                "files on disk",
                f"{count_files(venv):,}",
                f"{count_files(install):,}",
                f"programs + {count_files(install) - programs}",
                "<= programs + 6",
            )
        )
        image = sum(p.stat().st_size for p in install.glob("*.sqfs"))
        installed = tree_size(venv)
        rows.append(
            (
                "size",
                f"{installed / 1e6:,.0f} MB",
                f"{image / 1e6:,.0f} MB image",
                f"{image / installed:.2f}",
                "<= 0.32",
            )
        )

        py_venv, py_inst = str(venv / "bin" / "python"), str(install / "bin" / "python")
        runtime = work / "rt"
        env = dict(os.environ, SQENV_RUNTIME_DIR=str(runtime))
        subprocess.run([py_inst, "-c", "pass"], env=env, check=True)  # mount it
        t_plain, t_warm = side_by_side([py_venv, "-c", "pass"], [py_inst, "-c", "pass"], args.runs, env)
        rows.append(
            (
                "`python -c pass`, warm",
                f"{t_plain * 1e3:.1f} ms",
                f"{t_warm * 1e3:.1f} ms",
                f"+{(t_warm - t_plain) * 1e3:.1f} ms",
                "<= +5 ms",
            )
        )

        def unmount() -> None:
            for line in open("/proc/self/mountinfo"):
                point = line.split()[4]
                if point.startswith(str(runtime)):
                    subprocess.run(["fusermount3", "-u", point], check=False)
            deadline = time.monotonic() + 5
            while runtime.exists() and any(runtime.glob("*/")) and time.monotonic() < deadline:
                time.sleep(0.01)

        t_cold = median_time([py_inst, "-c", "pass"], max(5, args.runs // 2), env, before=unmount)
        rows.append(
            (
                "`python -c pass`, cold (mounts)",
                f"{t_plain * 1e3:.1f} ms",
                f"{t_cold * 1e3:.1f} ms",
                f"+{(t_cold - t_plain) * 1e3:.1f} ms",
                "-",
            )
        )
        subprocess.run([py_inst, "-c", "pass"], env=env, check=True)

        i_plain, i_inst = side_by_side(
            [py_venv, "-c", args.import_stmt], [py_inst, "-c", args.import_stmt], args.runs, env
        )
        rows.append(
            (
                f"`{args.import_stmt}`, warm",
                f"{i_plain:.3f} s",
                f"{i_inst:.3f} s",
                f"{i_inst / i_plain:.2f}x",
                "<= 1.10x",
            )
        )

        rows.append(("memory of the node's image mount", "-", f"{daemon_rss_mb(runtime):.1f} MB", "one per node", "-"))
        host_v, _ = syscalls_touching(venv, [py_venv, "-c", args.import_stmt])
        host_i, all_i = syscalls_touching(install, [py_inst, "-c", args.import_stmt], env)
        rows.append(
            (
                "path syscalls on PREFIX's file system",
                f"{host_v:,}",
                f"{host_i}",
                f"{all_i:,} more go to the image",
                "<= 10",
            )
        )
        unmount()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nsqenv core benchmark — {platform.node()}: {platform.platform()}, {os.cpu_count()} cores, "
        f"base {BASE}, packages: {' '.join(args.packages)}, medians of {args.runs}\n"
    )
    header = ("measure", "plain venv", "sqenv", "ratio / delta", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
