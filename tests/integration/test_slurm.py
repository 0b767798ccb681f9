"""sqenv under a real Slurm: srun/sbatch, exit codes and signals, 128 ranks on one node,
MPI with the host's library, the mount daemon at step end, and node-local staging.

One small environment (six + mpi4py, on Debian's /usr/bin/python3) is built once
by an ordinary user of its own (`sqenvhpc`), so its runtime directory
/tmp/sqenv-UID is not shared with other tests. Tests that need Slurm start the
test cluster (tests/infra/slurm.sh); the mpi4py wheel from PyPI loads the host's
Debian OpenMPI (libmpi.so.40), installed here if missing.

Every test here is leak-guarded (tests/conftest.py): after it, the mount daemons,
mounts and runtime directories of `sqenvhpc` must go away within the short idle
timeout these tests set, on every node, so no test can use a mount an earlier
one left. The one job that runs across tests on purpose (the time-limit job)
runs as another user, `sqslurm`, and is checked by the test that waits for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from slurm import FINAL_STATES, SlurmCluster, _as_user, _user_env, ensure_slurm

from sqenv.config import launcher_values, load_config
from sqenv.publish import launchers, metadata
from sqenv.publish.layout import Install
from support import BASE_PYTHON, SQENV, User, ensure_user, fuse_mounts, is_image_server, need, ok, owned_dir, run, sqenv

HPC_USER = "sqenvhpc"
LIMIT_USER = "sqslurm"  # runs the time-limit job, which outlives the tests around it

pytestmark = [pytest.mark.slurm, pytest.mark.leak_guard(HPC_USER)]
IDLE = "3"  # seconds: mounts of these tests go away quickly
STAGE = f"{sys.executable} -m sqenv stage"
MPI_CODE = (
    "from mpi4py import MPI; c = MPI.COMM_WORLD; "
    "print(c.Get_rank(), c.Get_size(), MPI.Get_library_version().splitlines()[0], flush=True)"
)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster() -> SlurmCluster:
    return ensure_slurm()


@pytest.fixture(scope="module")
def hpc() -> User:
    return ensure_user(HPC_USER)


@pytest.fixture(scope="module")
def limit_user() -> User:
    return ensure_user(LIMIT_USER)


@pytest.fixture(scope="module")
def host_mpi() -> None:
    """Debian's OpenMPI (the mpi4py wheel loads its libmpi.so.40)."""
    have = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    if "libmpi.so.40" in have:
        return
    if os.geteuid() != 0:
        pytest.skip("OpenMPI is not installed and only root can install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "openmpi-bin", "libopenmpi-dev"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        ok(subprocess.run(cmd, env=env, capture_output=True, text=True))


@pytest.fixture(scope="module")
def base(hpc: User) -> Path:
    """A world-readable directory owned by the test user, shared by all nodes (/var/tmp)."""
    with owned_dir("sqenv-slurm-tests", hpc.uid, hpc.gid) as path:
        yield path


@pytest.fixture(scope="module")
def env(hpc: User, base: Path, host_mpi: None) -> Path:
    """six + mpi4py, built once by the test user."""
    need("mksquashfs")
    prefix = base / "env"
    ok(sqenv("create", prefix, "six", "mpi4py", "--python", BASE_PYTHON, "-q", user=hpc))
    return prefix


@pytest.fixture
def scratch(hpc: User, base: Path, request: pytest.FixtureRequest) -> Path:
    """A directory of the test user's for one test's files."""
    path = base / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir()
    os.chown(path, hpc.uid, hpc.gid)
    return path


HANDLER = (
    "import os, signal, sys, time\n"
    "out = sys.argv[1]\n"
    "def got(sig, frame):\n"
    "    open(out + '.term', 'w').write(f'{signal.Signals(sig).name} {os.getpid()}')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, got)\n"
    "open(out + '.ready', 'w').write(str(os.getpid()))\n"
    "time.sleep(600)\n"
)


@pytest.fixture(scope="module")
def time_limit_job(cluster: SlurmCluster, limit_user: User, env: Path, base: Path) -> tuple[str, Path]:
    """A job that runs into its time limit (1 minute, checked by slurmctld every ~30 s): submitted
    as soon as the environment exists, to the `multi` nodes when there are some, so its minute
    passes while the other tests run. It runs as a second user (another user of the same
    install): its mount lives as long as the job, across the tests whose leak guard watches
    `sqenvhpc`; test_time_limit_delivers_sigterm_to_python checks that it goes afterwards."""
    job_dir = base / "time-limit"
    job_dir.mkdir()
    os.chown(job_dir, limit_user.uid, limit_user.gid)
    (job_dir / "handler.py").write_text(HANDLER)
    where = ["-p", "multi", "-N", "1"] if cluster.multi_node else []
    out = job_dir / "limit"
    # run straight from the batch script (the scancel test below uses an srun step)
    job = submit(f"exec {env}/bin/python {job_dir}/handler.py {out}\n", limit_user, job_dir, ["--time=1", *where])
    return job, out


def copy_install(env: Path, to: Path, hpc: User) -> Path:
    """A private copy of the install (same image), owned by the test user."""
    ok(run(["cp", "-a", str(env), str(to)], user=hpc))
    return to


def unique_install(to: Path, hpc: User) -> Path:
    """An install of six whose image no other test can have mounted: a file with a fresh UUID
    inside makes its content, so its image ID (a hash of it), its own."""
    script = to.with_name(f"{to.name}-unique.sh")
    script.write_text(f'python -c \'import sys; open(sys.prefix + "/test-id", "w").write("{uuid.uuid4()}")\'\n')
    ok(sqenv("create", to, "six", "--python", BASE_PYTHON, "--post-install", script, "-q", user=hpc))
    return to


def task_env(**extra: str) -> dict[str, str]:
    return {"SQENV_IDLE_TIMEOUT": IDLE, "OMPI_MCA_btl_vader_single_copy_mechanism": "none", **extra}


def daemons(uid: int, image: str = "") -> list[int]:
    """Pids of image servers of `uid` (mounting `image`, if given) on this node: the
    `multi` nodes share our pid namespace but each has its own mount namespace."""
    found = []
    here = os.readlink("/proc/self/ns/mnt")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            owner = os.stat(f"/proc/{pid}").st_uid
            local = os.readlink(f"/proc/{pid}/ns/mnt") == here
        except OSError:
            continue
        if owner == uid and local and is_image_server(argv) and image.encode() in b" ".join(argv):
            found.append(int(pid))
    return found


def ancestors(pid: int) -> list[str]:
    """Command names of a process's parents, up to pid 1."""
    names = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def layer_of(prefix: Path) -> str:
    return metadata.current(metadata.load(Install(prefix).metadata))["layers"][-1]


def submit(script: str, user: User, job_dir: Path, sbatch_args: list[str]) -> str:
    """sbatch without waiting; returns the job id."""
    path = job_dir / f"job-{time.monotonic_ns()}.sh"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    os.chown(path, user.uid, user.gid)
    cmd = ["sbatch", "--parsable", f"--chdir={job_dir}", f"--output={path}.out", *sbatch_args, str(path)]
    cp = ok(
        subprocess.run(
            _as_user(cmd, user.name),
            env=_user_env(user.name, task_env()),
            capture_output=True,
            text=True,
            cwd=job_dir,
            timeout=60,
        )
    )
    return cp.stdout.strip().split(";")[0]


def wait_job(cluster: SlurmCluster, job: str, timeout: float) -> dict[str, str]:
    info: dict[str, str] = {}

    def done() -> bool:
        nonlocal info
        info = cluster.job_info(job)
        return not info or info.get("JobState") in FINAL_STATES

    try:
        wait_for(done, timeout, f"job {job} to end")
    except AssertionError:
        cluster.scancel(job)
        raise
    return info


# ---------------------------------------------------------------- srun and sbatch
def test_srun_four_tasks_get_their_procids(
    cluster: SlurmCluster, hpc: User, env: Path, scratch: Path, time_limit_job: tuple[str, Path]
) -> None:
    # (time_limit_job: started here, checked at the end of this module)
    script = scratch / "ranks.py"
    script.write_text("import os, sys, six\nprint(os.environ['SLURM_PROCID'], sys.prefix, os.getuid())\n")
    cp = cluster.srun(["-n", "4", "--overcommit", f"{env}/bin/python", str(script)], user=hpc.name, env=task_env())
    assert cp.returncode == 0, cp.stderr
    rows = sorted(line.split() for line in cp.stdout.splitlines())
    assert rows == [[str(i), str(env), str(hpc.uid)] for i in range(4)], cp.stdout


def test_batch_script_with_env_on_path(cluster: SlurmCluster, hpc: User, env: Path) -> None:
    job = cluster.sbatch_wait(
        f"export PATH={env}/bin:$PATH\n"
        "srun -n 2 --overcommit python -c 'import os, sys, six; print(os.environ[\"SLURM_PROCID\"], sys.prefix)'\n",
        user=hpc.name,
        env=task_env(),
    )
    assert job.ok, job
    assert sorted(job.stdout.splitlines()) == [f"0 {env}", f"1 {env}"], job


def test_exit_codes_reach_srun_and_the_job(cluster: SlurmCluster, hpc: User, env: Path) -> None:
    cp = cluster.srun(["-n", "2", f"{env}/bin/python", "-c", "import sys; sys.exit(3)"], user=hpc.name, env=task_env())
    assert cp.returncode == 3, cp.stderr
    job = cluster.sbatch_wait(
        f"srun -n 1 {env}/bin/python -c 'import sys; sys.exit(7)'\n", user=hpc.name, env=task_env()
    )
    assert (job.state, job.exit_code, job.info.get("ExitCode")) == ("FAILED", 7, "7:0"), job


# ---------------------------------------------------------------- 128 ranks, one mount
def test_128_tasks_share_one_mount_and_leave_nothing(cluster: SlurmCluster, hpc: User, env: Path) -> None:
    runtime = Path(f"/tmp/sqenv-{hpc.uid}")
    wait_for(lambda: not daemons(hpc.uid) and not runtime.exists(), 15, "earlier mounts of the test user to go")
    code = "import os, six; print(os.environ['SLURM_PROCID'], os.stat('/mnt/sqenv').st_dev)"
    start = time.monotonic()
    cp = cluster.srun(
        ["-n", "128", "--overcommit", f"{env}/bin/python", "-c", code], user=hpc.name, env=task_env(), timeout=180
    )
    wall = time.monotonic() - start
    assert cp.returncode == 0, cp.stderr[-3000:]
    rows = [line.split() for line in cp.stdout.splitlines()]
    assert sorted(int(r[0]) for r in rows) == list(range(128))
    # one superblock for all tasks: the same FUSE mount, shown in 128 namespaces
    assert len({r[1] for r in rows}) == 1, rows
    assert len(daemons(hpc.uid, layer_of(env))) == 1
    assert len(fuse_mounts(f"{runtime}/")) == 1
    print(f"\n128 tasks (cold mount, one node with 2 CPUs): {wall:.2f} s wall for srun")
    # after the job and the idle timeout: no daemon, no mount, no runtime directory
    wait_for(lambda: not daemons(hpc.uid), int(IDLE) + 10, "the image server to exit")
    wait_for(lambda: not runtime.exists(), 5, f"{runtime} to be removed")
    assert not fuse_mounts(f"{runtime}/")


# ---------------------------------------------------------------- the daemon at step end
def test_daemon_at_step_end_and_recovery_from_sigkill(cluster: SlurmCluster, hpc: User, env: Path) -> None:
    """What Slurm does to the mount daemon when a step ends; and the next launch after it was SIGKILLed
    (what proctrack/cgroup does to every process left in the step's cgroup, and the OOM killer)."""
    image = layer_of(env)
    wait_for(lambda: not daemons(hpc.uid), 15, "earlier mounts of the test user to go")
    code = "import os; print(os.getpid())"
    cp = cluster.srun(
        ["-n", "2", f"{env}/bin/python", "-c", code], user=hpc.name, env=task_env(SQENV_IDLE_TIMEOUT="60")
    )
    assert cp.returncode == 0, cp.stderr
    proctrack = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    pids = daemons(hpc.uid, image)
    if "proctrack/linuxproc" in proctrack:
        # linuxproc kills the step's process tree; the daemon left it (setsid -f), so it lives on
        assert len(pids) == 1, "the daemon should survive the end of the step under proctrack/linuxproc"
        assert "slurmstepd" not in ancestors(pids[0])
    if pids:  # else Slurm killed it at step end (proctrack/cgroup does): the mount is dead already
        # SIGKILL the daemon and its shell (one process group): the mount is left dead
        os.killpg(os.getpgid(pids[0]), signal.SIGKILL)
    wait_for(lambda: not daemons(hpc.uid, image), 5, "the daemon to die")
    mnt = f"/tmp/sqenv-{hpc.uid}/{image.split('-', 1)[1].removesuffix('.sqfs')}"
    dead = run(["stat", mnt], user=hpc)
    assert "Transport endpoint is not connected" in dead.stderr, dead
    cp = cluster.srun(
        ["-n", "4", "--overcommit", f"{env}/bin/python", "-c", "import six; print('ok')"], user=hpc.name, env=task_env()
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["ok"] * 4
    assert len(daemons(hpc.uid, image)) == 1
    wait_for(lambda: not daemons(hpc.uid), int(IDLE) + 10, "the new daemon to exit")


# ---------------------------------------------------------------- MPI
def test_mpi4py_with_host_openmpi_under_srun_pmix(cluster: SlurmCluster, hpc: User, env: Path) -> None:
    plugins = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True)
    if "pmix" not in plugins.stdout + plugins.stderr:
        pytest.skip("this Slurm has no pmix plugin")
    cp = cluster.srun(
        ["--mpi=pmix", "-n", "4", "--overcommit", f"{env}/bin/python", "-c", MPI_CODE],
        user=hpc.name,
        env=task_env(PMIX_MCA_gds="hash"),
        timeout=120,
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    rows = [line.split(" ", 2) for line in cp.stdout.splitlines()]
    assert sorted(int(r[0]) for r in rows) == [0, 1, 2, 3], cp.stdout
    assert {r[1] for r in rows} == {"4"}, cp.stdout  # never "0 of 1"
    assert all(r[2].startswith("Open MPI") for r in rows), cp.stdout


def test_mpi_host_puts_configured_dirs_first(hpc: User, env: Path, scratch: Path) -> None:
    """`mpi = "host"`: the launcher puts the host MPI directories first on LD_LIBRARY_PATH (once)."""
    prefix = copy_install(env, scratch / "env", hpc)
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines()
    libmpi = next(line.split(" => ")[1] for line in ldconfig if line.strip().startswith("libmpi.so.40 "))
    mpi_dir = os.path.dirname(os.path.realpath(libmpi))
    toml = scratch / "site.toml"
    toml.write_text(f'[forced]\nmpi = "host"\nmpi_libraries = ["/opt/site/mpi/lib", "{mpi_dir}/libmpi.so.40"]\n')
    cfg = load_config({"SQENV_CONFIG": str(toml), "SQENV_SYSTEM_CONFIG": "/nonexistent", "HOME": "/nonexistent"})
    values = launcher_values(cfg)
    want = f"/opt/site/mpi/lib:{mpi_dir}"
    assert values["SQENV_LD_PREPEND"] == want
    install = Install(prefix)
    version = metadata.current(metadata.load(install.metadata))
    launchers.write(
        install, version["layers"], version["programs"], activate=False, options={"mpi": "host"}, config=cfg
    )
    code = "import os; from mpi4py import MPI; print(os.environ['LD_LIBRARY_PATH']); print(MPI.Get_library_version())"
    for given, expected in (("/user/lib", f"{want}:/user/lib"), (f"{want}:/user/lib", f"{want}:/user/lib")):
        out = ok(run([f"{prefix}/bin/python", "-c", code], user=hpc, env=task_env(LD_LIBRARY_PATH=given)))
        lines = out.stdout.splitlines()
        assert lines[0] == expected  # first, and not added again by a nested launch
        assert lines[1].startswith("Open MPI")


# ---------------------------------------------------------------- node-local staging
def test_stage_outside_an_allocation_is_a_clear_error(env: Path) -> None:
    proc = run([*SQENV, "stage", str(env)], env={"SLURM_JOB_ID": ""})
    if "invalid choice: 'stage'" in proc.stderr:
        proc = run(["sh", "-c", f"{STAGE} {env}"], env={"SLURM_JOB_ID": ""})
    assert proc.returncode == 2, proc.stderr
    assert "only inside a Slurm allocation" in proc.stderr


def test_launcher_uses_only_the_users_own_staged_copy(hpc: User, env: Path, scratch: Path) -> None:
    image = layer_of(env)
    stage = scratch / "stage"
    job = stage / "sqenv-stage-4242"
    job.mkdir(parents=True)
    for path in (stage, job):
        os.chown(path, hpc.uid, hpc.gid)
    staged = job / image
    shutil.copyfile(env / image, staged)  # a good copy, but root's: another user's file is never mounted
    launch_env = task_env(SLURM_JOB_ID="4242", SQENV_STAGE_DIR=str(stage))
    code = [f"{env}/bin/python", "-c", "import six; print('ok')"]
    for owner in (0, hpc.uid):
        os.chown(staged, owner, owner)
        wait_for(lambda: not daemons(hpc.uid, image), int(IDLE) + 10, "the image to be unmounted")
        assert ok(run(code, user=hpc, env=launch_env)).stdout == "ok\n"
        assert bool(daemons(hpc.uid, str(staged))) == (owner == hpc.uid)


def test_stage_copies_to_every_node_and_launchers_use_it(
    cluster: SlurmCluster, hpc: User, env: Path, scratch: Path
) -> None:
    # The job runs this checkout's sqenv on the extra nodes, which have their own /tmp:
    # tests/infra/slurm.sh binds a checkout under /tmp into them (CI clones there).
    if cluster.multi_node:
        where, nodes = ["-p", "multi", "-N", "2"], 2
        seen = cluster.srun(["-p", "multi", "-N", "2", "--ntasks-per-node=1", "test", "-x", sys.executable])
        assert seen.returncode == 0, f"the nodes do not see {sys.executable}: {seen.stderr}"
    else:  # one node only (the infra test of the multi-node cluster fails): staging on one node
        where, nodes = [], 1
    # Its own image: a mount of the same image left on a node by another test (or by another job
    # still running there) would be used instead of the staged copy.
    prefix = unique_install(scratch / "env", hpc)
    image = layer_of(prefix)
    assert image != layer_of(env)
    # The job stages, then hides the shared image: the launches can only use the staged copies.
    job = cluster.sbatch_wait(
        "set -e\n"
        f"bin=$({STAGE} --print-path {prefix})\n"
        f"mv {prefix}/{image} {prefix}/{image}.away\n"
        f"srun -n {2 * nodes} --overcommit {prefix}/bin/python -c "
        '\'import os, six; print("task", os.environ["SLURMD_NODENAME"], os.stat("/mnt/sqenv").st_dev)\'\n'
        # the node-local programs: they need neither the shared image nor the shared helper
        f"mv {prefix}/sqenv-enter {prefix}/sqenv-enter.away\n"
        "PATH=$bin:$PATH srun -n " + str(2 * nodes) + " --overcommit python -c "
        '\'import os, sys, six; print("staged", os.environ["SLURMD_NODENAME"], sys.executable, '
        'os.environ["SQENV_PREFIX"], os.environ["PATH"].split(":")[0])\'\n'
        f"mv {prefix}/sqenv-enter.away {prefix}/sqenv-enter\n"
        f"mv {prefix}/{image}.away {prefix}/{image}\n"
        f'srun -n {nodes} --ntasks-per-node=1 sh -c \'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "'
        ' | grep -o -- "--serve -t [0-9]* -U [^ ]* [^ ]*" | sort -u\'\n'
        f"{STAGE} --remove {prefix}\n"
        # the fallback when sbcast is unavailable: one `cp` per node
        f"{STAGE} --method srun --stage-dir /tmp/alt {prefix}\n"
        f"srun -n {nodes} --ntasks-per-node=1 sh -c 'ls /tmp/alt/sqenv-stage-$SLURM_JOB_ID'\n"
        f"{STAGE} --remove --stage-dir /tmp/alt {prefix}\n"
        f"srun -n {nodes} --ntasks-per-node=1 sh -c "
        "'test -e /tmp/sqenv-stage-$SLURM_JOB_ID && echo left || echo gone'\n",
        user=hpc.name,
        sbatch_args=where,
        env=task_env(),
        timeout=120,
    )
    assert job.ok, job
    tasks = [line.split() for line in job.stdout.splitlines() if line.startswith("task ")]
    assert len(tasks) == 2 * nodes, job.stdout
    assert len({t[1] for t in tasks}) == nodes, job.stdout  # every node ran tasks
    staged_runs = [line.split() for line in job.stdout.splitlines() if line.startswith("staged ")]
    assert len(staged_runs) == 2 * nodes and len({t[1] for t in staged_runs}) == nodes, job.stdout
    # the install's own program and PREFIX, with the install's bin first on PATH, as from PREFIX/bin
    assert {tuple(t[2:]) for t in staged_runs} == {(f"{prefix}/bin/python", str(prefix), f"{prefix}/bin")}, job.stdout
    staged = f"/tmp/sqenv-stage-{job.job_id}/{image}"
    # each node has its own daemon, mounting that node's own copy
    servers = [line for line in job.stdout.splitlines() if line.startswith(f"--serve -t {IDLE} ")]
    assert sum(line.endswith(f" {staged}") for line in servers) >= nodes, job.stdout
    assert f"on {nodes} node(s) with sbcast, sha256 verified" in " ".join(job.stderr.split()), job.stderr
    assert job.stdout.count("gone") == nodes, job.stdout
    assert f"on {nodes} node(s) with srun cp, sha256 verified" in " ".join(job.stderr.split()), job.stderr
    assert job.stdout.splitlines().count(image) == nodes, job.stdout  # `ls` of each node's /tmp/alt copy


# ---------------------------------------------------------------- signals
def check_sigterm(out: Path, info: dict[str, str], state: str) -> None:
    assert info.get("JobState") == state, info
    term = Path(f"{out}.term")
    assert term.exists(), f"{state}: the Python SIGTERM handler did not run"
    # the handler ran in the very process the launcher started (no wrapper process in between)
    assert term.read_text() == f"SIGTERM {Path(f'{out}.ready').read_text()}"


def test_scancel_delivers_sigterm_to_python(cluster: SlurmCluster, hpc: User, env: Path, scratch: Path) -> None:
    """The handler of the Python process itself runs: the launcher neither swallows nor delays SIGTERM."""
    (scratch / "handler.py").write_text(HANDLER)
    out = scratch / "cancel"
    job = submit(f"srun -n 1 {env}/bin/python {scratch}/handler.py {out}\n", hpc, scratch, [])
    wait_for(lambda: Path(f"{out}.ready").exists(), 60, "the program to start")
    cluster.scancel(job)
    check_sigterm(out, wait_job(cluster, job, 30), "CANCELLED")


@pytest.mark.leak_guard(LIMIT_USER)  # and HPC_USER, from pytestmark
def test_time_limit_delivers_sigterm_to_python(cluster: SlurmCluster, time_limit_job: tuple[str, Path]) -> None:
    job, out = time_limit_job
    check_sigterm(out, wait_job(cluster, job, 150), "TIMEOUT")
