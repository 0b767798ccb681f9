"""A real Slurm for tests: start it once per process and run jobs in it.

    cluster = ensure_slurm()          # skips the test (fails it under CI=true) if Slurm can't start
    cp = cluster.srun(["-n", "2", "hostname"], user="sqslurm")
    job = cluster.sbatch_wait("#!/bin/sh\\necho hi\\n", user="sqslurm")
    assert job.exit_code == 0 and job.stdout == "hi\\n"

The cluster comes from ``tests/infra/slurm.sh start`` (run as root): partition ``debug``
(the default; this machine, CPUs=2: more than 2 tasks need ``--overcommit``) and, when
``cluster.multi_node``, partition ``multi`` with nodes ``node1`` and ``node2`` that each have
their own ``/tmp`` (everything else is shared). ``sacct`` is not available: exit codes come
from ``srun`` itself and from ``scontrol show job`` (finished jobs stay there for 300 s).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import unavailable  # tests/support.py: the one CI detection

SCRIPT = Path(__file__).resolve().with_name("slurm.sh")
RUN_DIR = Path("/run/sqenv-slurm")
MULTI_UNAVAILABLE = RUN_DIR / "multi-unavailable"
#: where sbatch_wait puts job scripts and outputs: shared by every node (not /tmp)
JOB_DIR_ROOT = Path("/var/tmp/sqenv-slurm-jobs")

START_TIMEOUT = 900  # a fresh machine may have to apt-get install slurm-wlm first

#: job states after which a job does not change any more
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)


@dataclass
class JobResult:
    job_id: str
    state: str  # JobState from scontrol, e.g. COMPLETED, FAILED, CANCELLED, TIMEOUT
    exit_code: int  # the batch script's exit status (first half of ExitCode=N:S)
    signal: int  # the signal that ended it, or 0 (second half of ExitCode=N:S)
    stdout: str  # contents of the job's --output file
    stderr: str  # contents of the job's --error file
    info: dict[str, str] = field(default_factory=dict, repr=False)  # all scontrol fields

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0


def _user_env(user: str | None, env: dict | None) -> dict[str, str]:
    """This process's environment without Slurm job variables (so a test run inside a
    Slurm job does not leak into the jobs it starts), with the target user's identity
    variables, then ``env`` on top."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    if user is not None:
        pw = pwd.getpwnam(user)
        base.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        base["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
    if env:
        base.update({str(k): str(v) for k, v in env.items()})
    return base


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    pw = pwd.getpwnam(user)
    if os.geteuid() != 0 and pw.pw_uid == os.geteuid():
        return cmd
    return [
        "setpriv",
        f"--reuid={pw.pw_uid}",
        f"--regid={pw.pw_gid}",
        "--init-groups",
        "--",
        *cmd,
    ]


def _default_cwd(user: str | None) -> str | None:
    """A user's jobs start where srun/sbatch is run; pick a directory that user can enter
    (its home, else /) rather than the test's cwd, which may be root's."""
    if user is None:
        return None
    home = pwd.getpwnam(user).pw_dir
    return home if os.path.isdir(home) else "/"


def parse_scontrol(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of ``scontrol show ... -o`` output (values may hold spaces only
    for the last keys, which we do not need)."""
    info: dict[str, str] = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(\S*)", text):
        info.setdefault(m.group(1), m.group(2))
    return info


@dataclass
class SlurmCluster:
    multi_node: bool
    multi_reason: str = ""
    partitions: tuple[str, ...] = ("debug",)
    multi_nodes: tuple[str, ...] = ()  # partition multi's nodes: node1..nodeN

    # ---------------------------------------------------------------- srun
    def srun(
        self,
        args: list[str],
        user: str | None = None,
        env: dict | None = None,
        timeout: float = 120,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        """``srun ARGS`` (text output captured), as ``user`` when given.

        ``env`` adds to (overrides) this process's environment; SLURM_* job variables of
        this process are dropped. ``cwd`` defaults to the user's home when ``user`` is given.
        Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
        """
        cmd = _as_user(["srun", *args], user)
        return subprocess.run(
            cmd,
            env=_user_env(user, env),
            cwd=cwd if cwd is not None else _default_cwd(user),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # ---------------------------------------------------------------- sbatch
    def sbatch_wait(
        self,
        script_text: str,
        user: str | None = None,
        timeout: float = 180,
        sbatch_args: list[str] | None = None,
        env: dict | None = None,
    ) -> JobResult:
        """Submit ``script_text`` with ``sbatch --parsable``, wait until the job ended,
        and return its state, exit code and output.

        The script and its output files live in a fresh directory under
        ``/var/tmp/sqenv-slurm-jobs`` owned by ``user`` (shared by all nodes), and the job
        runs there; the directory is removed once the outputs are read, so use absolute
        paths for anything else the job writes. ``sbatch_args`` are extra sbatch options
        (e.g. ``["-p", "multi", "-N", "2"]``); ``env`` works as in ``srun``. On timeout
        the job is cancelled and ``TimeoutError`` raised.
        """
        JOB_DIR_ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(JOB_DIR_ROOT, 0o1777)
        job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=JOB_DIR_ROOT))
        try:
            script = job_dir / "job.sh"
            if not script_text.startswith("#!"):
                script_text = "#!/bin/sh\n" + script_text
            script.write_text(script_text)
            script.chmod(0o755)
            if user is not None and os.geteuid() == 0:
                pw = pwd.getpwnam(user)
                for p in (job_dir, script):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
            out, err = job_dir / "slurm-%j.out", job_dir / "slurm-%j.err"
            cmd = [
                "sbatch",
                "--parsable",
                f"--chdir={job_dir}",
                f"--output={out}",
                f"--error={err}",
                *(sbatch_args or []),
                str(script),
            ]
            cp = subprocess.run(
                _as_user(cmd, user),
                env=_user_env(user, env),
                cwd=job_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if cp.returncode != 0:
                raise RuntimeError(f"sbatch failed ({cp.returncode}): {cp.stderr.strip() or cp.stdout.strip()}")
            job_id = cp.stdout.strip().split(";")[0]

            deadline = time.monotonic() + timeout
            info = self.job_info(job_id)
            while info and info.get("JobState") not in FINAL_STATES:
                if time.monotonic() > deadline:
                    self.scancel(job_id)
                    raise TimeoutError(
                        f"job {job_id} not finished after {timeout}s "
                        f"(JobState={info.get('JobState')}, Reason={info.get('Reason')})"
                    )
                time.sleep(0.2)
                info = self.job_info(job_id)

            code, _, sig = info.get("ExitCode", "0:0").partition(":")

            def read(pattern: Path) -> str:
                p = Path(str(pattern).replace("%j", job_id))
                return p.read_text(errors="replace") if p.exists() else ""

            result = JobResult(
                job_id=job_id,
                state=info.get("JobState", "UNKNOWN"),  # UNKNOWN: already purged
                exit_code=int(code or 0),
                signal=int(sig or 0),
                stdout=read(out),
                stderr=read(err),
                info=info,
            )
            return result
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    def job_info(self, job_id: str | int) -> dict[str, str]:
        """Fields of ``scontrol show job -o JOBID`` ({} once the job is forgotten)."""
        cp = subprocess.run(
            ["scontrol", "show", "job", "-o", str(job_id)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if cp.returncode != 0:
            if "Invalid job id" in cp.stderr:
                return {}
            raise RuntimeError(f"scontrol show job {job_id}: {cp.stderr.strip()}")
        return parse_scontrol(cp.stdout)

    def scancel(self, jobid: str | int) -> None:
        subprocess.run(["scancel", str(jobid)], capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------- ensure_slurm
_cached: SlurmCluster | str | None = None  # the cluster, or why it is unavailable
_started_here = False  # this process started the cluster (it was not running): stop it at the end


def _unavailable(reason: str):
    msg = f"Slurm test cluster unavailable: {reason}"
    unavailable(msg)


def _running() -> bool:
    st = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60)
    return st.returncode == 0


def _start(nodes: int | None = None) -> SlurmCluster | str:
    global _started_here
    if shutil.which("bash") is None:
        return "bash not found"
    if os.geteuid() != 0:
        # only root can start it; use a cluster that is already up
        st = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True)
        if st.returncode != 0:
            return "not running and only root can start it (tests/infra/slurm.sh start)"
    else:
        # once started here, stopped at the end, even after a restart (another node count) found it running
        _started_here = _started_here or not _running()
        try:
            cp = subprocess.run(
                ["bash", str(SCRIPT), "start"],
                env=dict(os.environ, SQENV_SLURM_NODES=str(nodes)) if nodes else None,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return f"tests/infra/slurm.sh start did not finish in {START_TIMEOUT}s"
        if cp.returncode != 0:
            tail = "\n".join((cp.stderr + cp.stdout).strip().splitlines()[-40:])
            return f"tests/infra/slurm.sh start failed ({cp.returncode}):\n{tail}"
    reason = ""
    if MULTI_UNAVAILABLE.exists():
        reason = MULTI_UNAVAILABLE.read_text().strip() or "unknown reason"
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    partitions = tuple(sorted(set(sinfo.stdout.split())))
    multi = not reason and "multi" in partitions
    if not multi and not reason:
        reason = "partition multi not configured"
    multi_nodes: tuple[str, ...] = ()
    if multi:
        cmd = ["sinfo", "-h", "-p", "multi", "-N", "-o", "%N"]
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        multi_nodes = tuple(sorted(set(cp.stdout.split()), key=lambda n: (len(n), n)))
    return SlurmCluster(multi_node=multi, multi_reason=reason, partitions=partitions, multi_nodes=multi_nodes)


def _nodes_see_checkout(cluster: SlurmCluster) -> bool:
    """Each multi node still shows this checkout when it lives under /tmp (node-private there):
    looked up through the node's slurmd's own mount namespace (/proc/PID/root)."""
    checkout = Path(__file__).resolve().parents[2]
    if not str(checkout).startswith("/tmp/"):
        return True
    for node in cluster.multi_nodes:
        try:
            pid = int((RUN_DIR / f"slurmd-{node}.pid").read_text())
        except (OSError, ValueError):
            return False
        if not Path(f"/proc/{pid}/root{checkout}/tests").is_dir():
            return False
    return True


def ensure_slurm(nodes: int | None = None) -> SlurmCluster:
    """Start the test cluster once per process and return it.

    ``nodes``: at least that many nodes (node1..nodeN, up to 8) in partition ``multi``;
    without it, whatever the running cluster has (two on a fresh start).
    When it cannot be started: ``pytest.skip`` locally, ``pytest.fail`` when CI=true.
    """
    global _cached
    if nodes and isinstance(_cached, SlurmCluster) and len(_cached.multi_nodes) < nodes:
        _cached = None  # restart with more nodes
    if isinstance(_cached, SlurmCluster) and not _nodes_see_checkout(_cached):
        _cached = None  # a node was restarted meanwhile without this checkout: slurm.sh mends it
    if _cached is None:
        _cached = _start(nodes)
    if isinstance(_cached, str):
        _unavailable(_cached)
    assert isinstance(_cached, SlurmCluster)
    return _cached


def stop_if_started_here() -> None:
    """Stop the cluster if this process started it (the session's last step, from
    tests/conftest.py): a test run leaves the machine's services as it found them."""
    global _cached, _started_here
    if not _started_here:
        return
    _started_here = False
    _cached = None
    cp = subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=300)
    if cp.returncode != 0:
        print(f"tests/infra/slurm.sh stop failed ({cp.returncode}): {cp.stderr.strip()[-2000:]}")


def ensure_user(name: str = "sqslurm") -> pwd.struct_passwd:
    """An ordinary (non-root) user for jobs, created with a home if absent (needs root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        unavailable(f"user {name} is missing and only root can create it")
    cp = subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", name],
        capture_output=True,
        text=True,
    )
    # exit 9: created meanwhile by another process
    if cp.returncode not in (0, 9):
        raise RuntimeError(f"useradd {name}: {cp.stderr.strip()}")
    return pwd.getpwnam(name)
