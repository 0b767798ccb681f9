"""The virtual cluster for scale work (issue 12): N Slurm nodes, each with its own /tmp and
its own client of the simulated parallel file system, all mounted at one path."""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import pfs
import pytest
from slurm import RUN_DIR, ensure_slurm

from support import BASE_PYTHON, User, is_image_server, ok, sqenv

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts Slurm and mounts file systems: needs root"),
]

NODES = 4
STAGE = f"{sys.executable} -m sqenv stage"


def test_n_nodes_each_with_own_tmp_and_the_shared_simulated_fs() -> None:
    cluster = ensure_slurm(nodes=NODES)
    if not cluster.multi_node or len(cluster.multi_nodes) < NODES:
        pytest.fail(f"partition multi has {cluster.multi_nodes} ({cluster.multi_reason})")
    names = [f"node{i}" for i in range(1, NODES + 1)]
    # the backing directory is the mount point: jobs see the same path as the host
    shared = Path("/var/tmp") / f"sqenv-pfs-cluster-{uuid.uuid4().hex[:8]}"
    shared.mkdir(mode=0o755)
    (shared / "hello.txt").write_text("from the shared file system\n")
    clients = []
    try:
        with pfs.MDS(shared, pfs.Params(rtt_s=0, service_s=0, threads=4)) as mds:
            for n in names:
                pid = int((RUN_DIR / f"slurmd-{n}.pid").read_text())
                clients.append(pfs.Client(mds, shared, shared, n, mount_ns_pid=pid))
            tag = uuid.uuid4().hex[:8]
            script = (
                f'echo "$SLURMD_NODENAME" > /tmp/mark-{tag}-"$SLURMD_NODENAME"; '
                f"sleep 1; echo marks: $(ls /tmp | grep -c mark-{tag}); "
                f"cat {shared}/hello.txt; "
                f'awk \'$5 == "{shared}" {{print "fstype:", $(NF-2)}}\' /proc/self/mountinfo; '
                f"rm -f /tmp/mark-{tag}-*"
            )
            cp = cluster.srun(["-p", "multi", "-N", str(NODES), "-n", str(NODES), "-l", "sh", "-c", script])
            assert cp.returncode == 0, cp.stderr
            for c in clients:
                c.stop()
            clients = []
            stats = mds.stats()
    finally:
        for c in clients:
            c.stop()
        shutil.rmtree(shared)
    lines = cp.stdout.splitlines()
    for rank in range(NODES):
        mine = [ln.split(": ", 1)[1] for ln in lines if ln.startswith(f"{rank}: ")]
        assert mine == ["marks: 1", "from the shared file system", "fstype: fuse.sqenvpfs"], lines
    # every node's own client asked the metadata server (its own cache, cold)
    assert sorted(stats["ops"]) == names
    assert all(stats["ops"][n].get("lookup") == 1 and stats["ops"][n].get("open") == 1 for n in names), stats


def _image_servers(uid: int) -> list[int]:
    """Pids of `uid`'s image servers on any node (the nodes share our pid namespace)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid and is_image_server(
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ):
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_staged_programs_start_ranks_without_metadata_ops(user: User) -> None:
    """After `sqenv stage`, ranks started from the staged bin (first on PATH) send no request
    to the metadata server: the launcher chain is node-local. Started from PREFIX/bin, each
    further rank costs the helper's exec and its read of the launcher's values (4 requests here;
    6 with the shell launcher). Each job stages (so its image
    is node-local either way), then starts 1 or 4 ranks per node on 2 nodes, with cold caches;
    the per-rank cost is the difference between the two, divided by the extra ranks."""
    cluster = ensure_slurm(nodes=2)
    if not cluster.multi_node or len(cluster.multi_nodes) < 2:
        pytest.fail(f"partition multi has {cluster.multi_nodes} ({cluster.multi_reason})")
    names = ["node1", "node2"]
    shared = Path("/var/tmp") / f"sqenv-pfs-stage-{uuid.uuid4().hex[:8]}"
    shared.mkdir(mode=0o755)
    home = shared / "u"
    home.mkdir(mode=0o755)
    os.chown(home, user.uid, user.gid)
    prefix = home / "env"
    ops: dict[tuple[str, int], int] = {}
    try:
        ok(sqenv("create", prefix, "six", "--python", BASE_PYTHON, "-q", user=user))
        with pfs.MDS(shared, pfs.Params(rtt_s=0, service_s=0, threads=4)) as mds:
            for how in ("prefix", "staged"):
                for rpn in (1, 4):
                    python = f"{prefix}/bin/python" if how == "prefix" else "python"
                    script = (
                        "set -e\n"
                        f"bin=$({STAGE} -q --print-path {prefix})\n"
                        'test -x "$bin/python"\n'
                        "PATH=$bin:$PATH; export PATH\n"
                        f"srun -n {2 * rpn} --overcommit {python} -c "
                        '\'import os, sys, six; print("rank", os.environ["SLURMD_NODENAME"], sys.executable, '
                        'os.environ["SQENV_PREFIX"])\'\n'
                        f"{STAGE} -q --remove {prefix}\n"
                    )
                    clients = [
                        pfs.Client(mds, shared, shared, n, mount_ns_pid=int((RUN_DIR / f"slurmd-{n}.pid").read_text()))
                        for n in names
                    ]
                    try:
                        mds.stats(reset=True)
                        job = cluster.sbatch_wait(
                            script,
                            user=user.name,
                            sbatch_args=["-p", "multi", "-N", "2", "-w", ",".join(names)],
                            env={"SQENV_IDLE_TIMEOUT": "1"},
                            timeout=180,
                        )
                        assert job.ok, job
                        ranks = [line.split() for line in job.stdout.splitlines() if line.startswith("rank ")]
                        assert len(ranks) == 2 * rpn, job.stdout
                        assert {r[1] for r in ranks} == set(names), job.stdout
                        # the staged programs are the install's own: same executable, same PREFIX
                        assert {tuple(r[2:]) for r in ranks} == {(f"{prefix}/bin/python", str(prefix))}, job.stdout
                        for _ in range(100):  # the image mounts idle out: the next job starts cold
                            if not _image_servers(user.uid):
                                break
                            time.sleep(0.2)
                    finally:
                        for c in clients:
                            c.stop()
                    ops[(how, rpn)] = sum(pfs.total_ops(mds.stats(reset=True)).values())
    finally:
        shutil.rmtree(shared)
    extra = 2 * (4 - 1)
    per_rank = {how: (ops[(how, 4)] - ops[(how, 1)]) / extra for how in ("prefix", "staged")}
    assert per_rank["prefix"] >= 3, ops  # exec of the helper through bin/NAME, the read of the launcher's values
    assert ops[("staged", 4)] == ops[("staged", 1)], ops  # not one request more per rank
