"""Commands never destroy what sqenv did not make, one writer per prefix, nothing world-writable.

As the ordinary test user, small envs (`six` on Debian's Python).
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from support import BASE_PYTHON, SQENV, User, need, ok, run, sqenv


@pytest.fixture
def area(user: User) -> Path:
    path = Path("/var/tmp") / f"sqenv-publish-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(mode=0o755)
    os.chown(path, user.uid, user.gid)
    yield path
    run(["rm", "-rf", str(path)], user=user)


def create(prefix: Path, user: User, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return sqenv("create", prefix, "six", "--python", BASE_PYTHON, *args, user=user, **kw)


def siblings(prefix: Path) -> list[str]:
    return [n for n in os.listdir(prefix.parent) if n.startswith(f".{prefix.name}.sqenv-")]


def test_force_refuses_a_directory_sqenv_did_not_make(area: Path, user: User) -> None:
    project = area / "proj"
    run(["mkdir", str(project)], user=user)
    run(["sh", "-c", f"echo 'print(1)' > {project}/main.py"], user=user)
    proc = create(project, user, "--force", cwd=project)
    assert proc.returncode == 3, proc.stderr
    assert "is not an sqenv install" in proc.stderr and "main.py" in proc.stderr, proc.stderr
    assert (project / "main.py").read_text() == "print(1)\n"
    assert sorted(os.listdir(project)) == ["main.py"]
    assert siblings(project) == []


def test_force_refuses_an_install_with_foreign_files(area: Path, user: User) -> None:
    prefix = area / "env"
    ok(create(prefix, user))
    run(["sh", "-c", f"echo data > {prefix}/results.csv"], user=user)
    proc = create(prefix, user, "--force")
    assert proc.returncode == 3 and "results.csv" in proc.stderr, proc.stderr
    assert (prefix / "results.csv").read_text() == "data\n"


def test_force_replaces_an_install_and_an_empty_directory(area: Path, user: User) -> None:
    prefix = area / "env"
    run(["mkdir", str(prefix)], user=user)
    ok(create(prefix, user, "--force"))
    ok(create(prefix, user, "--force"))
    assert ok(run([str(prefix / "bin/python"), "-c", "import six"], user=user))
    assert siblings(prefix) == []


def test_two_concurrent_creates_never_both_succeed(area: Path, user: User) -> None:
    """The first create holds the prefix (its pre-install script waits); a second one fails at once."""
    prefix = area / "env"
    gate = area / "gate"
    script = area / "pre.sh"
    script.write_text(f"touch {area}/started; while [ ! -e {gate} ]; do sleep 0.05; done\n")
    argv = [*SQENV, "create", str(prefix), "six", "--python", BASE_PYTHON, "--pre-install", str(script)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    first = subprocess.Popen(user.wrap(argv), env=user.env(), cwd="/tmp", **pipes)
    try:
        while not (area / "started").exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = create(prefix, user)
        assert second.returncode != 0, second.stderr
        assert f"another sqenv is creating {prefix}" in second.stderr, second.stderr
    finally:
        run(["touch", str(gate)], user=user)
        _out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert siblings(prefix) == []


def test_post_install_writing_into_prefix_is_kept_and_refused(area: Path, user: User) -> None:
    prefix = area / "env"
    script = area / "post.sh"
    script.write_text(f"mkdir -p {prefix}/data && echo precious > {prefix}/data/f\n")
    proc = create(prefix, user, "--post-install", script)
    assert proc.returncode == 3, proc.stderr
    assert "wrote into" in proc.stderr and "`data`" in proc.stderr, proc.stderr
    assert (prefix / "data" / "f").read_text() == "precious\n"
    assert siblings(prefix) == []


def _world_writable(root: Path) -> list[str]:
    bad = []
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o002:
            bad.append(f"{path} {stat.filemode(st.st_mode)}")
    return bad


@pytest.mark.parametrize("umask", ["000", "002", "007", "022", "027", "077"], ids=lambda u: f"umask-{u}")
def test_nothing_world_writable_whatever_the_umask(area: Path, user: User, umask: str) -> None:
    need("mksquashfs")
    prefix = area / "env"
    sh = f'umask {umask}; exec "$@"'
    ok(run(["sh", "-c", sh, "sh", *SQENV, "create", str(prefix), "six", "--python", BASE_PYTHON], user=user))
    assert _world_writable(prefix) == [], umask
    ok(run(["sh", "-c", sh, "sh", *SQENV, "update", str(prefix), "idna"], user=user))
    assert _world_writable(prefix) == [], umask
    ok(run(["sh", "-c", sh, "sh", *SQENV, "create", str(prefix), "six", "--python", BASE_PYTHON, "--force"],
           user=user))  # fmt: skip
    assert _world_writable(prefix) == [], umask
    assert ok(run([str(prefix / "bin/python"), "-c", "import six"], user=user))


def test_interrupt_after_the_commit_reports_the_install(area: Path, user: User) -> None:
    """SIGINT arriving with the rename that publishes: the install exists, and sqenv says so."""
    need("strace")
    prefix = area / "env"
    base = [*SQENV, "create", "PREFIX", "six", "--python", BASE_PYTHON, "--build-dir", str(area)]
    log = area / "dry.log"
    dry = ["strace", "-o", str(log), "-e", "trace=rename", *[str(area / "dry") if a == "PREFIX" else a for a in base]]
    ok(run(dry, user=user))
    # the publishing rename is the main process's last rename (strace without -f: only that process)
    renames = [line for line in log.read_text().splitlines() if line.startswith("rename(")]
    assert renames[-1].endswith(f'"{area / "dry"}") = 0'), renames[-3:]
    argv = ["strace", "-o", "/dev/null", "-e", "trace=rename",
            "-e", f"inject=rename:signal=SIGINT:when={len(renames)}",
            *[str(prefix) if a == "PREFIX" else a for a in base]]  # fmt: skip
    proc = run(argv, user=user)
    assert (prefix / "sqenv.json").is_file(), proc.stderr
    assert ok(run([str(prefix / "bin/python"), "-c", "import six"], user=user))
    assert "nothing was changed" not in proc.stderr, proc.stderr
    assert proc.returncode == 130 and "is installed and works" in proc.stderr, proc.stderr
    assert [n for n in os.listdir(area) if n.startswith("sqenv-build-")] == []
    assert siblings(prefix) == []
