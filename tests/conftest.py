"""pytest hooks and shared fixtures: an ordinary test user, environments built once, the leak
guard. The helpers (CI detection, users, `run`/`sqenv`/`ok`) live in support.py.

The machine set-up that only root can do happens here, once per session, and
is what the README's machine set-up does on a cluster node:
- `/dev/fuse` made mode 0666 (it is 0600 on these VMs, 0666 on ordinary distros);
- the directories above this checkout and above the Python running the tests
  made traversable (o+x, e.g. root's home 0700 -> 0701) so the test user can
  run this checkout's sqenv; nothing becomes listable or readable by that.
Environments used by the tests are built by the ordinary user, on Debian's
/usr/bin/python3 (root's pyenv Python is not usable by other users).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import (
    BASE_PYTHON,
    IN_CI,
    ROOT,
    USER,
    User,
    ensure_user,
    is_image_server,
    make_traversable,
    need,
    ok,
    owned_dir,
    sqenv,
)

sys.path.insert(0, str(ROOT / "tests" / "infra"))  # the test services: slurm.py, apptainer.py, pfs/


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "leak_guard(*users): after each test, wait for these users' mount daemons, sqenv FUSE mounts and "
        "runtime dirs to go away (idle timeout + margin); clean up and fail the test if any remain",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Under CI=true a skip is a failure: a skipped test proves nothing, and CI must not go
    green on a machine where a feature could not be tested. xfail (``wasxfail``) is left alone."""
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the services this session started (the Slurm test cluster)."""
    stop = getattr(sys.modules.get("slurm"), "stop_if_started_here", None)  # tests/infra/slurm.py, if used
    if stop is not None:
        stop()


@pytest.fixture(scope="session", autouse=True)
def machine_setup() -> None:
    if os.geteuid() == 0:
        if os.path.exists("/dev/fuse"):
            os.chmod("/dev/fuse", 0o666)
        # the test user runs this checkout's sqenv with this interpreter
        for path in (ROOT, Path(sys.executable).resolve().parent, Path(sys.prefix)):
            make_traversable(path)


@pytest.fixture(scope="session")
def user() -> User:
    return ensure_user(USER)


@pytest.fixture(scope="session")
def shared_dir(user: User, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the test user owns, for installs shared across tests."""
    with owned_dir("sqenv-tests", user.uid, user.gid) as path:
        yield path


@pytest.fixture
def place(user: User, shared_dir: Path) -> Path:
    """A new directory the test user owns, inside `shared_dir`."""
    d = Path(tempfile.mkdtemp(dir=shared_dir))
    d.chmod(0o755)
    os.chown(d, user.uid, user.gid)
    return d


# Apptainer modules: each defines `user` (the ordinary user apptainer runs as); these use it.
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    from apptainer import ensure_apptainer  # tests/infra

    return ensure_apptainer(tmp_path_factory)


@pytest.fixture(scope="module")
def base_sif(app, user: str) -> Path:
    """Debian + python3 as a SIF, cached."""
    return app.base_sif(user)


@pytest.fixture(scope="session")
def numpy_env(user: User, shared_dir: Path) -> Path:
    """numpy (binary wheel) + cowsay (pure Python, console script), built by the test user."""
    need("mksquashfs")
    prefix = shared_dir / "numpy-env"
    req = shared_dir / "requirements.txt"
    req.write_text("numpy\ncowsay\n")
    ok(sqenv("create", prefix, "-r", req, "--python", BASE_PYTHON, user=user))
    return prefix


@pytest.fixture(scope="session")
def small_env(user: User, shared_dir: Path) -> Path:
    """A pure-Python env (six), cheap to copy and move around."""
    need("mksquashfs")
    prefix = shared_dir / "small-env"
    ok(sqenv("create", prefix, "six", "--python", BASE_PYTHON, user=user))
    return prefix


# ---------------------------------------------------------------- leak guard
LEAK_MARGIN = 15  # seconds on top of the longest idle timeout (the image server checks once a second)
DEFAULT_IDLE = 60  # the launcher's default idle timeout (config key idle_timeout)


@dataclass(frozen=True)
class Leftover:
    """One thing of a test user's that should have gone away by itself."""

    kind: str  # "daemon", "mount" or "runtime dir"
    where: str  # "host" or the Slurm test node whose mount namespace holds it
    what: str  # pid and command line, mount point, or path
    ns_pid: int  # a process in that mount namespace (for nsenter), or the daemon's pid

    def __str__(self) -> str:
        return f"{self.kind} on {self.where}: {self.what}"


def _node_namespaces() -> dict[str, int]:
    """One process per mount namespace that is a "node" of this machine: this one (host) and
    each slurmd of the Slurm test cluster (node1, node2 have their own /tmp)."""
    found = {os.readlink("/proc/self/ns/mnt"): ("host", os.getpid())}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not argv[0].endswith(b"slurmd") or b"-N" not in argv:
                continue
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            node = argv[argv.index(b"-N") + 1].decode()
        except (OSError, IndexError):
            continue
        found.setdefault(ns, (node, int(pid)))
    return {node: pid for node, pid in found.values()}


