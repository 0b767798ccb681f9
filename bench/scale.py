"""Start-up at scale: a plain venv vs sqenv vs sqenv after ``sqenv stage``, on a simulated
parallel file system shared by N virtual nodes (issue 12).

    python bench/scale.py [--nodes 1,2,4,8] [--rpn 1,8,32] [--variants venv,sqenv,staged]
                          [--start-cluster] [--rebuild]

Each cell runs ``srun -p multi -N nodes --ntasks-per-node RPN --overcommit python -c
"import numpy, scipy.linalg, pandas"`` with every node's client of the simulated file system
freshly mounted (cold client caches), and reports the time until the last rank finished,
the metadata operations the metadata server received for the job, and the bytes the
clients read. It then fits ``ops = per_node * nodes + per_rank * ranks`` per variant (op
counts are exact, so the fit is too) and extrapolates them with the latency model
(tests/infra/pfs/model.py) to 1,000 nodes x 128 ranks. Writes bench/results/scale.{csv,md,png}.

Needs root, Slurm's virtual cluster (``SQENV_SLURM_NODES=8 bash tests/infra/slurm.sh start``,
or ``--start-cluster``), Debian's python3-pyfuse3 (installed when missing) and matplotlib in
this Python for the plot. The environments live in /sqenv-pfs/envs (built when missing).
The jobs run as root; times are on a 2-core VM where all ranks of all nodes share two
cores, so they measure CPU contention as much as metadata: the op counts are the result.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "infra"))

import pfs  # noqa: E402

BACKING = Path("/sqenv-pfs")
ENVS = BACKING / "envs"
PACKAGES = ["numpy", "scipy", "pandas"]
IMPORT = "import numpy, scipy.linalg, pandas"
BASE_PYTHON = "/usr/bin/python3"
SQENV = str(ROOT / ".venv" / "bin" / "sqenv")
UV = str(ROOT / ".venv" / "bin" / "uv")
RESULTS = ROOT / "bench" / "results"
RUN_DIR = Path("/run/sqenv-slurm")
MARK = ".sqenv-bench-pfs"  # our backing directory carries this file


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def ensure_backing() -> None:
    """/sqenv-pfs: a root-owned directory this bench made (never someone else's path)."""
    if not BACKING.exists():
        BACKING.mkdir(mode=0o755)
        (BACKING / MARK).touch()
    st = BACKING.lstat()
    if not BACKING.is_dir() or BACKING.is_symlink() or st.st_uid != 0 or st.st_mode & 0o022:
        sys.exit(f"{BACKING} exists but is not a root-owned directory closed to others: remove it")
    if not (BACKING / MARK).exists() and any(p.name != "envs" for p in BACKING.iterdir()):
        sys.exit(f"{BACKING} holds files this bench did not make: remove it first")
    (BACKING / MARK).touch()
    ENVS.mkdir(mode=0o755, exist_ok=True)


def build_envs(rebuild: bool) -> None:
    venv, sq = ENVS / "venv", ENVS / "sqenv"
    if rebuild or not (venv / "bin" / "python").exists():
        print(f"building {venv} ...", file=sys.stderr)
        for cmd in (
            [UV, "venv", "-q", "--clear", "--python", BASE_PYTHON, str(venv)],
            [UV, "pip", "install", "-q", "--compile-bytecode", "--python", str(venv / "bin" / "python"), *PACKAGES],
        ):
            cp = sh(cmd)
            if cp.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{cp.stderr}")
    launcher = sq / "launcher"
    stageable = launcher.exists() and "\nsqenv_staged=\n" in launcher.read_text()
    if rebuild or not (sq / "bin" / "python").exists() or not stageable:  # staged programs need a new launcher
        print(f"building {sq} ...", file=sys.stderr)
        cmd = [SQENV, "create", str(sq), *PACKAGES, "--python", BASE_PYTHON, "-q", "--force"]
        cp = sh(cmd)
        if cp.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{cp.stderr}")


def cluster_nodes() -> list[str]:
    cp = sh(["sinfo", "-h", "-p", "multi", "-N", "-o", "%N %t"])
    return sorted(
        (line.split()[0] for line in cp.stdout.splitlines() if line.split()[1] in ("idle", "mix", "alloc")),
        key=lambda n: int(n[4:]),
    )


def ensure_cluster(n: int, wait_s: float = 900) -> None:
    """node1..nodeN idle in partition multi. Others share this machine's one Slurm (their
    tests restart it with fewer nodes): restart it only once no job is queued or running."""
    want = {f"node{i}" for i in range(1, n + 1)}
    deadline = time.monotonic() + wait_s
    while not want <= set(cluster_nodes()):
        jobs = sh(["squeue", "-h", "-o", "%A"])
        if time.monotonic() > deadline:
            sys.exit(f"the shared Slurm has not node1..node{n} and stays busy with other jobs: try later")
        if jobs.returncode != 0 or not jobs.stdout.strip():  # Slurm down, or up and idle: (re)start it
            env = dict(os.environ, SQENV_SLURM_NODES=str(n))
            cp = sh(["bash", str(ROOT / "tests" / "infra" / "slurm.sh"), "start"], env=env)
            if cp.returncode:
                sys.exit(f"slurm.sh start failed:\n{cp.stderr[-3000:]}")
        else:
            time.sleep(5)


def slurmd_pid(node: str) -> int:
    return int((RUN_DIR / f"slurmd-{node}.pid").read_text().strip())


def image_mounts(node: str) -> list[str]:
    """The node's image mounts made by our (root's) launches: sqenv-enter's own FUSE server
    (fstype `fuse`) or squashfuse_ll, in root's runtime directory."""
    lines = [line.split() for line in Path(f"/proc/{slurmd_pid(node)}/mountinfo").read_text().splitlines()]
    # only those on the node's visible /tmp (the last one mounted there): mounts that a restart
    # of the node covered with a fresh /tmp are out of reach, and in no launch's way
    tmp = [f[0] for f in lines if f[4] == "/tmp"]
    out = []
    for fields in lines:
        mnt, fstype = fields[4], fields[fields.index("-") + 1]
        if fstype in ("fuse", "fuse.squashfuse_ll", "fuse.squashfuse") and mnt.startswith("/tmp/sqenv-0/"):
            if not tmp or fields[1] == tmp[-1]:
                out.append(mnt)
    return out


def drop_image_mounts(nodes: list[str], wait_s: float = 15.0) -> None:
    """Let the image mounts idle out (SQENV_IDLE_TIMEOUT), then detach what is left: a mount
    that outlives its PFS client would read from a dead file system."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(image_mounts(n) for n in nodes):
        time.sleep(0.3)
    for n in nodes:
        for m in image_mounts(n):
            sh(["nsenter", f"--mount=/proc/{slurmd_pid(n)}/ns/mnt", "--", "fusermount3", "-u", "-z", m])


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SALLOC_", "SRUN_", "SBATCH_"))}
    env["SQENV_IDLE_TIMEOUT"] = "2"  # image mounts go away soon after the job: next run is cold
    return env


def run_cell(mds: pfs.MDS, variant: str, nodes: int, rpn: int) -> dict:
    names = [f"node{i}" for i in range(1, nodes + 1)]
    prefix = ENVS / ("venv" if variant == "venv" else "sqenv")
    python = str(prefix / "bin" / "python")
    clients = [pfs.Client(mds, BACKING, BACKING, n, mount_ns_pid=slurmd_pid(n)) for n in names]
    try:
        mds.stats(reset=True)
        alloc = ["-p", "multi", "-N", str(nodes), "-w", ",".join(names), "-n", str(nodes * rpn), "--overcommit"]
        step = ["srun", "--chdir=/tmp", python, "-c", IMPORT]  # staged: `python` from the staged bin
        stage_s = 0.0
        if variant == "staged":
            # the node-local programs `sqenv stage` made, as a job script puts them first on PATH
            q = shlex.quote
            script = (
                f"s0=$(date +%s.%N); bin=$({q(SQENV)} stage -q --print-path {q(str(prefix))}) || exit 9; "
                f"PATH=$bin:$PATH; export PATH; "  # salloc runs this on the login node: no local check of $bin
                f't0=$(date +%s.%N); {shlex.join(step[:2])} "$bin/python" -c {q(IMPORT)} || exit 8; t1=$(date +%s.%N); '
                f'echo "TIMES $s0 $t0 $t1"; {q(SQENV)} stage -q --remove {q(str(prefix))} >&2 || true'
            )
            cp = sh(["salloc", "-Q", *alloc, "sh", "-c", script], env=job_env(), cwd="/tmp", timeout=3600)
            times = [line for line in cp.stdout.splitlines() if line.startswith("TIMES ")]
            if cp.returncode or not times:
                raise RuntimeError(f"{variant} N={nodes} rpn={rpn} failed ({cp.returncode}):\n{cp.stderr[-3000:]}")
            s0, t0, t1 = map(float, times[0].split()[1:])
            wall, stage_s = t1 - t0, t0 - s0
        else:
            start = time.perf_counter()
            cp = sh([*step[:1], *alloc, *step[1:]], env=job_env(), cwd="/tmp", timeout=3600)
            wall = time.perf_counter() - start
            if cp.returncode:
                raise RuntimeError(f"{variant} N={nodes} rpn={rpn} failed ({cp.returncode}):\n{cp.stderr[-3000:]}")
        drop_image_mounts(names)
    finally:
        for c in clients:
            c.stop()
    st = mds.stats(reset=True)
    ops = pfs.total_ops(st)
    return {
        "variant": variant,
        "nodes": nodes,
        "rpn": rpn,
        "ranks": nodes * rpn,
        "time_s": round(wall, 3),
        "stage_s": round(stage_s, 3),
        "mds_ops": sum(ops.values()),
        **{f"op_{k}": ops.get(k, 0) for k in pfs.MDS_OPS},
        "mds_busy_s": round(st["busy_s"], 4),
        "mds_max_wait_ms": round(st["max_wait_s"] * 1e3, 3),
        "bytes_read": pfs.bytes_read(st),
    }


# ---------------------------------------------------------------- the model
def fit(rows: list[dict]) -> tuple[float, float]:
    """Least squares ops = a*nodes + b*ranks (no intercept)."""
    sxx = sum(r["nodes"] ** 2 for r in rows)
    syy = sum(r["ranks"] ** 2 for r in rows)
    sxy = sum(r["nodes"] * r["ranks"] for r in rows)
    sxo = sum(r["nodes"] * r["mds_ops"] for r in rows)
    syo = sum(r["ranks"] * r["mds_ops"] for r in rows)
    det = sxx * syy - sxy * sxy
    if det == 0:  # one shape only: all per rank
        return 0.0, syo / syy
    return (sxo * syy - syo * sxy) / det, (syo * sxx - sxo * sxy) / det


def seconds(t: float) -> str:
    return f"{t:,.2f} s" if t >= 1 else f"{t * 1e3:,.1f} ms"


def model_lines(rows: list[dict], params: pfs.Params) -> list[str]:
    out = [
        f"Model: MDS of {params.threads} threads x {params.service_s * 1e6:.0f} us service, "
        f"RTT {params.rtt_s * 1e6:.0f} us = {params.capacity:,.0f} metadata ops/s",
        "",
        "| variant | ops per node | ops per rank | fit max error | 1,000 nodes x 128 ranks: ops | "
        "MDS time (ops / capacity) | below one MDS-second? | one rank's own round trips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in ("venv", "sqenv", "staged"):
        rs = [r for r in rows if r["variant"] == variant]
        if not rs:
            continue
        a, b = fit(rs)
        err = max(abs(a * r["nodes"] + b * r["ranks"] - r["mds_ops"]) / max(r["mds_ops"], 1) for r in rs)
        p = pfs.predict(a * 1000 + b * 128_000, 128_000, a + b, params)
        out.append(
            f"| {variant} | {a:,.1f} | {b:,.1f} | {err:.1%} | {p['ops']:,.0f} | {seconds(p['drain_s'])} | "
            f"{'yes' if p['drain_s'] < 1 else 'no'} | {seconds(p['chain_s'])} |"
        )
        if variant == "venv":  # the python-mpi-bcast anchor: import scipy, 24,576 ranks, 27 s
            q = pfs.predict(a * 1536 + b * 24_576, 24_576, a + b, params)
            anchor = f"venv at 24,576 ranks (1,536 nodes x 16): {q['ops']:,.0f} ops, {q['drain_s']:,.0f} s of MDS time"
    if "anchor" in locals():
        out += ["", anchor + " (python-mpi-bcast measured 27 s for `import scipy` alone at that scale)"]
    return out


def table(rows: list[dict]) -> list[str]:
    out = [
        "| variant | nodes | ranks/node | ranks | time to last rank | stage | MDS ops | ops per rank | "
        "opens | lookups | MB read |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['variant']} | {r['nodes']} | {r['rpn']} | {r['ranks']} | {r['time_s']:.2f} s | "
            f"{r['stage_s']:.2f} s | {r['mds_ops']:,} | {r['mds_ops'] / r['ranks']:,.1f} | {r['op_open']:,} | "
            f"{r['op_lookup']:,} | {r['bytes_read'] / 1e6:,.1f} |"
        )
    return out


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed in this Python: no plot", file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    # one line per variant and ranks per node, against nodes: O(nodes) lines of one variant
    # lie on each other, O(ranks) ones stand apart by the ranks per node
    styles = {1: ("o", "-"), 8: ("s", "--"), 32: ("^", ":")}
    for variant, color in (("venv", "tab:red"), ("sqenv", "tab:blue"), ("staged", "tab:green")):
        for rpn in sorted({r["rpn"] for r in rows}):
            rs = sorted((r for r in rows if r["variant"] == variant and r["rpn"] == rpn), key=lambda r: r["nodes"])
            if not rs:
                continue
            marker, line = styles.get(rpn, ("x", "-."))
            label = f"{variant}, {rpn}/node"
            xs = [r["nodes"] for r in rs]
            ax1.plot(xs, [max(r["mds_ops"], 0.8) for r in rs], marker + line, color=color, label=label)
            ax2.plot(xs, [r["time_s"] for r in rs], marker + line, color=color, label=label)
    ax1.set(xscale="log", yscale="log", xlabel="nodes", ylabel="metadata ops at the server per job")
    ax2.set(xscale="log", xlabel="nodes", ylabel="time to last rank [s] (all ranks on 2 shared cores)")
    for ax in (ax1, ax2):
        ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        ax.set_xticks([], minor=True)
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylim(top=ax1.get_ylim()[1] * 30)  # room for the legend above the lines
    ax1.legend(fontsize=7, ncol=3, loc="upper left")
    ax1.set_title(IMPORT, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _num(v: str):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="1,2,4,8")
    ap.add_argument("--rpn", default="1,8,32")
    ap.add_argument("--variants", default="venv,sqenv,staged")
    ap.add_argument("--start-cluster", action="store_true", help="(re)start Slurm with as many nodes as needed")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the two environments")
    ap.add_argument("--resume", action="store_true", help="keep the cells already in the CSV")
    ap.add_argument("--out", default="scale", help="name of the result files under bench/results/")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the bench mounts file systems in the virtual nodes' namespaces")
    node_counts = [int(x) for x in a.nodes.split(",")]
    rpns = [int(x) for x in a.rpn.split(",")]
    variants = a.variants.split(",")
    if a.start_cluster:
        ensure_cluster(max(node_counts))
    have = cluster_nodes()
    want = [f"node{i}" for i in range(1, max(node_counts) + 1)]
    if not a.resume and not set(want) <= set(have):
        sys.exit(f"partition multi has {have or 'no nodes'}; need {want}: run with --start-cluster")
    ensure_backing()
    build_envs(a.rebuild)
    RESULTS.mkdir(parents=True, exist_ok=True)
    params = pfs.Params()
    rows: list[dict] = []
    csv_path = RESULTS / f"{a.out}.csv"
    if a.resume and csv_path.exists():
        with open(csv_path) as f:
            rows = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]
    done = {(r["variant"], r["nodes"], r["rpn"]) for r in rows}
    with pfs.MDS(BACKING, params, log=RESULTS / f"{a.out}-mds.log") as mds:
        for nodes in node_counts:
            for rpn in rpns:
                for variant in variants:
                    if (variant, nodes, rpn) in done:
                        continue
                    for attempt in range(3):
                        try:
                            r = run_cell(mds, variant, nodes, rpn)
                            break
                        except (RuntimeError, OSError, pfs.PFSError) as e:
                            # mostly: someone restarted the shared Slurm under the job
                            print(f"attempt {attempt + 1}: {e}", file=sys.stderr)
                            if attempt == 2:
                                raise
                            ensure_cluster(max(node_counts))
                    rows.append(r)
                    write_csv(rows, csv_path)
                    print(
                        f"{variant:7s} N={nodes} rpn={rpn:3d}: {r['time_s']:7.2f} s  ops={r['mds_ops']:8,d}  "
                        f"({r['mds_ops'] / r['ranks']:8.1f}/rank)  read={r['bytes_read'] / 1e6:7.1f} MB",
                        flush=True,
                    )
    order = {"venv": 0, "sqenv": 1, "staged": 2}
    rows.sort(key=lambda r: (r["nodes"], r["rpn"], order.get(r["variant"], 3)))
    write_csv(rows, csv_path)
    lines = ["## Start-up at scale (simulated parallel file system)", "", *table(rows), "", *model_lines(rows, params)]
    (RESULTS / f"{a.out}.md").write_text("\n".join(lines) + "\n")
    plot(rows, RESULTS / f"{a.out}.png")
    print("\n".join(lines))
    print(f"\nwrote {RESULTS}/{a.out}.{{csv,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
