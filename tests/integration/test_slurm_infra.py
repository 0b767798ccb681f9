"""Self-test of the Slurm test cluster (tests/infra/slurm.sh, tests/infra/slurm.py)."""

from __future__ import annotations

import uuid

import pytest

# tests/conftest.py puts tests/infra on sys.path: one `slurm` module (and one cluster
# cache) for the whole session, whichever test file starts the cluster first
from slurm import ensure_slurm, ensure_user

pytestmark = pytest.mark.slurm

USER = "sqslurm"


@pytest.fixture(scope="module")
def cluster():
    return ensure_slurm()


@pytest.fixture(scope="module")
def user(cluster):
    return ensure_user(USER).pw_name


def test_srun_four_tasks_as_ordinary_user(cluster, user):
    # the debug node has CPUs=2: more tasks than CPUs need --overcommit
    cp = cluster.srun(
        ["-n", "4", "--overcommit", "sh", "-c", 'echo "$SLURM_PROCID $(id -un)"'],
        user=user,
    )
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split()
    procids = sorted(cp.stdout.split()[0::2])
    assert procids == ["0", "1", "2", "3"], cp.stdout
    assert set(lines[1::2]) == {user}, cp.stdout

    # a batch job of the same user: exit code and output come back without sacct
    job = cluster.sbatch_wait('echo "out $(id -un)"\necho err >&2\nexit 3\n', user=user)
    assert (job.state, job.exit_code) == ("FAILED", 3), job
    assert job.stdout == f"out {user}\n" and job.stderr == "err\n", job


def test_srun_128_overcommitted_tasks(cluster):
    cp = cluster.srun(["-n", "128", "--overcommit", "/bin/true"], timeout=120)
    assert cp.returncode == 0, cp.stderr


def test_multi_node_private_tmp(cluster, user):
    if not cluster.multi_node:
        pytest.skip(f"multi-node unavailable: {cluster.multi_reason}")
    cp = cluster.srun(
        ["-p", "multi", "-N", "2", "-n", "2", "sh", "-c", "echo $SLURMD_NODENAME"],
        user=user,
    )
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.split()) == ["node1", "node2"], cp.stdout

    probe = f"/tmp/sqenv-probe-{uuid.uuid4().hex}"
    try:
        cp = cluster.srun(["-p", "multi", "-w", "node1", "-n", "1", "touch", probe], user=user)
        assert cp.returncode == 0, cp.stderr
        on1 = cluster.srun(["-p", "multi", "-w", "node1", "-n", "1", "test", "-e", probe])
        on2 = cluster.srun(["-p", "multi", "-w", "node2", "-n", "1", "test", "-e", probe])
        assert on1.returncode == 0, "file written in node1's /tmp is not there"
        assert on2.returncode == 1, "node2 sees node1's /tmp"
    finally:
        cluster.srun(["-p", "multi", "-w", "node1", "-n", "1", "rm", "-f", probe])
