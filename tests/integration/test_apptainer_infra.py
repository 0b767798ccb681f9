"""The test Apptainer works: real `apptainer exec`s through the shim, as a non-root user."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apptainer import Apptainer  # tests/infra, on sys.path through tests/conftest.py

pytestmark = pytest.mark.apptainer


@pytest.fixture(scope="module")
def user(app: Apptainer) -> str:
    return app.ensure_user("sqapp")


@pytest.fixture(scope="module")
def base(base_sif: Path) -> Path:
    return base_sif


@pytest.fixture
def work(app: Apptainer, user: str) -> Iterator[Path]:
    with app.workdir(user) as path:
        yield path


def test_runs_as_a_non_root_user(app: Apptainer, user: str, base: Path, work: Path) -> None:
    """What the processes really run as (on the host and inside the container), not the name."""
    host = app.run(["id", "-u"], user=user, cwd=work)
    inside = app.run(["apptainer", "exec", base, "id", "-u"], user=user, cwd=work)
    assert (host.returncode, inside.returncode) == (0, 0), host.stderr + inside.stderr
    uid = pwd.getpwnam(user).pw_uid
    assert uid != 0 and host.stdout.strip() == inside.stdout.strip() == str(uid)


def test_exec_runs_a_command_in_the_base_image(app: Apptainer, user: str, base: Path, work: Path) -> None:
    proc = app.run(["apptainer", "exec", base, "/bin/sh", "-c", "echo hi"], user=user, cwd=work)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hi\n", "")


def test_base_image_is_debian_12_with_python_3_11_and_sees_the_cwd(
    app: Apptainer, user: str, base: Path, work: Path
) -> None:
    (work / "note").write_text("from the host\n")
    script = "cat /etc/debian_version; python3 -c 'import sys; print(sys.version_info[:2])'; id -un; pwd; cat note"
    proc = app.run(["apptainer", "exec", base, "sh", "-c", script], user=user, cwd=work)
    assert proc.returncode == 0, proc.stderr
    version, python, name, cwd, note = proc.stdout.splitlines()
    assert version.startswith("12.")
    assert (python, name, cwd, note) == ("(3, 11)", user, str(work), "from the host")


def test_binds_a_squashfs_image_with_image_src(app: Apptainer, user: str, base: Path, work: Path) -> None:
    src = work / "src"
    src.mkdir()
    (src / "hello").write_text("hello from the image\n")
    img = work / "img.sqfs"
    made = app.run(["mksquashfs", src, img, "-noappend", "-quiet"], user=user, cwd=work)
    assert made.returncode == 0, made.stderr
    proc = app.run(
        ["apptainer", "exec", "--bind", f"{img}:/mnt/sqenv:image-src=/", base, "cat", "/mnt/sqenv/hello"],
        user=user,
        cwd=work,
    )
    assert (proc.returncode, proc.stdout) == (0, "hello from the image\n"), proc.stderr


@pytest.mark.parametrize(("script", "code"), [("exit 3", 3), ("kill -TERM $$", 128 + 15)], ids=["exit-3", "SIGTERM"])
def test_exit_codes_pass_through(app: Apptainer, user: str, base: Path, work: Path, script: str, code: int) -> None:
    """A death by signal N comes out as exit status 128+N (bwrap's doing)."""
    proc = app.run(["apptainer", "exec", base, "sh", "-c", script], user=user, cwd=work)
    assert proc.returncode == code, proc.stderr


def test_singularity_name_works(app: Apptainer, user: str, base: Path, work: Path) -> None:
    proc = app.run(["singularity", "exec", base, "true"], user=user, cwd=work)
    assert proc.returncode == 0, proc.stderr


def test_shim_refuses_a_cwd_apptainer_would_not_see(app: Apptainer, user: str, base: Path) -> None:
    proc = app.run(["apptainer", "exec", base, "true"], user=user, cwd="/var/cache")
    assert proc.returncode == 125
    assert "not visible in the shim" in proc.stderr


def test_sigterm_to_the_process_group_reaches_the_program(app: Apptainer, user: str, base: Path, work: Path) -> None:
    """The way to stop a launched program: signal its group (the shim forwards nothing)."""
    # sh itself gets the signal (a long-lived child could lose it between fork and exec)
    script = "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"
    with app.popen(
        ["apptainer", "exec", base, "sh", "-c", script],
        user=user,
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            os.killpg(proc.pid, signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    # once or twice: from the group signal and from apptainer, which forwards what it receives
    assert out in ("got TERM\n", "got TERM\ngot TERM\n")
    deadline = time.monotonic() + 10  # and nothing is left of it
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_members(proc.pid) == []


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_time_of_one_exec(app: Apptainer, user: str, base: Path, work: Path) -> None:
    argv = ["apptainer", "exec", base, "true"]
    assert app.run(argv, user=user, cwd=work).returncode == 0  # warm the page cache
    times = []
    for _ in range(5):
        start = time.perf_counter()
        proc = app.run(argv, user=user, cwd=work)
        times.append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr
    print(
        f"\none `apptainer exec BASE.sif true` through the shim: "
        f"min {min(times) * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms"
    )
    assert statistics.median(times) < 5
