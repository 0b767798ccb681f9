"""The virtual cluster for scale work (issue 12): N Slurm nodes, each with its own /tmp and
its own client of the simulated parallel file system, all mounted at one path."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pfs
import pytest
from slurm import RUN_DIR, ensure_slurm

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts Slurm and mounts file systems: needs root"),
]

NODES = 4


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
