#!/usr/bin/env python3
"""Core benchmark: a sqenv install against a plain venv of the same packages, side by side.

Timings alternate between the two, so a busy machine slows both alike.

    python bench/core.py [--packages numpy scipy pandas matplotlib] [--runs 20] [--repeat 5] [--workdir DIR]

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
from dataclasses import dataclass
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
    " r = resource.getrusage(resource.RUSAGE_CHILDREN);"
    " print(time.perf_counter() - t, r.ru_maxrss, r.ru_utime + r.ru_stime, r.ru_oublock)"
)


@dataclass
class Build:
    """One build: wall time (s), peak resident memory of its largest process (MB), CPU time of all
    its processes (s: user + system, what a busy machine does not inflate much), data it wrote to
    storage (MB), and what it printed on stderr."""

    seconds: float
    peak_mb: float
    cpu: float
    written_mb: float
    stderr: str


SETTLE = 0.0
"""Seconds of quiet before each timed build (`--settle`): see `one_run` on this VM's file system."""


def measured(argv: list[str], env: dict | None = None) -> Build:
    if SETTLE:
        os.sync()
        time.sleep(SETTLE)
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], check=True, capture_output=True, text=True, env=env)
    seconds, kb, cpu, blocks = out.stdout.split()
    return Build(float(seconds), int(kb) / 1024, float(cpu), int(blocks) * 512 / 1e6, out.stderr)


_PHASE = re.compile(r"^✓ (.+?) \((?:[^()]*; )?([\d.]+) s\)$", re.M)


def phases(stderr: str, total: float) -> dict[str, float]:
    """Seconds of each step `sqenv create` printed (`✓ TITLE (...; 1.2 s)`), the rest as `other`."""
    found = {re.sub(r" on Python .*| [\d,]+ files.*| \(.*", "", title).strip(): float(sec)
             for title, sec in _PHASE.findall(stderr)}  # fmt: skip
    found["other (start, checks, lock, publish, cleanup)"] = total - sum(found.values())
    return found


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


def sqenv_create(target: Path, packages: list[str], *options: str) -> list[str]:
    """Default verbosity: each step's time is printed (`phases`)."""
    return [sys.executable, "-m", "sqenv", "create", str(target), "--python", BASE, *options, *packages]


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


@dataclass
class Row:
    """One measure of one run: the plain venv's figure, sqenv's, and how they compare."""

    name: str
    plain: float | None
    sqenv: float
    unit: str  # "s", "ms", "MB", "n"
    compare: str  # "ratio", "delta" (sqenv - plain), "over" (sqenv - base, for counts), "none"
    target: str
    base: float = 0.0


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:,.1f} MB"
    return f"{value:,.0f}"


def compared(row: Row) -> float | None:
    if row.compare == "over":
        return row.sqenv - row.base
    if row.plain is None or row.compare == "none":
        return None
    if row.compare == "ratio":
        return row.sqenv / row.plain
    return row.sqenv - row.plain


def fuse_requests(server: list[str], image: Path, mnt: Path, argv_of) -> dict[str, int]:
    """FUSE requests by type during one warm run of `argv_of(mnt)` (the server's debug output)."""
    mnt.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen([*server, str(image), str(mnt)], stderr=log, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not os.path.ismount(mnt) and time.monotonic() < deadline:
                time.sleep(0.01)
            subprocess.run(argv_of(mnt), check=True, stdout=subprocess.DEVNULL)  # warm the caches
            log.flush()
            start = os.path.getsize(log.name)
            subprocess.run(argv_of(mnt), check=True, stdout=subprocess.DEVNULL)
            time.sleep(0.2)
            log.seek(start)
            counts: dict[str, int] = {}
            for op in re.findall(r"^unique: \d+, opcode: (\w+)", log.read(), re.M):
                counts[op] = counts.get(op, 0) + 1
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)
            proc.wait(timeout=10)
    return counts


