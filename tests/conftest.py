"""Shared fixtures: the real sqenv CLI, an ordinary test user, and environments built once.

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
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "infra"))

SQENV = [sys.executable, "-m", "sqenv"]
BASE_PYTHON = "/usr/bin/python3"
USER = "sqenvuser"
IN_CI = os.environ.get("CI") == "true"
PASS_THROUGH = ("SSL_", "PIP_", "UV_", "REQUESTS_CA", "CURL_CA", "CI")


def need(tool: str) -> None:
    """A missing system tool skips a test locally and fails it in CI."""
    if shutil.which(tool) is None:
        (pytest.fail if IN_CI else pytest.skip)(f"`{tool}` is not installed")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
        }
        # the machine's network settings (CA bundle of the registry proxy, pip/uv options)
        env.update({k: v for k, v in os.environ.items() if k.startswith(PASS_THROUGH) or k.lower().endswith("_proxy")})
        env.update(extra or {})
        return env


def ensure_user(name: str) -> User:
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test user")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def _traversable(path: Path) -> None:
    """Let other users pass through (not list) every directory above `path`."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


@pytest.fixture(scope="session", autouse=True)
def machine_setup() -> None:
    if os.geteuid() == 0:
        if os.path.exists("/dev/fuse"):
            os.chmod("/dev/fuse", 0o666)
        # the test user runs this checkout's sqenv with this interpreter
        for path in (ROOT, Path(sys.executable).resolve().parent, Path(sys.prefix)):
            _traversable(path)


@pytest.fixture(scope="session")
def user() -> User:
    return ensure_user(USER)


def run(
    argv: Sequence[str],
    *,
    user: User | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command (as `user` if given) and capture its output."""
    if user is not None:
        argv = user.wrap(argv)
        full_env = user.env(env)
        cwd = cwd or "/tmp"
    else:
        full_env = dict(os.environ)
        full_env.update(env or {})
    return subprocess.run(
        list(argv), env=full_env, cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout
    )


def sqenv(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return run([*SQENV, *map(str, args)], **kw)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def shared_dir(user: User, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the test user owns, for installs shared across tests."""
    path = Path("/var/tmp") / f"sqenv-tests-{os.getpid()}"
    path.mkdir(mode=0o755)
    os.chown(path, user.uid, user.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


def fuse_mounts(under: str) -> list[str]:
    """Mount points of squashfuse under a directory, from this node's mount table."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if fields[4].startswith(under) and "fuse" in line:
                found.append(fields[4])
    return found