def _daemons(uid: int) -> list[tuple[int, str]]:
    """(pid, command line) of image servers of `uid`, in any mount namespace."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if os.stat(f"/proc/{pid}").st_uid != uid or not is_image_server(argv):
                continue
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie holds nothing
        except (OSError, IndexError):
            continue
        found.append((int(pid), b" ".join(argv).decode(errors="replace").strip()))
    return found


def _own_dir(path: Path, uid: int) -> bool:
    """`path` is a real directory (not a link) of `uid` (it may vanish meanwhile)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid


def _leftovers(uid: int) -> list[Leftover]:
    found = []
    where_of = {}
    nodes = _node_namespaces()
    for node, ns_pid in nodes.items():
        where_of[os.readlink(f"/proc/{ns_pid}/ns/mnt")] = node
        try:
            mountinfo = Path(f"/proc/{ns_pid}/mountinfo").read_text()
        except OSError:
            continue
        for line in mountinfo.splitlines():
            head, _, tail = line.partition(" - ")
            fstype, source, options = [*tail.split(), "", "", ""][:3]
            point = head.split()[4]
            ours = point.startswith(f"/tmp/sqenv-{uid}/") or any(n in fstype + source for n in ("squashfuse", "sqenv"))
            if fstype.startswith("fuse") and ours and f"user_id={uid}" in options.split(","):
                found.append(Leftover("mount", node, point, ns_pid))
        runtime = Path(f"/proc/{ns_pid}/root/tmp/sqenv-{uid}")
        if _own_dir(runtime, uid):
            found.append(Leftover("runtime dir", node, f"/tmp/sqenv-{uid}", ns_pid))
    for pid, cmd in _daemons(uid):
        try:
            node = where_of.get(os.readlink(f"/proc/{pid}/ns/mnt"), "another mount namespace")
        except OSError:
            continue
        found.append(Leftover("daemon", node, f"pid {pid}: {cmd}", pid))
    return found


def _idle_timeout(leftovers: list[Leftover]) -> int:
    """The longest idle timeout of the daemons found (their own `--serve -t N`), else the
    one the test set (SQENV_IDLE_TIMEOUT of this process), else the launcher's default."""
    timeouts = [int(m) for lo in leftovers for m in re.findall(r"(?:\btimeout=|--serve -t )(\d+)", lo.what)]
    if timeouts:
        return max(timeouts)
    return int(os.environ.get("SQENV_IDLE_TIMEOUT") or DEFAULT_IDLE)


def _clean(leftovers: list[Leftover], uid: int) -> None:
    """Unmount (lazily), stop the daemons, remove the runtime dirs: the next test starts clean."""
    for lo in leftovers:
        if lo.kind == "mount":
            cmd = ["nsenter", "-t", str(lo.ns_pid), "-m", "fusermount3", "-u", "-z", lo.what]
            subprocess.run(cmd, capture_output=True, timeout=30)
    for lo in leftovers:
        if lo.kind == "daemon":
            try:
                os.kill(lo.ns_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while _daemons(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in _daemons(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for lo in leftovers:
        if lo.kind == "runtime dir":
            # only the directory checked above: a real directory of that user, not a link
            path = Path(f"/proc/{lo.ns_pid}/root{lo.what}")
            if _own_dir(path, uid):
                shutil.rmtree(path, ignore_errors=True)


def check_no_leaks(users: Sequence[str], max_wait: float | None = None) -> list[str]:
    """Wait until the users' mount daemons, sqenv FUSE mounts and runtime dirs /tmp/sqenv-UID
    are gone on every node of this machine (at most the idle timeout + LEAK_MARGIN); return
    what was still there (and has now been cleaned up), one line per thing."""
    uids = {}
    for name in users:
        try:
            uids[name] = pwd.getpwnam(name).pw_uid
        except KeyError:
            continue  # never created: nothing of it can be left
    found = {name: _leftovers(uid) for name, uid in uids.items()}
    if not any(found.values()):
        return []
    wait = max_wait if max_wait is not None else max(_idle_timeout(lo) for lo in found.values()) + LEAK_MARGIN
    deadline = time.monotonic() + wait
    while any(found.values()) and time.monotonic() < deadline:
        time.sleep(0.25)
        found = {name: _leftovers(uid) for name, uid in uids.items()}
    lines = []
    for name, leftovers in found.items():
        if leftovers:
            lines += [f"{name}: {lo}" for lo in leftovers]
            _clean(leftovers, uids[name])
    return lines


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """For tests marked ``leak_guard(*users)`` (a module can set it in ``pytestmark``): after the
    test, what those users' launches mounted must go away by itself within the idle timeout.
    Anything left is cleaned up (so it cannot change the next test) and the test fails, naming it.
    Only root can see and clean every node's mounts; others skip nothing, they just check less."""
    marker = request.node.get_closest_marker("leak_guard")
    yield
    if marker is None or os.geteuid() != 0:
        return
    users = [u for m in request.node.iter_markers("leak_guard") for u in m.args] or [USER]
    leaked = check_no_leaks(users)
    if leaked:
        pytest.fail(
            "left behind after the idle timeout (now cleaned up):\n  " + "\n  ".join(leaked),
            pytrace=False,
        )
