#!/usr/bin/env python3
"""Cost as environments grow: small (six), medium (numpy scipy pandas matplotlib), large (torch).

    python bench/size.py [--sizes small,medium,large] [--runs 3] [--import-runs 7] [--workdir DIR]

For each size, with a warm uv cache (one untimed plain build first):
  - one instrumented `sqenv create` (untimed): its build directory and the
    install's own directory are walked every --disk-interval seconds for their
    high-water marks (walking costs CPU, so this run is kept out of the timings);
  - --runs builds each of a plain `uv venv --seed` + `uv pip install
    --compile-bytecode` and `sqenv create`, alternating (the order flips every
    pair), both with the same process-tree memory sampling;
  - `sqenv update PREFIX idna` (median of --update-runs, rolled back between);
  - the size's main import, warm (the image already mounted) and cold (a fresh
    SQENV_RUNTIME_DIR, so the image is not mounted yet on this node; the page
    cache is warm, as on a node that ran the job before), alternating with the
    plain venv.

Memory: each measured command runs under a small wrapper that is a child
subreaper (orphans of the tree stay in it); a sampler sums the resident memory
(statm) of every process below the wrapper every --mem-interval seconds. A sum
of RSS counts shared pages once per process, so it is an upper bound; the
largest single process (ru_maxrss, exact) is printed beside it.

Prints figures next to the goals and writes bench/results/size.{md,json}.
Nothing here asserts. Everything built is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from uv import find_uv_bin

BASE = "/usr/bin/python3"
UPDATE_PKG = "idna"
SIZES: dict[str, tuple[list[str], str]] = {
    "small": (["six"], "import six"),
    "medium": (["numpy", "scipy", "pandas", "matplotlib"], "import numpy, scipy.linalg, pandas"),
    "large": (["torch"], "import torch"),
}
GOALS = {"create": 1.3, "memory_mb": 512, "temp": 1.1, "update": 0.10}
RESULTS = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")

# Runs argv as a child subreaper, so processes that daemonise stay below it;
# reaps them, and prints wall time, exit code and the largest child's peak RSS.
_WRAPPER = r"""
import ctypes, json, os, resource, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
t = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
while True:
    pid, status = os.wait()
    if pid == child.pid:
        break
