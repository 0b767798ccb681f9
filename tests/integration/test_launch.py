"""Programs run through launchers behave as if a normal venv lived in PREFIX.

Every test here runs the real launcher (the `sqenv-enter` helper's launch mode, and the POSIX sh
launcher behind it), the real FUSE image server mount and the real namespace helper.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import BASE_PYTHON, User, fuse_mounts, ok, run, sqenv

pytestmark = pytest.mark.slow


def py(prefix: Path, code: str, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return run([str(prefix / "bin" / "python"), "-c", code, *args], **kw)


def test_sys_executable_prefix_and_binary_wheel(numpy_env: Path, user: User) -> None:
    out = ok(
        py(
            numpy_env,
            "import sys, numpy; print(sys.executable); print(sys.prefix); print(numpy.__file__);"
            "print(numpy.arange(4).sum())",
            user=user,
        )
    ).stdout.split("\n")
    assert out[0] == f"{numpy_env}/bin/python"
    assert out[1] == str(numpy_env)
    assert out[2].startswith(f"{numpy_env}/lib/python3")
    assert out[3] == "6"


def test_runs_as_ordinary_user_with_own_mount(numpy_env: Path, user: User) -> None:
    code = "import os, numpy; print(os.getuid()); print(os.stat(numpy.__file__).st_size > 0)"
    out = ok(py(numpy_env, code, user=user)).stdout.split()
    assert out == [str(user.uid), "True"]
    assert fuse_mounts(f"/tmp/sqenv-{user.uid}/"), "the user's image mount should be shared and still there"


def test_console_script_pip_list_and_freeze(numpy_env: Path, user: User) -> None:
    assert "hello sqenv" in ok(run([str(numpy_env / "bin" / "cowsay"), "-t", "hello sqenv"], user=user)).stdout
    listed = ok(run([str(numpy_env / "bin" / "pip"), "list", "--format=json"], user=user)).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"numpy", "cowsay", "pip"} <= names
    assert "numpy==" in ok(run([str(numpy_env / "bin" / "pip"), "freeze"], user=user)).stdout


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
            st.sampled_from(["", " ", "a b", "'", '"', "\n", "*", "?[a]", "$HOME", "`id`", "ü→∑", "--", "-c", "\\"]),
        ),
        max_size=8,
    )
)
def test_argv_passes_through_unchanged(small_env: Path, args: list[str]) -> None:
    proc = py(small_env, "import sys, json; sys.stdout.write(json.dumps(sys.argv[1:]))", *args)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == args


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255], ids=lambda code: f"exit-{code}")
def test_exit_codes(small_env: Path, code: int) -> None:
    assert py(small_env, f"import sys; sys.exit({code})").returncode == code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda sig: sig.name)
def test_signal_reaches_the_program_which_keeps_the_launcher_pid(
    small_env: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    marker = tmp_path / "got"
    code = (
        "import os, signal, sys, time\n"
        f"def h(s, f):\n    open({str(marker)!r}, 'w').write(str(s)); sys.exit(7)\n"
        f"signal.signal({int(sig)}, h)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([str(small_env / "bin" / "python"), "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    assert pid == proc.pid, "the launcher must exec, not fork: the program keeps the pid"
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 7
    assert marker.read_text() == str(int(sig))


def test_stdin_stdout_stderr(small_env: Path) -> None:
    code = "import sys; data = sys.stdin.read(); print(data.upper(), end=''); print('E', file=sys.stderr)"
    proc = py(small_env, code, input="piped\ndata")
    assert proc.stdout == "PIPED\nDATA"
    assert proc.stderr == "E\n"


def test_environment_and_cwd(small_env: Path, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("relative")
    code = "import os; print(os.environ['SQENV_TEST_VAR']); print(os.getcwd()); print(open('data.txt').read())"
    out = ok(py(small_env, code, env={"SQENV_TEST_VAR": "v a l"}, cwd=tmp_path)).stdout.splitlines()
    assert out == ["v a l", str(tmp_path), "relative"]


def test_tty_passes_through(small_env: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # child: the launcher on a terminal
        os.execv(
            str(small_env / "bin" / "python"),
            ["python", "-c", "import sys; print('tty', sys.stdin.isatty(), sys.stdout.isatty())"],
        )
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    assert b"tty True True" in out


def test_host_stays_visible(small_env: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    code = f"import os; print(os.path.exists({str(tmp_path / 'f')!r}), os.path.isdir('/etc'), os.path.isdir('/home'))"
    assert ok(py(small_env, code)).stdout.split() == ["True", "True", "True"]


def test_programs_start_without_a_shell_and_the_rest_goes_through_the_launcher(small_env: Path, user: User) -> None:
    """bin/NAME links to the helper, which starts the program itself (launch/launch.h): two execs,
    no /bin/sh. What it does not handle runs the shell launcher as before, $0 and arguments kept."""
    python = small_env / "bin" / "python"
    assert os.readlink(python) == "../sqenv-enter"
    ok(run([str(python), "-c", "pass"], user=user))  # mounted (fusermount3, setuid, would not be under strace)
    traced = ok(run(["strace", "-f", "-qq", "-e", "trace=execve", str(python), "-c", "pass"], user=user)).stderr
    assert re.findall(r'execve\("([^"]+)"', traced) == [str(python), str(python)]
    # an engine the helper does not know: the shell launcher runs, and says what is wrong
    proc = run([str(python), "-c", "pass"], user=user, env={"SQENV_ENGINE": "nonsense"})
    assert proc.returncode == 125 and "unknown engine `nonsense`" in proc.stderr, proc.stderr
    # started by a path with dot components: the shell launcher resolves them, the same program
    out = ok(run(["./python", "-c", "import sys; print(sys.prefix, sys.argv)", "x"], user=user, cwd=python.parent))
    assert out.stdout == f"{small_env} ['-c', 'x']\n"


def test_relocation_by_mv(small_env: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved here"
    shutil.copytree(small_env, moved, symlinks=True)
    out = ok(py(moved, "import sys, six; print(sys.prefix); print(six.__file__)")).stdout.splitlines()
    assert out == [str(moved), f"{moved}/lib/python3.11/site-packages/six.py"]


def test_nested_calls_stay_in_one_namespace(small_env: Path) -> None:
    code = (
        "import os, subprocess, sys\n"
        "mine = os.readlink('/proc/self/ns/mnt')\n"
        f"child = subprocess.run([{str(small_env / 'bin' / 'python')!r}, '-c',"
        " 'import os; print(os.readlink(\"/proc/self/ns/mnt\"))'], capture_output=True, text=True).stdout.strip()\n"
        "pip = subprocess.run([sys.executable, '-m', 'pip', '--version'], capture_output=True, text=True).stdout\n"
        "print(mine == child, 'pip' in pip)\n"
    )
    assert ok(py(small_env, code)).stdout.split() == ["True", "True"]


def test_32_concurrent_cold_launches_share_one_mount(small_env: Path, tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    env = {"SQENV_RUNTIME_DIR": str(runtime)}

    def launch(i: int) -> subprocess.CompletedProcess[str]:
        return py(small_env, f"import six; print({i})", env=env)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(launch, range(32)))
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(32)], [r.stderr for r in results]
    assert len(fuse_mounts(str(runtime))) == 1
    subprocess.run(["fusermount3", "-u", *fuse_mounts(str(runtime))], check=False)


def test_idle_program_survives_the_mount_timeout_which_then_cleans_up(small_env: Path, tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    env = {"SQENV_RUNTIME_DIR": str(runtime), "SQENV_IDLE_TIMEOUT": "1"}
    # only-.py imports: nothing of the image stays open but the launcher's pin
    code = "import time; time.sleep(4); import six; print(six.__name__)"
    assert ok(py(small_env, code, env=env)).stdout.strip() == "six"
    deadline = time.monotonic() + 15
    while runtime.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not fuse_mounts(str(runtime)), "idle mount should unmount itself"
    assert not runtime.exists(), "the mount point, its files and the runtime dir should be removed"


def test_killed_mount_daemon_is_recovered(small_env: Path, tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    env = {"SQENV_RUNTIME_DIR": str(runtime)}
    ok(py(small_env, "import six", env=env))
    daemons = subprocess.run(["pgrep", "-f", "--", f"--serve .*{runtime}"], capture_output=True, text=True)
    for pid in daemons.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.3)
    assert ok(py(small_env, "import six; print('again')", env=env)).stdout.strip() == "again"
    subprocess.run(["fusermount3", "-u", *fuse_mounts(str(runtime))], check=False)


def test_venv_on_top_sees_the_image(small_env: Path, tmp_path: Path) -> None:
    new = tmp_path / "on-top"
    ok(run([str(small_env / "bin" / "python"), "-m", "venv", "--system-site-packages", "--without-pip", str(new)]))
    code = "import sys, six; print(sys.prefix); print(six.__file__)"
    out = ok(run([str(new / "bin" / "python"), "-c", code])).stdout.splitlines()
    assert out == [str(new), f"{small_env}/lib/python3.11/site-packages/six.py"]


def test_pip_install_into_the_image_points_to_update(small_env: Path) -> None:
    for argv in (
        [str(small_env / "bin" / "pip"), "install", "idna"],
        [str(small_env / "bin" / "python"), "-m", "pip", "uninstall", "-y", "six"],
    ):
        proc = run(argv)
        assert proc.returncode == 1
        assert f"sqenv update {small_env}" in proc.stderr
    assert ok(py(small_env, "import six; print('still there')")).stdout.strip() == "still there"


def test_sqenv_run_and_shell(small_env: Path) -> None:
    out = ok(sqenv("run", small_env, "--", "python", "-c", "import sys; print(sys.prefix)")).stdout
    assert out.strip() == str(small_env)
    shell = sqenv(
        "shell", small_env, input='python -c "import six; print(six.__name__)"; exit 5\n', env={"SHELL": "/bin/sh"}
    )
    assert shell.returncode == 5 and shell.stdout.strip() == "six"


def test_files_on_disk_and_info(numpy_env: Path) -> None:
    info = json.loads(ok(sqenv("info", numpy_env, "--json", "--verify")).stdout)
    on_disk = sum(len(d) + len(f) for _, d, f in os.walk(numpy_env))
    assert info["files_on_disk"] == on_disk <= len(info["programs"]) + 10  # + 7 (pyvenv.cfg, lib), 3 activate scripts
    assert info["files_inside"] > 1000
    assert {p["name"].lower() for p in info["packages"]} >= {"numpy", "cowsay"}
    assert info["python"]["executable"].startswith("/usr/bin/python3")
    assert info["image_size"] < 0.5 * info["installed_size"]
    human = ok(sqenv("info", numpy_env)).stdout
    assert "numpy" in human and "inside the image" in human


def test_doctor_passes_here() -> None:
    proc = sqenv("doctor")
    assert proc.returncode == 0, proc.stdout
    assert "FAIL" not in proc.stdout


def test_tykky_pip_containerize_with_environ_file(tmp_path: Path) -> None:
    req = tmp_path / "req.txt"
    req.write_text("six\n")
    environ = tmp_path / "environ.sh"
    environ.write_text('export SQENV_TEST_ENVIRON="set before launch"\n')
    prefix = tmp_path / "tykky"
    proc = run(
        [
            sys.executable,
            "-c",
            "import sys; from sqenv.cli.tykky import pip_containerize as m;"
            " sys.argv[0] = 'pip-containerize'; sys.exit(m())",
            "new",
            "--prefix",
            str(prefix),
            "--environ",
            str(environ),
            str(req),
        ],
        env={"PATH": f"{os.path.dirname(BASE_PYTHON)}:{os.environ['PATH']}"},
    )
    ok(proc)
    out = ok(py(prefix, "import os, six, sys; print(os.environ['SQENV_TEST_ENVIRON']); print(sys.executable)"))
    assert out.stdout.splitlines() == ["set before launch", f"{prefix}/bin/python"]