def one_run(
    args: argparse.Namespace, work: Path, steps: dict[str, list[float]]
) -> tuple[list[Row], dict[str, dict[str, int]]]:
    """Build both ways and measure everything once (timings alternate inside); `steps` collects
    the seconds of each step of each sqenv build."""
    rows: list[Row] = []
    builds: list[tuple[Build, Build]] = []
    warm: list[Build] = []
    full: list[Build] = []  # with --compile-tests: byte code for everything the plain venv has
    # Nothing is deleted between timed builds (all goes with `work` at the end): a file system that
    # avoids reusing inodes freed in the last minutes (this VM's ext4 without a journal) makes
    # every file created just after thousands were deleted cost more, whichever build follows.
    for i in range(args.build_runs):  # alternating, the last pair is kept for the rest
        venv, install, again = work / f"venv-{i}", work / f"install-{i}", work / f"again-{i}"
        # sqenv's own cache (its finished byte code) empty, as on a first build of these packages;
        # then once more with what that build left there, as on a rebuild or another environment
        # with the same packages (uv's cache is warm for all three)
        cache = {**os.environ, "SQENV_CACHE_DIR": str(work / f"sqenv-cache-{i}")}
        plain, sq = measured(plain_venv(venv, args.packages)), measured(sqenv_create(install, args.packages), cache)
        builds.append((plain, sq))
        warm.append(measured(sqenv_create(again, args.packages), cache))
        cold = {**os.environ, "SQENV_CACHE_DIR": str(work / f"sqenv-cache-full-{i}")}
        full.append(measured(sqenv_create(work / f"full-{i}", args.packages, "--compile-tests"), cold))
        for name, sec in phases(sq.stderr, sq.seconds).items():
            steps.setdefault(name, []).append(sec)
        for name, sec in phases(warm[-1].stderr, warm[-1].seconds).items():
            steps.setdefault(f"{name} [byte code from sqenv's cache]", []).append(sec)
    rows.append(Row("build time (warm uv cache)", statistics.median(p.seconds for p, _ in builds),
                    statistics.median(s.seconds for _, s in builds), "s", "ratio", "<= 1.25x"))  # fmt: skip
    rows.append(Row("build time, sqenv's byte-code cache warm too", statistics.median(p.seconds for p, _ in builds),
                    statistics.median(w.seconds for w in warm), "s", "ratio", "-"))  # fmt: skip
    rows.append(Row("build time, --compile-tests (cache empty)", statistics.median(p.seconds for p, _ in builds),
                    statistics.median(f.seconds for f in full), "s", "ratio", "-"))  # fmt: skip
    rows.append(Row("build: CPU time, all processes", statistics.median(p.cpu for p, _ in builds),
                    statistics.median(s.cpu for _, s in builds), "s", "ratio", "-"))  # fmt: skip
    rows.append(Row("build: data written to storage", statistics.median(p.written_mb for p, _ in builds),
                    statistics.median(s.written_mb for _, s in builds), "MB", "ratio", "-"))  # fmt: skip
    rows.append(Row("build: peak memory of one process", max(p.peak_mb for p, _ in builds),
                    max(s.peak_mb for _, s in builds), "MB", "ratio", "-"))  # fmt: skip
    programs = sum(1 for p in (install / "bin").iterdir() if p.is_symlink())
    rows.append(Row(f"files on disk (programs: {programs})", count_files(venv), count_files(install), "n", "over",
                    "<= programs + 9 (5 + 3 activate scripts + bin)", base=programs))  # fmt: skip
    image = sum(p.stat().st_size for p in install.glob("*.sqfs"))
    rows.append(Row("size (image / installed)", tree_size(venv) / 1e6, image / 1e6, "MB", "ratio", "<= 0.32"))

    py_venv, py_inst = str(venv / "bin" / "python"), str(install / "bin" / "python")
    runtime = work / "rt"
    env = dict(os.environ, SQENV_RUNTIME_DIR=str(runtime))
    subprocess.run([py_inst, "-c", "pass"], env=env, check=True)  # mount it
    t_plain, t_warm = side_by_side([py_venv, "-c", "pass"], [py_inst, "-c", "pass"], args.runs, env)
    rows.append(Row("`python -c pass`, warm", t_plain * 1e3, t_warm * 1e3, "ms", "delta", "<= +3 ms"))

    def unmount() -> None:
        for line in open("/proc/self/mountinfo"):
            point = line.split()[4]
            if point.startswith(str(runtime)):
                subprocess.run(["fusermount3", "-u", point], check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:  # the image server removes its directory as it goes: gone between two calls is done
                if not any(runtime.glob("*/")):
                    break
            except FileNotFoundError:
                break
            time.sleep(0.01)

    t_cold = median_time([py_inst, "-c", "pass"], max(5, args.runs // 2), env, before=unmount)
    rows.append(Row("`python -c pass`, cold (mounts)", t_plain * 1e3, t_cold * 1e3, "ms", "delta", "<= +25 ms"))
    subprocess.run([py_inst, "-c", "pass"], env=env, check=True)
    i_plain, i_inst = side_by_side([py_venv, "-c", args.import_stmt], [py_inst, "-c", args.import_stmt], args.runs, env)
    rows.append(Row(f"`{args.import_stmt}`, warm", i_plain, i_inst, "s", "ratio", "<= 1.08x"))
    rows.append(Row("memory of the node's image server", None, daemon_rss_mb(runtime), "MB", "none", "one per node"))
    host_v, _ = syscalls_touching(venv, [py_venv, "-c", args.import_stmt])
    host_i, _ = syscalls_touching(install, [py_inst, "-c", args.import_stmt], env)
    rows.append(Row("path syscalls on PREFIX's file system (import)", host_v, host_i, "n", "none", "<= 10"))
    unmount()

    # FUSE requests of one warm import, by type: sqenv's server against squashfuse_ll (if installed)
    layer = next(install.glob("*.sqfs"))
    enter = str(install / "sqenv-enter")
    requests = {"sqenv-enter --serve": fuse_requests([enter, "--serve", "-d"], layer, work / "m-sqenv", importer(args))}
    if shutil.which("squashfuse_ll"):
        requests["squashfuse_ll"] = fuse_requests(["squashfuse_ll", "-f", "-d"], layer, work / "m-sfll", importer(args))
    return rows, requests


def importer(args: argparse.Namespace):
    """The import, run straight from a mounted image tree (a venv that lives there)."""
    return lambda mnt: [str(mnt / "bin" / "python"), "-c", args.import_stmt]


def comparison(first: Row, comp: list[float]) -> str:
    """The ratio or difference column: median (min – max) over runs."""
    if not comp:
        return "-"
    if first.compare == "ratio":
        one = lambda v: f"{v:.2f}x"  # noqa: E731
    elif first.compare == "over":
        one = lambda v: f"programs {v:+,.0f}"  # noqa: E731
    else:
        one = lambda v: f"{v:+.1f} {first.unit}"  # noqa: E731
    rng = f" ({one(min(comp))} – {one(max(comp))})" if len(comp) > 1 else ""
    return one(statistics.median(comp)) + rng


def spread(values: list[float], unit: str) -> str:
    if len(values) < 2:
        return ""
    return f" ({fmt(min(values), unit)} – {fmt(max(values), unit)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=["numpy", "scipy", "pandas", "matplotlib"])
    parser.add_argument("--runs", type=int, default=20, help="launches/imports per figure (median)")
    parser.add_argument("--build-runs", type=int, default=3, help="builds of each per repeat, alternating (median)")
    parser.add_argument("--repeat", type=int, default=1, help="whole comparisons; prints medians and spread")
    parser.add_argument("--import-stmt", default=IMPORT, help="what the import rows time and trace")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--settle", type=float, default=0.0, metavar="S",
                        help="sync and wait S seconds before each timed build (65: no build pays for the inodes "
                        "an earlier one freed, on file systems that avoid reusing them at once)")  # fmt: skip
    args = parser.parse_args()
    global SETTLE
    SETTLE = args.settle
    # as on a user's shell: the plain venv writes its missing byte code on first use (the seeded
    # setuptools' `_distutils_hack`, imported at every start), which this variable would forbid
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for tool in ("strace", "mksquashfs", "fusermount3"):
        if not shutil.which(tool):
            sys.exit(f"bench: `{tool}` is needed")
    runs: list[list[Row]] = []
    requests: dict[str, dict[str, int]] = {}
    steps: dict[str, list[float]] = {}
    works: list[Path] = []  # removed at the end, not between runs (`one_run` says why)
    try:
        for n in range(args.repeat):
            work = Path(tempfile.mkdtemp(prefix="sqenv-bench-", dir=args.workdir))
            works.append(work)
            if n == 0:
                print(f"warming the uv cache with {' '.join(args.packages)} ...", file=sys.stderr)
                subprocess.run(plain_venv(work / "warm", args.packages), check=True)
            print(f"run {n + 1} of {args.repeat} ...", file=sys.stderr)
            rows, requests = one_run(args, work, steps)
            runs.append(rows)
    finally:
        for work in works:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nsqenv core benchmark — {platform.node()}: {platform.platform()}, {os.cpu_count()} cores, "
        f"base {BASE}, packages: {' '.join(args.packages)}; {args.repeat} run(s), each with medians of "
        f"{args.runs} alternating launches and {args.build_runs} alternating builds; median (min – max) over runs\n"
    )
    table = [("measure", "plain venv", "sqenv", "ratio / delta", "target")]
    for i, first in enumerate(runs[0]):
        column = [r[i] for r in runs]
        plain = [r.plain for r in column if r.plain is not None]
        sq = [r.sqenv for r in column]
        comp = [c for c in map(compared, column) if c is not None]
        cell_plain = fmt(statistics.median(plain), first.unit) + spread(plain, first.unit) if plain else "-"
        cell_sq = fmt(statistics.median(sq), first.unit) + spread(sq, first.unit)
        cell_cmp = comparison(first, comp)
        table.append((first.name, cell_plain, cell_sq, cell_cmp, first.target))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("\nsqenv create, by step (median (min – max) over all sqenv builds):")
    for name, secs in steps.items():
        print(f"  {name}: {statistics.median(secs):.1f} s{spread(secs, 's')}")
    print(f"  load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\nFUSE requests of one warm `{args.import_stmt}` (last run), by type:")
    for server, counts in requests.items():
        total = sum(counts.values())
        top = ", ".join(f"{op} {n:,}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        print(f"  {server}: {total:,} ({top})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