took = time.perf_counter() - t
child.returncode = os.waitstatus_to_exitcode(status)
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
out = {"seconds": took, "code": child.returncode, "maxrss_kb": maxrss, "pid": child.pid}
print(json.dumps(out), file=sys.__stderr__)
"""


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_rss(root: int) -> tuple[int, int, str]:
    """(sum of RSS of all descendants of `root`, largest RSS, its name), bytes."""
    kids = _children_map()
    todo, total, top, top_name = list(kids.get(root, [])), 0, 0, ""
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                rss = int(fh.read().split()[1]) * PAGE
            with open(f"/proc/{pid}/comm") as fh:
                name = fh.read().strip()
        except (OSError, IndexError, ValueError):
            continue
        total += rss
        if rss > top:
            top, top_name = rss, name
    return total, top, top_name


def disk_usage(root: Path) -> int:
    """Bytes allocated under `root` (st_blocks, hard links once); files may vanish while walking."""
    return disk_usage_linked(root)[0]


def disk_usage_linked(root: Path) -> tuple[int, int]:
    """(bytes allocated under `root`, of which in files with more than one link).

    In a build directory, a file with several links shares its blocks with uv's
    cache (uv hard-links from it where it can): those bytes are not new disk use.
    """
    seen: set[tuple[int, int]] = set()
    total = linked = 0
    stack = [str(root)]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                        if not entry.is_dir(follow_symlinks=False):
                            linked += st.st_blocks * 512
                    total += st.st_blocks * 512
        except OSError:
            continue
    return total, linked


def count_files(root: Path) -> int:
    return sum(len(d) + len(f) for _, d, f in os.walk(root))


@dataclass
class Run:
    """One measured command: wall time, memory of its process tree, disk high-water marks."""

    seconds: float = 0.0
    code: int = 0
    tree_peak: int = 0  # bytes, sum of RSS over the tree at the worst sample
    top_peak: int = 0  # bytes, largest single process seen by the sampler
    top_name: str = ""
    maxrss: int = 0  # bytes, largest child's peak (ru_maxrss of the wrapper's children)
    disk_peaks: dict[str, int] = field(default_factory=dict)  # label -> bytes
    disk_total_peak: int = 0
    linked_peak: int = 0  # bytes of the first disk path in multiply-linked files, at most
    log: str = ""
    pid: int = 0  # of the measured command


def measure(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    *,
    mem_interval: float = 0.1,
    disk: dict[str, Path] | None = None,
    disk_interval: float = 1.0,
) -> Run:
    """Run argv under the subreaper wrapper while sampling its tree's memory (and optionally disk)."""
    run = Run()
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, *argv], env=env, stdout=err, stderr=subprocess.PIPE, text=True
        )
        stop = threading.Event()

        def sample_memory() -> None:
            while not stop.is_set():
                total, top, name = tree_rss(proc.pid)
                run.tree_peak = max(run.tree_peak, total)
                if top > run.top_peak:
                    run.top_peak, run.top_name = top, name
                stop.wait(mem_interval)

        def sample_disk() -> None:
            assert disk is not None
            while not stop.is_set():
                sizes, first = {}, True
                for label, path in disk.items():
                    sizes[label], linked = disk_usage_linked(path)
                    if first:
                        run.linked_peak, first = max(run.linked_peak, linked), False
                for label, size in sizes.items():
                    run.disk_peaks[label] = max(run.disk_peaks.get(label, 0), size)
                run.disk_total_peak = max(run.disk_total_peak, sum(sizes.values()))
                stop.wait(disk_interval)

        threads = [threading.Thread(target=sample_memory, daemon=True)]
        if disk:
            threads.append(threading.Thread(target=sample_disk, daemon=True))
        for thread in threads:
            thread.start()
        _, wrapper_err = proc.communicate()
        stop.set()
        for thread in threads:
            thread.join()
    lines = wrapper_err.strip().splitlines()
    try:
        info = json.loads(lines[-1])
    except (IndexError, ValueError):
        sys.exit(f"bench: the measuring wrapper failed:\n{wrapper_err}")
    run.seconds, run.code, run.maxrss = info["seconds"], info["code"], info["maxrss_kb"] * 1024
    run.pid = info["pid"]
    run.log = log.read_text(errors="replace") + "\n".join(lines[:-1])
    if run.code != 0:
        sys.exit(f"bench: `{' '.join(argv)}` failed ({run.code}):\n{run.log[-4000:]}")
    return run


def plain_argv(target: Path, packages: list[str]) -> list[str]:
    uv = find_uv_bin()
    return [
        "sh",
        "-c",
        f"{uv} venv -q --seed --python {BASE} {target} && "
        f"{uv} pip install -q --python {target}/bin/python --compile-bytecode {' '.join(packages)}",
    ]


def sqenv_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sqenv", *args]


STEPS = {"creating": "venv", "resolving": "install", "packing": "pack", "publishing": "publish"}


def phases(log: str, total: float) -> dict[str, float]:
    """Step times from sqenv's plain (non-terminal) output, `✓ Title (…; 2.6 s)`; the rest is `other`."""
    found: dict[str, float] = {}
    for match in re.finditer(r"^✓ (\w+)[^\n]*?([\d.]+) s\)\s*$", log, re.M):
        step = STEPS.get(match.group(1).lower(), match.group(1).lower())
        found[step] = found.get(step, 0.0) + float(match.group(2))
    found["other"] = max(0.0, total - sum(found.values()))
    return found


