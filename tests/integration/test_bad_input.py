"""Bad input: one clear line, a non-zero exit, no traceback, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import BASE_PYTHON, SQENV, User, fuse_mounts, ok, run, sqenv


def assert_clean_failure(proc: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr, proc.stderr


def assert_nothing_left(prefix: Path, build_dir: Path | None = None) -> None:
    assert not prefix.exists(), f"{prefix} was created"
    siblings = [p.name for p in prefix.parent.iterdir() if p.name.startswith(f".{prefix.name}.sqenv-")]
    assert not siblings, siblings
    if build_dir is not None:
        assert not list(build_dir.iterdir()), list(build_dir.iterdir())


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    path = tmp_path / "build"
    path.mkdir()
    return path


def create(prefix: Path, build_dir: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return sqenv("create", prefix, "--python", BASE_PYTHON, "--build-dir", build_dir, *args, **kw)


def test_missing_requirements_file(tmp_path: Path, build_dir: Path) -> None:
    prefix = tmp_path / "env"
    proc = create(prefix, build_dir, "-r", tmp_path / "nope.txt")
    assert_clean_failure(proc, 2, "nope.txt", "does not exist")
    assert_nothing_left(prefix, build_dir)


def test_unreadable_requirements_file(tmp_path: Path, user: User) -> None:
    req = Path("/var/tmp") / f"sqenv-unreadable-{os.getpid()}.txt"
    req.write_text("six\n")
    req.chmod(0o600)  # root's; the test user cannot read it
    try:
        prefix = Path("/tmp") / f"sqenv-unreadable-{os.getpid()}"
        proc = sqenv("create", prefix, "-r", req, "--python", BASE_PYTHON, user=user)
        assert_clean_failure(proc, 2, "cannot read requirements file", str(req))
        assert_nothing_left(prefix)
    finally:
        req.unlink()


def test_unparsable_requirement(tmp_path: Path, build_dir: Path) -> None:
    req = tmp_path / "req.txt"
    req.write_text("six\nnumpy>=>1\n")
    prefix = tmp_path / "env"
    assert_clean_failure(create(prefix, build_dir, "-r", req), 2, f"{req}:2", "not a valid requirement")
    assert_nothing_left(prefix, build_dir)


@pytest.mark.slow
def test_package_not_on_the_index(tmp_path: Path, build_dir: Path) -> None:
    prefix = tmp_path / "env"
    proc = create(prefix, build_dir, "sqenv-no-such-package-xq7")
    assert_clean_failure(proc, 5, "`sqenv-no-such-package-xq7` was not found on the package index")
    assert_nothing_left(prefix, build_dir)


def test_sdist_that_fails_to_build_shows_the_log_tail(tmp_path: Path, build_dir: Path) -> None:
    project = tmp_path / "brokenpkg"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "brokenpkg"\nversion = "1.0"\n'
    )
    (project / "backend.py").write_text(
        "def build_wheel(*a, **k):\n    raise SystemExit('compiler exploded: missing foo.h')\n"
        "def get_requires_for_build_wheel(*a, **k):\n    return []\n"
    )
    prefix = tmp_path / "env"
    proc = create(prefix, build_dir, str(project))
    assert_clean_failure(proc, 5, "failed to build", "compiler exploded: missing foo.h")
    assert_nothing_left(prefix, build_dir)


def test_prefix_exists_and_is_not_empty(tmp_path: Path, build_dir: Path) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "keep.txt").write_text("mine")
    proc = create(prefix, build_dir, "six")
    assert_clean_failure(proc, 3, "exists and is not empty", "--force")
    assert (prefix / "keep.txt").read_text() == "mine"
    assert not list(build_dir.iterdir())


def test_parent_not_writable(user: User) -> None:
    prefix = Path("/var/lib") / "sqenv-test-env"
    proc = sqenv("create", prefix, "six", "--python", BASE_PYTHON, user=user)
    assert_clean_failure(proc, 3, "`/var/lib` is not writable for you", "your project or home directory")
    assert_nothing_left(prefix)


@pytest.mark.parametrize(
    "python,phrase", [("/nonexistent/python3", "was not found"), ("/bin/true", "is not a working Python interpreter")]
)
def test_bad_base_python(tmp_path: Path, build_dir: Path, python: str, phrase: str) -> None:
    prefix = tmp_path / "env"
    proc = sqenv("create", prefix, "six", "--python", python, "--build-dir", build_dir)
    assert_clean_failure(proc, 2, phrase)
    assert_nothing_left(prefix, build_dir)


def test_mksquashfs_missing_points_to_doctor(tmp_path: Path, build_dir: Path) -> None:
    prefix = tmp_path / "env"
    proc = create(prefix, build_dir, "six", env={"PATH": "/nonexistent"})
    assert_clean_failure(proc, 4, "`mksquashfs` is not installed", "sqenv doctor")
    assert_nothing_left(prefix, build_dir)


def test_failing_post_install_shows_its_output(tmp_path: Path, build_dir: Path) -> None:
    script = tmp_path / "post.sh"
    script.write_text("echo 'post-install says: boom'\nexit 3\n")
    prefix = tmp_path / "env"
    proc = create(prefix, build_dir, "six", "--post-install", script)
    assert_clean_failure(proc, 5, "post-install script", "exit code 3", "post-install says: boom")
    assert_nothing_left(prefix, build_dir)


def test_post_install_runs_inside_the_environment(tmp_path: Path, build_dir: Path) -> None:
    script = tmp_path / "post.sh"
    script.write_text(
        "python -c \"import six, sys; open(sys.prefix + '/post.txt', 'w').write(six.__name__)\"\n"
        "echo from-cwd > post-cwd.txt\n"
    )
    prefix = tmp_path / "env"
    ok(create(prefix, build_dir, "six", "--post-install", script, cwd=tmp_path))
    assert (tmp_path / "post-cwd.txt").read_text() == "from-cwd\n"
    out = ok(run([str(prefix / "bin" / "python"), "-c", "import sys; print(open(sys.prefix + '/post.txt').read())"]))
    assert out.stdout.strip() == "six"


def test_disk_full_in_the_build_dir(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        prefix = tmp_path / "env"
        proc = sqenv("create", prefix, "numpy", "--python", BASE_PYTHON, "--build-dir", small)
        assert_clean_failure(proc, 5, "ran out of space", "--build-dir")
        assert_nothing_left(prefix, small)
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["Creating a venv", "Resolving", "Compiling", "Packing"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda sig: sig.name)
def test_interrupt_in_any_phase_leaves_nothing(
    tmp_path: Path, build_dir: Path, phase: str, sig: signal.Signals
) -> None:
    prefix = tmp_path / "env"
    proc = subprocess.Popen(
        [*SQENV, "create", str(prefix), "numpy", "--python", BASE_PYTHON, "--build-dir", str(build_dir)],
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run started in the background would pass SIGINT on ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(phase):
            time.sleep(0.05)
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, "".join(seen) + rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert_nothing_left(prefix, build_dir)


def test_launcher_with_deleted_image(small_env: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(small_env), str(copy)], check=True)
    for image in copy.glob("*.sqfs"):
        image.unlink()
    proc = run([str(copy / "bin" / "python"), "-c", "pass"], env={"SQENV_RUNTIME_DIR": str(tmp_path / "rt")})
    assert proc.returncode == 125
    assert "image" in proc.stderr and "is missing" in proc.stderr and "sqenv create --force" in proc.stderr


def test_launcher_with_corrupt_image(small_env: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(small_env), str(copy)], check=True)
    for image in copy.glob("*.sqfs"):
        image.write_bytes(b"\0garbage" * 4096)
    runtime = tmp_path / "rt"
    proc = run([str(copy / "bin" / "python"), "-c", "pass"], env={"SQENV_RUNTIME_DIR": str(runtime)})
    assert proc.returncode == 125
    assert "cannot mount the image" in proc.stderr and "corrupt" in proc.stderr
    assert not fuse_mounts(str(runtime))
    verify = sqenv("info", copy, "--verify")
    assert_clean_failure(verify, 3, "checksum mismatch")


def test_launcher_without_fusermount_points_to_doctor(small_env: Path, tmp_path: Path) -> None:
    proc = run(
        [str(small_env / "bin" / "python"), "-c", "pass"],
        env={"SQENV_RUNTIME_DIR": str(tmp_path / "rt"), "PATH": "/nonexistent"},
    )
    assert proc.returncode == 125
    assert "`fusermount3` is not installed" in proc.stderr and "sqenv doctor" in proc.stderr


def test_usage_errors_are_one_line() -> None:
    assert_clean_failure(sqenv("create"), 2, "PREFIX")
    assert_clean_failure(sqenv("info", "/nonexistent/prefix"), 3, "does not exist")
    assert_clean_failure(sqenv("run", "/tmp", "--", "true"), 3, "not a sqenv install")
    assert_clean_failure(sqenv("run", "/tmp"), 2, "no command given")


PACKING_REFUSED = [
    (["--compression-level", "99"], "compression level 99 is out of range for zstd"),
    (["--compression-level", "-5"], "compression level -5 is out of range for zstd"),
    (["--compression", "gzip", "--compression-level", "10"], "out of range for gzip"),
    (["--compression", "lz4", "--compression-level", "3"], "lz4 takes no compression level"),
    (["--compression", "xz", "--compression-level", "3"], "xz takes no compression level"),
    (["-j", "-1"], "`-j -1`: the number of cores must be at least 1"),
    (["-j", "0"], "`-j 0`: the number of cores must be at least 1"),
]


@pytest.mark.parametrize(("args", "phrase"), PACKING_REFUSED, ids=[" ".join(args) for args, _ in PACKING_REFUSED])
def test_packing_options_refused_before_any_work(tmp_path: Path, build_dir: Path, args: list[str], phrase: str) -> None:
    prefix = tmp_path / "env"
    proc = create(prefix, build_dir, "six", *args, timeout=60)
    assert_clean_failure(proc, 2, phrase)
    assert "Installing" not in proc.stderr and "Creating" not in proc.stderr, proc.stderr
    assert_nothing_left(prefix, build_dir)


def test_update_packing_options_refused(small_env: Path, user: User) -> None:
    proc = sqenv("update", small_env, "idna", "--compression-level", "0", user=user, timeout=60)
    assert_clean_failure(proc, 2, "compression level 0 is out of range for zstd")


def test_non_utf8_prefix_refused_before_any_work(tmp_path: Path, build_dir: Path) -> None:
    prefix = os.fsencode(tmp_path) + b"/p\xff\xfe"
    argv = [*SQENV, "create", prefix, "six", "--python", BASE_PYTHON, "--build-dir", str(build_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=60)
    assert_clean_failure(proc, 2, "is not valid UTF-8")
    assert os.listdir(tmp_path) == ["build"] and not list(build_dir.iterdir())


def _special_input(kind: str, tmp_path: Path) -> Path:
    if kind == "fifo":
        path = tmp_path / "req.fifo"
        os.mkfifo(path)
        return path
    if kind == "huge":
        path = tmp_path / "huge.txt"
        with path.open("wb") as fh:
            fh.truncate(17 << 20)  # sparse: 17 MB of NULs
        return path
    return Path({"dev-zero": "/dev/zero", "directory": str(tmp_path)}[kind])


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [
        ("fifo", "is a FIFO, not a regular file"),
        ("dev-zero", "is a character device, not a regular file"),
        ("directory", "is a directory, not a regular file"),
        ("huge", "is larger than 16 MB"),
    ],
)
def test_special_or_huge_requirements_file(tmp_path: Path, build_dir: Path, kind: str, phrase: str) -> None:
    req = _special_input(kind, tmp_path)
    prefix = tmp_path / "env"
    proc = create(prefix, build_dir, "-r", req, timeout=60)
    assert_clean_failure(proc, 2, phrase)
    assert_nothing_left(prefix, build_dir)


def test_special_environment_file(tmp_path: Path, build_dir: Path) -> None:
    prefix = tmp_path / "env"
    proc = sqenv("create", prefix, "-f", "/dev/zero", "--build-dir", build_dir, timeout=60)
    assert_clean_failure(proc, 2, "is a character device, not a regular file")
    assert_nothing_left(prefix, build_dir)
