"""What the tests share, in one place: CI detection, the ordinary test user, and the helpers
that run sqenv and check results. conftest.py holds only pytest's hooks and fixtures and
imports from here; test modules import from here (tests/ is on sys.path through conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent

SQENV = [sys.executable, "-m", "sqenv"]
BASE_PYTHON = "/usr/bin/python3"
USER = "sqenvuser"
# The one place CI is detected: `.ci/run` exports CI=true (GitHub and GitLab set CI=true too).
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
PASS_THROUGH = ("SSL_", "PIP_", "UV_", "REQUESTS_CA", "CURL_CA", "CI")


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: a skip locally, a failure under CI (a skipped test
    proves nothing, and CI must not go green on a machine where a feature could not be tested)."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def need(tool: str) -> None:
    """A missing system tool skips a test locally and fails it in CI."""
    if shutil.which(tool) is None:
        unavailable(f"`{tool}` is not installed")


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
        unavailable("needs root to create the test user")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


@contextlib.contextmanager
def owned_dir(name: str, uid: int, gid: int) -> Iterator[Path]:
    """/var/tmp/NAME-PID, world-readable and owned by a test user (Slurm nodes and the apptainer
    shim see /var/tmp; /tmp is private to each node), removed afterwards."""
    path = Path("/var/tmp") / f"{name}-{os.getpid()}"
    path.mkdir(mode=0o755)
    os.chown(path, uid, gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_traversable(path: Path) -> None:
    """Let other users pass through (not list) every directory above `path`."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


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


def launchers(prefix: Path) -> list[str]:
    """Names of the programs an install puts on PATH (bin/ also holds the activate scripts)."""
    return sorted(p.name for p in (prefix / "bin").iterdir() if p.is_symlink())


def fuse_mounts(under: str) -> list[str]:
    """Mount points of image servers (FUSE) under a directory, from this node's mount table."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if fields[4].startswith(under) and "fuse" in line:
                found.append(fields[4])
    return found


def is_image_server(argv: list[bytes]) -> bool:
    """sqenv's image server (`sqenv-enter --serve ...`), or a squashfuse some tool started."""
    return argv[1:2] == [b"--serve"] or argv[0].split(b"/")[-1].startswith(b"squashfuse")