def pack_rate(log: str) -> float | None:
    """MB/s of the pack step: installed MB read (as sqenv reports it) over the step's time."""
    match = re.search(r"^✓ Packing [\d,]+ files \(([\d,]+) MB\)[^\n]*?\(([\d.]+) s\)", log, re.M)
    if not match or float(match.group(2)) == 0:
        return None
    return float(match.group(1).replace(",", "")) / float(match.group(2))


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def unmount_under(root: Path, wait: bool = True) -> None:
    """Unmount the image servers' mounts below `root` (ours: we made `root`); `wait` for a runtime dir
    to be cleaned up by the servers' watchers."""
    for line in open("/proc/self/mountinfo"):
        point = line.split()[4]
        if point.startswith(str(root) + "/") or point == str(root):
            subprocess.run(["fusermount3", "-u", point], check=False, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while wait and time.monotonic() < deadline:
        try:  # the server's watcher removes its mount point, and the runtime dir with the last one
            if not any(entry.is_dir() for entry in os.scandir(root)):
                return
        except FileNotFoundError:
            return
        time.sleep(0.02)


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def bench_size(name: str, work: Path, args: argparse.Namespace) -> dict:
    packages, stmt = SIZES[name]
    if name == "large" and args.torch != "torch":
        packages = [args.torch]
    d = work / name
    d.mkdir()
    logs = d / "logs"
    logs.mkdir()
    build_dir = d / "build"
    build_dir.mkdir()
    env = dict(os.environ, SQENV_BUILD_DIR=str(build_dir))
    say = lambda msg: print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    say(f"warm-up: plain build of {' '.join(packages)} {UPDATE_PKG} (untimed)")
    measure(plain_argv(d / "warm", [*packages, UPDATE_PKG]), logs / "warm.log")
    shutil.rmtree(d / "warm")

    say("instrumented sqenv create (untimed): build dir and install dir high-water marks")
    probe_parent = d / "probe"
    probe_parent.mkdir()
    probe = measure(
        sqenv_argv("create", str(probe_parent / "env"), "--python", BASE, *packages),
        logs / "probe.log",
        env,
        disk={"build": build_dir, "install": probe_parent},
        disk_interval=args.disk_interval,
    )
    probe_install = disk_usage(probe_parent / "env")
    shutil.rmtree(probe_parent)

    plain_runs: list[Run] = []
    sqenv_runs: list[Run] = []
    venv, inst_parent = d / "venv", d / "sq"
    inst_parent.mkdir()
    install = inst_parent / "env"
    for i in range(args.runs):
        if i:
            shutil.rmtree(venv)
            shutil.rmtree(install)

        def do_plain(i: int = i) -> None:
            plain_runs.append(measure(plain_argv(venv, packages), logs / f"plain-{i}.log"))

        def do_sqenv(i: int = i) -> None:
            create = sqenv_argv("create", str(install), "--python", BASE, *packages)
            sqenv_runs.append(measure(create, logs / f"create-{i}.log", env))

        for step in (do_plain, do_sqenv) if i % 2 == 0 else (do_sqenv, do_plain):
            step()
        say(f"pair {i + 1}: plain {plain_runs[-1].seconds:.1f} s, sqenv {sqenv_runs[-1].seconds:.1f} s")

    installed = disk_usage(venv)
    installed_files = count_files(venv)
    image = sum(p.stat().st_size for p in install.glob("*.sqfs"))
    install_disk = disk_usage(install)

    updates: list[Run] = []
    for k in range(args.update_runs):
        if k:
            subprocess.run(sqenv_argv("rollback", str(install), "--to", "1", "-q"), check=True, env=env)
        updates.append(
            measure(sqenv_argv("update", str(install), UPDATE_PKG, "--keep", "10"), logs / f"update-{k}.log", env)
        )
        say(f"update +{UPDATE_PKG}: {updates[-1].seconds:.2f} s")

    say(f"imports: `{stmt}` warm and cold, {args.import_runs} each")
    py_venv, py_inst = str(venv / "bin" / "python"), str(install / "bin" / "python")
    warm_rt = d / "rt-warm"
    warm_env = dict(os.environ, SQENV_RUNTIME_DIR=str(warm_rt))
    subprocess.run([py_inst, "-c", stmt], check=True, env=warm_env)  # mounts it
    subprocess.run([py_venv, "-c", stmt], check=True)
    t_plain, t_warm, t_cold = [], [], []
    for i in range(args.import_runs):
        t_plain.append(timed([py_venv, "-c", stmt]))
        t_warm.append(timed([py_inst, "-c", stmt], warm_env))
        cold_rt = d / f"rt-cold-{i}"
        t_cold.append(timed([py_inst, "-c", stmt], dict(os.environ, SQENV_RUNTIME_DIR=str(cold_rt))))
        unmount_under(cold_rt)
    unmount_under(warm_rt)

    med = statistics.median
    plain_s, create_s = med(r.seconds for r in plain_runs), med(r.seconds for r in sqenv_runs)
    update_s = med(r.seconds for r in updates)
    median_run = sorted(sqenv_runs, key=lambda r: r.seconds)[len(sqenv_runs) // 2]  # its steps are shown
    result = {
        "size": name,
        "packages": packages,
        "import": stmt,
        "runs": args.runs,
        "plain_s": [r.seconds for r in plain_runs],
        "create_s": [r.seconds for r in sqenv_runs],
        "plain_median_s": plain_s,
        "create_median_s": create_s,
        "create_ratio": create_s / plain_s,
        "create_phases_s": phases(median_run.log, median_run.seconds),
        "create_phases_all_s": [phases(r.log, r.seconds) for r in sqenv_runs],
        "pack_mb_per_s": pack_rate(median_run.log),
        "build_dir_linked_peak": probe.linked_peak,
        "probe_create_s": probe.seconds,
        "installed_bytes": installed,
        "installed_files": installed_files,
        "image_bytes": image,
        "install_disk_bytes": install_disk,
        "plain_tree_peak": max(r.tree_peak for r in plain_runs),
        "plain_top": max(r.maxrss for r in plain_runs),
        "create_tree_peak": max(r.tree_peak for r in [*sqenv_runs, probe]),
        "create_top": max(r.maxrss for r in [*sqenv_runs, probe]),
        "create_top_name": max([*sqenv_runs, probe], key=lambda r: r.top_peak).top_name,
        "update_tree_peak": max(r.tree_peak for r in updates),
        "build_dir_peak": probe.disk_peaks.get("build", 0),
        "install_dir_peak": probe.disk_peaks.get("install", 0),
        "disk_total_peak": probe.disk_total_peak,
        "probe_install_bytes": probe_install,
        "update_s": [r.seconds for r in updates],
        "update_median_s": update_s,
        "update_ratio": update_s / create_s,
        "import_plain_s": med(t_plain),
        "import_warm_s": med(t_warm),
        "import_cold_s": med(t_cold),
    }
    shutil.rmtree(d)
    return result


def table(results: list[dict]) -> list[str]:
    g = GOALS
    rows = [
        ("packages", lambda r: " ".join(r["packages"]), "-"),
        ("installed (plain venv)", lambda r: f"{mb(r['installed_bytes'])}, {r['installed_files']:,} files", "-"),
        ("image / installed", lambda r: f"{mb(r['image_bytes'])} ({r['image_bytes'] / r['installed_bytes']:.2f})", "-"),
        ("plain build (uv venv + uv pip install)", lambda r: f"{r['plain_median_s']:.1f} s", "-"),
        ("`sqenv create`", lambda r: f"{r['create_median_s']:.1f} s", "-"),
        ("create / plain", lambda r: f"**{r['create_ratio']:.2f}×**", f"≤ {g['create']}×"),
        (
            "create: where the time goes (s, median run)",
            lambda r: ", ".join(f"{k} {v:.1f}" for k, v in r["create_phases_s"].items()) or "-",
            "-",
        ),
        ("pack throughput", lambda r: f"{r['pack_mb_per_s']:.0f} MB/s" if r["pack_mb_per_s"] else "-", "-"),
        (
            "build dir: bytes hard-linked (shared with uv's cache)",
            lambda r: mb(r["build_dir_linked_peak"]) + (" (all copied)" if r["build_dir_linked_peak"] < 1e6 else ""),
            "-",
        ),
        ("peak RSS, whole tree: plain", lambda r: mb(r["plain_tree_peak"]), "-"),
        (
            "peak RSS, whole tree: sqenv create",
            lambda r: f"**{mb(r['create_tree_peak'])}** (largest: {r['create_top_name']} {mb(r['create_top'])})",
            f"≤ {g['memory_mb']} MB",
        ),
        ("peak RSS, whole tree: sqenv update", lambda r: mb(r["update_tree_peak"]), "-"),
        (
            "build dir high-water / installed",
            lambda r: f"{mb(r['build_dir_peak'])} (**{r['build_dir_peak'] / r['installed_bytes']:.2f}**)",
            f"≤ {g['temp']}",
        ),
        (
            "build dir + image being written, peak",
            lambda r: f"{mb(r['disk_total_peak'])} ({r['disk_total_peak'] / r['installed_bytes']:.2f})",
            "-",
        ),
        (
            f"`sqenv update PREFIX {UPDATE_PKG}` / create",
            lambda r: f"{r['update_median_s']:.2f} s (**{r['update_ratio']:.1%}**)",
            f"≤ {g['update']:.0%}",
        ),
        ("import: plain venv", lambda r: f"{r['import_plain_s']:.3f} s", "-"),
        (
            "import: sqenv warm (mounted)",
            lambda r: f"{r['import_warm_s']:.3f} s ({r['import_warm_s'] / r['import_plain_s']:.2f}×)",
            "-",
        ),
        (
            "import: sqenv cold (not mounted)",
            lambda r: f"{r['import_cold_s']:.3f} s ({r['import_cold_s'] / r['import_plain_s']:.2f}×)",
            "-",
        ),
    ]
    head = ["measure", *(r["size"] for r in results), "goal"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cell, goal in rows:
        out.append("| " + " | ".join([label, *(cell(r) for r in results), goal]) + " |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--runs", type=int, default=3, help="timed builds of each kind, alternating (median)")
    parser.add_argument("--update-runs", type=int, default=2)
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--torch", default="torch", help="what the large size installs (default: torch from PyPI)")
    parser.add_argument("--disk-interval", type=float, default=0.5)
    parser.add_argument("--workdir", type=Path, help="where to build (default: $TMPDIR); all of it is removed")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    for size in sizes:
        if size not in SIZES:
            sys.exit(f"bench: unknown size `{size}` (choose from {', '.join(SIZES)})")
    for tool in ("mksquashfs", "fusermount3"):
        if not shutil.which(tool):
            sys.exit(f"bench: `{tool}` is needed")
    work = Path(tempfile.mkdtemp(prefix="sqenv-size-", dir=args.workdir))
    results = []
    started, load_before = time.time(), os.getloadavg()
    try:
        for size in sizes:
            results.append(bench_size(size, work, args))
    finally:
        unmount_under(work, wait=False)
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    header = (
        f"sqenv size benchmark — {platform.node()}: {platform.platform()}, {os.cpu_count()} cores, "
        f"base {BASE}, uv cache warm, {args.runs} alternating builds each (median), imports median of "
        f"{args.import_runs}; load average (1, 5, 15 min) at the start {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"at the end {' '.join(f'{x:.2f}' for x in load)}; "
        f"took {(time.time() - started) / 60:.1f} min"
    )
    lines = [header, "", *table(results)]
    print("\n" + "\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "size.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "size.json").write_text(json.dumps({"header": header, "results": results}, indent=1) + "\n")
    print(f"\nwritten: {RESULTS / 'size.md'}, {RESULTS / 'size.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
