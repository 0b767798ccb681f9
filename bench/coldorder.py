"""Cold start in file order (issue 12, item 6): does packing the image in the order an import
reads its files (`mksquashfs -sort`) make the first import on a node faster?

    python bench/coldorder.py [--runs 7]

Takes the sqenv install of bench/scale.py (/sqenv-pfs/envs/sqenv, on the simulated parallel
file system), records which files of the image `python -c "import numpy, scipy.linalg, pandas"`
opens, in order (strace), and repacks the image twice from the same tree with the same
mksquashfs options: once plain, once with a sort file that puts those files first, in that
order. Both go into copies of the install (own image names, so own mounts). Then, alternating
(the order flips every pair), one cold import each on node1 of the virtual cluster: a fresh
client of the simulated file system, no mount of the image on the node, and the image file
evicted from this machine's page cache (posix_fadvise DONTNEED), so its blocks come from the
disk. Reports medians of the time to the end of the import and the data the client read.
Needs root and the virtual cluster (as bench/scale.py). Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # the cluster and file system helpers of the scale bench
from scale import BACKING, ENVS, IMPORT, pfs, sh

SOURCE = ENVS / "sqenv"
NAMES = {"plain": "v1-00000000000000a1.sqfs", "sorted": "v1-00000000000000b2.sqfs"}


def layer(prefix: Path) -> Path:
    for line in (prefix / "launcher").read_text().splitlines():
        if line.startswith("SQENV_LAYERS="):
            return prefix / line.split("=", 1)[1].strip("'").split()[-1]
    sys.exit(f"no SQENV_LAYERS in {prefix}/launcher")


def access_order(prefix: Path) -> list[str]:
    """Image-relative paths of the files the import opens, first open first."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        out = Path(tmp) / "trace"
        python = str(prefix / "bin" / "python")
        cp = sh(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(out), python, "-c", IMPORT])
        if cp.returncode:
            sys.exit(f"strace of the import failed: {cp.stderr[-2000:]}")
        seen: dict[str, None] = {}
        for line in out.read_text().splitlines():
            if "= -1" in line or '"' not in line:
                continue
            path = line.split('"')[1]
            for root in (str(prefix) + "/", "/mnt/sqenv/"):
                if path.startswith(root):
                    rel = os.path.normpath(path[len(root) :])
                    if not rel.startswith(".."):
                        seen.setdefault(rel, None)
        return list(seen)


def repack(image: Path, order: list[str], work: Path) -> dict[str, Path]:
    """The plain and the sorted image, from the same tree with the same options."""
    tree = work / "tree"
    cp = sh(["unsquashfs", "-q", "-n", "-d", str(tree), str(image)])
    if cp.returncode:
        sys.exit(f"unsquashfs failed: {cp.stderr[-2000:]}")
    files = [p for p in order if (tree / p).is_file() and not (tree / p).is_symlink()]
    sort = work / "sort.txt"
    sort.write_text("".join(f"{p} {32767 - i}\n" for i, p in enumerate(files[:65000])))
    common = ["-noappend", "-all-root", "-comp", "zstd", "-Xcompression-level", "3", "-quiet", "-no-progress"]
    out = {}
    for kind, extra in (("plain", []), ("sorted", ["-sort", str(sort)])):
        out[kind] = work / NAMES[kind]
        cp = sh(["mksquashfs", str(tree), str(out[kind]), *common, *extra])
        if cp.returncode:
            sys.exit(f"mksquashfs failed: {cp.stderr[-2000:]}")
    print(f"{len(files)} files in access order ({sum((tree / p).stat().st_size for p in files) / 1e6:.1f} MB)")
    return out


def make_install(kind: str, image: Path) -> Path:
    """A copy of the install whose launcher mounts `image` (its own name: its own mounts)."""
    prefix = ENVS / f"order-{kind}"
    if prefix.exists():
        shutil.rmtree(prefix)
    prefix.mkdir(mode=0o755)
    for name in ("bin", "sqenv-enter", "sqenv.json"):
        src = SOURCE / name
        if src.is_dir():
            shutil.copytree(src, prefix / name, symlinks=True)
        else:
            shutil.copy2(src, prefix / name)
    old = layer(SOURCE).name
    (prefix / "launcher").write_text((SOURCE / "launcher").read_text().replace(old, NAMES[kind]))
    (prefix / "launcher").chmod(0o755)
    shutil.copy2(image, prefix / NAMES[kind])
    return prefix


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold_import(mds: pfs.MDS, prefix: Path, image: Path) -> dict:
    node = "node1"
    scale.drop_image_mounts([node])
    evict(image)
    client = pfs.Client(mds, BACKING, BACKING, node, mount_ns_pid=scale.slurmd_pid(node))
    try:
        mds.stats(reset=True)
        start = time.perf_counter()
        step = ["srun", "-p", "multi", "-w", node, "-N", "1", "-n", "1", "--chdir=/tmp"]
        cp = sh([*step, str(prefix / "bin" / "python"), "-c", IMPORT], env=scale.job_env(), cwd="/tmp", timeout=600)
        wall = time.perf_counter() - start
        if cp.returncode:
            sys.exit(f"the import failed: {cp.stderr[-2000:]}")
        scale.drop_image_mounts([node])
    finally:
        client.stop()
    st = mds.stats(reset=True)
    reads = sum(r.get("reads", 0) for r in st["reports"].values())
    return {"time_s": wall, "bytes_read": pfs.bytes_read(st), "reads": reads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (as bench/scale.py)")
    if "node1" not in scale.cluster_nodes():
        sys.exit("node1 of partition multi is not up: SQENV_SLURM_NODES=1 bash tests/infra/slurm.sh start")
    order = access_order(SOURCE)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="sqenv-coldorder-") as tmp:
        images = repack(layer(SOURCE), order, Path(tmp))
        prefixes = {kind: make_install(kind, images[kind]) for kind in images}
    results: dict[str, list[dict]] = {"plain": [], "sorted": []}
    try:
        with pfs.MDS(BACKING, pfs.Params()) as mds:
            for i in range(a.runs):
                kinds = ["plain", "sorted"] if i % 2 == 0 else ["sorted", "plain"]
                for kind in kinds:
                    r = cold_import(mds, prefixes[kind], prefixes[kind] / NAMES[kind])
                    results[kind].append(r)
                    mb = r["bytes_read"] / 1e6
                    print(f"run {i + 1} {kind:6s}: {r['time_s']:.2f} s {mb:6.1f} MB, {r['reads']:,} reads", flush=True)
    finally:
        for p in prefixes.values():
            shutil.rmtree(p, ignore_errors=True)
    print("\n| image | cold import, median | range | MB read by the node | read requests |\n|---|---|---|---|---|")
    for kind, rs in results.items():
        ts = [r["time_s"] for r in rs]
        mb = statistics.median(r["bytes_read"] for r in rs) / 1e6
        reads = statistics.median(r["reads"] for r in rs)
        print(f"| {kind} | {statistics.median(ts):.2f} s | {min(ts):.2f}–{max(ts):.2f} s | {mb:.1f} | {reads:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
