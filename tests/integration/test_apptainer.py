"""The apptainer engine and `sqenv wrap`, against a real Apptainer (tests/infra/apptainer.py).

Everything runs as an ordinary user (apptainer refuses root here): environments
are built by that user in a directory under /var/tmp, which the test shim
shows to apptainer. The launcher's core guarantees are checked with
SQENV_ENGINE=apptainer; the base image is the infra's Debian 12 + python3 SIF,
the same OS and /usr/bin/python3 as the host (what a site's image would be).

The shim runs apptainer from a Debian sid root in which only /tmp, /var/tmp,
/home and /work of the host are visible, so launches set
SQENV_APPTAINER_HOST_DIRS=/home:/work (the engine binds exactly those instead
of every top-level directory of the host); the default scan is checked
separately with a stand-in `apptainer` that prints what it was given.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apptainer import Apptainer, env_for, run_as  # tests/infra, on sys.path through tests/conftest.py

from support import BASE_PYTHON, SQENV, launchers, need, owned_dir

pytestmark = pytest.mark.apptainer

HOST_DIRS = "/home:/work"  # what the shim shows apptainer besides /tmp and /var/tmp
AWKWARD = ["", " ", "a b", "'", '"', "\n", "*", "?[a]", "$HOME", "`id`", "ü→∑", "--", "-c", "\\", "a,b:c"]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def user(app: Apptainer) -> str:
    return app.ensure_user("sqapp")


@pytest.fixture(scope="module")
def work(user: str) -> Iterator[Path]:
    """The user's directory for this module (under /var/tmp: seen by the shim and by apptainer)."""
    pw = pwd.getpwnam(user)
    with owned_dir("sqenv-apptainer-tests", pw.pw_uid, pw.pw_gid) as path:
        yield path


@pytest.fixture(scope="module")
def appenv(base_sif: Path) -> dict[str, str]:
    """The environment that makes launchers use the apptainer engine here."""
    return {"SQENV_ENGINE": "apptainer", "SQENV_APPTAINER_IMAGE": str(base_sif), "SQENV_APPTAINER_HOST_DIRS": HOST_DIRS}


run = run_as


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def env(app: Apptainer, user: str, work: Path) -> Path:
    """six + cowsay on Debian's /usr/bin/python3, built by the user."""
    need("mksquashfs")
    prefix = work / "env"
    ok(run(app, user, [*SQENV, "create", prefix, "six", "cowsay", "--python", BASE_PYTHON, "-q"]))
    return prefix


@pytest.fixture(scope="module")
def tree(app: Apptainer, user: str, work: Path) -> Path:
    """A venv made elsewhere (no pip, no network) with a module, a console script, a data file
    naming its prefix, and a binary file holding it as a C string: what `wrap-install` gets."""
    src = work / "made-elsewhere" / "venv"
    ok(run(app, user, [BASE_PYTHON, "-m", "venv", "--without-pip", src]))
    site = src / "lib" / "python3.11" / "site-packages"
    (site / "hello.py").write_text(
        "import sys, os\n"
        "def main():\n"
        "    print('hello', sys.prefix, open(os.path.join(sys.prefix, 'share', 'where.txt')).read().strip())\n"
    )
    (src / "bin" / "hello").write_text(f"#!{src}/bin/python\nimport sys\nfrom hello import main\nsys.exit(main())\n")
    (src / "bin" / "hello").chmod(0o755)
    (src / "share").mkdir()
    (src / "share" / "where.txt").write_text(f"installed at {src}\n")
    (src / "share" / "blob.bin").write_bytes(b"\x7fELF\0" + str(src).encode() + b"/lib\0tail\0")
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(src.parent):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
    os.chown(src.parent, pw.pw_uid, pw.pw_gid)
    return src


def py(app: Apptainer, user: str, prefix: Path, code: str, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return run(app, user, [prefix / "bin" / "python", "-c", code, *args], **kw)


def copy_install(app: Apptainer, user: str, src: Path, dest: Path) -> Path:
    ok(run(app, user, ["cp", "-a", src, dest]))
    return dest


# ---------------------------------------------------------------- the launcher's guarantees
def test_sys_executable_prefix_and_import_in_the_container(app, user, env, appenv) -> None:
    code = (
        "import os, sys, six; print(sys.executable); print(sys.prefix); print(six.__file__);"
        "print(os.environ.get('APPTAINER_CONTAINER')); print(os.getuid())"
    )
    out = ok(py(app, user, env, code, env=appenv)).stdout.splitlines()
    assert out == [
        f"{env}/bin/python",
        str(env),
        f"{env}/lib/python3.11/site-packages/six.py",
        appenv["SQENV_APPTAINER_IMAGE"],
        str(pwd.getpwnam(user).pw_uid),
    ]


def test_console_script_and_pip_list(app, user, env, appenv) -> None:
    assert "in a container" in ok(run(app, user, [env / "bin" / "cowsay", "-t", "in a container"], env=appenv)).stdout
    listed = ok(run(app, user, [env / "bin" / "pip", "list", "--format=json"], env=appenv)).stdout
    assert {"six", "cowsay", "pip"} <= {p["name"].lower() for p in json.loads(listed)}


def test_argv_with_awkward_characters_passes_unchanged(app, user, env, appenv) -> None:
    proc = ok(py(app, user, env, "import sys, json; sys.stdout.write(json.dumps(sys.argv[1:]))", *AWKWARD, env=appenv))
    assert json.loads(proc.stdout) == AWKWARD


def test_exit_codes(app, user, env, appenv) -> None:
    for code in (0, 3, 255):
        assert py(app, user, env, f"import sys; sys.exit({code})", env=appenv).returncode == code


def test_stdin_env_cwd_and_clean_stderr(app, user, env, appenv, work) -> None:
    here = work / "a dir"
    here.mkdir(exist_ok=True)
    (here / "data.txt").write_text("relative")
    code = (
        "import os, sys; data = sys.stdin.read(); print(data.upper());"
        "print(os.environ['SQENV_TEST_VAR']); print(os.getcwd()); print(open('data.txt').read());"
        "print(os.environ['PATH'].split(':')[1]); print('E', file=sys.stderr)"
    )
    # (the shims' directory goes first: app.run puts it there)
    extra = {**appenv, "SQENV_TEST_VAR": "v a $l `x`", "PATH": "/first$dir:/usr/bin:/bin"}
    proc = py(app, user, env, code, env=extra, cwd=here, input="piped\ndata")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["PIPED", "DATA", "v a $l `x`", str(here), "relative", "/first$dir"]
    assert proc.stderr == "E\n"
    # a cwd apptainer would not see is not passed (it would refuse to start): its default applies
    assert ok(py(app, user, env, "import os; print(os.getcwd())", env=appenv, cwd=Path("/"))).stdout == "/\n"


@pytest.mark.parametrize("target", ["group", "runtime"])
def test_sigterm_reaches_a_python_handler(app, user, env, appenv, work, target) -> None:
    """SIGTERM to the process group (Ctrl-C, Slurm), or to the runtime alone: with a real apptainer
    that is `kill` of the launcher's pid, which apptainer keeps and forwards from (here the shim's
    bwrap holds it and forwards nothing, so the runtime's own process is signalled)."""
    marker = work / f"got-term-{target}"
    code = (
        "import os, signal, sys, time\n"
        f"def h(s, f):\n    open({str(marker)!r}, 'w').write(str(s)); sys.exit(7)\n"
        "signal.signal(signal.SIGTERM, h)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    argv = [str(env / "bin" / "python"), "-c", code]
    with app.popen(
        argv, user=user, cwd="/var/tmp", env=env_for(appenv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            pid = int(proc.stdout.readline())
            # Apptainer starts forwarding signals a moment after the program started: one sent in
            # the first ~100 ms can be lost (seen here in 4 of 10 tries; none after 200 ms).
            time.sleep(0.5)
            if target == "group":
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                runtime = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                os.kill(runtime, signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert marker.read_text() == str(int(signal.SIGTERM))
    if target == "runtime":
        assert proc.returncode == 7  # the program's exit status, through the runtime


def test_nested_calls_stay_in_one_container(app, user, env, appenv) -> None:
    code = (
        "import os, subprocess, sys\n"
        "mine = os.readlink('/proc/self/ns/mnt')\n"
        f"child = subprocess.run([{str(env / 'bin' / 'python')!r}, '-c',"
        ' \'import os; print(os.readlink("/proc/self/ns/mnt"), os.environ.get("APPTAINER_CONTAINER"))\'],'
        " capture_output=True, text=True).stdout.split()\n"
        "pip = subprocess.run([sys.executable, '-m', 'pip', '--version'], capture_output=True, text=True).stdout\n"
        "print(mine == child[0], child[1] == os.environ['APPTAINER_CONTAINER'], 'pip' in pip)\n"
    )
    assert ok(py(app, user, env, code, env=appenv)).stdout.split() == ["True", "True", "True"]


def test_sqenv_run_and_shell(app, user, env, appenv) -> None:
    out = ok(run(app, user, [*SQENV, "run", env, "--", "python", "-c", "import sys; print(sys.prefix)"], env=appenv))
    assert out.stdout.strip() == str(env)
    shell = run(
        app,
        user,
        [*SQENV, "shell", env],
        env={**appenv, "SHELL": "/bin/sh"},
        input="python -c \"import six, os; print(six.__name__, bool(os.environ.get('APPTAINER_NAME')))\"; exit 5\n",
    )
    assert shell.returncode == 5 and shell.stdout.split() == ["six", "True"], shell.stderr


def test_without_an_image_it_says_what_to_do(app, user, env, appenv) -> None:
    proc = py(app, user, env, "pass", env={k: v for k, v in appenv.items() if k != "SQENV_APPTAINER_IMAGE"})
    assert proc.returncode == 125
    assert "needs a container image" in proc.stderr and "SQENV_APPTAINER_IMAGE" in proc.stderr


def test_several_layers_fail_clearly_pointing_to_compact(app, user, env, appenv, work) -> None:
    copy = copy_install(app, user, env, work / "layered")
    launcher = copy / "launcher"
    layer = next(copy.glob("v1-*.sqfs")).name
    text = launcher.read_text().replace(f"SQENV_LAYERS={layer}", f"SQENV_LAYERS='{layer} {layer}'", 1)
    launcher.write_text(text)
    proc = py(app, user, copy, "pass", env=appenv)
    assert proc.returncode == 125
    assert "several image layers" in proc.stderr and f"sqenv compact {copy}" in proc.stderr


def test_updates_of_an_apptainer_install_stay_one_image(app, user, work, appenv, base_sif) -> None:
    prefix = work / "for-apptainer"
    create = [*SQENV, "create", prefix, "six", "--python", BASE_PYTHON, "--engine", "apptainer", "-q"]
    ok(run(app, user, [*create, "--base-image", base_sif]))
    ok(run(app, user, [*SQENV, "update", prefix, "idna", "-q"]))
    assert len(list(prefix.glob("v2-*.sqfs"))) == 1
    assert f"SQENV_LAYERS={next(prefix.glob('v2-*.sqfs')).name}" in (prefix / "launcher").read_text()
    out = ok(
        py(
            app,
            user,
            prefix,
            "import idna, six, os; print(idna.__name__, bool(os.environ['APPTAINER_NAME']))",
            env={"SQENV_APPTAINER_HOST_DIRS": appenv["SQENV_APPTAINER_HOST_DIRS"]},
        )
    )
    assert out.stdout.split() == ["idna", "True"]


def test_srun_two_tasks_with_apptainer(app, user, env, appenv) -> None:
    from slurm import ensure_slurm

    cluster = ensure_slurm()
    code = "import os, sys, six; print(os.environ['SLURM_PROCID'], sys.prefix, bool(os.environ['APPTAINER_NAME']))"
    extra = {**appenv, "PATH": f"{app.bin_dir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    cp = cluster.srun(
        ["-n", "2", "--overcommit", f"{env}/bin/python", "-c", code], user=user, env=extra, cwd="/var/tmp"
    )
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.splitlines()) == [f"0 {env} True", f"1 {env} True"], cp.stdout


# ---------------------------------------------------------------- engine choice
def test_auto_picks_embedded_here_and_doctor_agrees(app, user, env) -> None:
    extra = {"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS}
    out = ok(py(app, user, env, "import os; print(os.environ.get('APPTAINER_NAME'))", env=extra)).stdout
    assert out.strip() == "None"
    doctor = run(app, user, [*SQENV, "doctor", env], env=extra)
    assert "use `embedded` here: auto: user namespaces and /dev/fuse are usable" in doctor.stdout, doctor.stdout


def test_auto_picks_apptainer_when_embedded_cannot_run_and_doctor_agrees(app, user, env, base_sif, work) -> None:
    """Simulated by an install whose sqenv-enter is not executable (the embedded engine's `usable` check);
    its programs then link to the shell launcher (a non-executable helper cannot start them itself:
    `doctor` says so, below)."""
    copy = copy_install(app, user, env, work / "no-userns")
    (copy / "sqenv-enter").chmod(0o644)
    for link in (copy / "bin").iterdir():
        if link.is_symlink():
            ok(run(app, user, ["ln", "-sfn", "../launcher", link]))
    extra = {"SQENV_APPTAINER_IMAGE": str(base_sif), "SQENV_APPTAINER_HOST_DIRS": HOST_DIRS}
    out = ok(py(app, user, copy, "import os, sys; print(os.environ['APPTAINER_CONTAINER'], sys.prefix)", env=extra))
    assert out.stdout.split() == [str(base_sif), str(copy)]
    doctor = run(app, user, [*SQENV, "doctor", copy], env=extra)
    assert f"use `apptainer` here: auto: the embedded engine cannot run here (`{copy}/sqenv-enter` is not executable)" \
        in doctor.stdout, doctor.stdout  # fmt: skip
    without = run(app, user, [*SQENV, "doctor", copy], env={"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS})
    assert without.returncode == 1 and "no container image" in without.stdout


def test_host_dirs_bound_by_default(app, user, env, base_sif, work) -> None:
    """Without SQENV_APPTAINER_HOST_DIRS: every top-level directory of the host but the OS's, /mnt/*
    entries, and the site's bind paths (a stand-in `apptainer` prints its arguments)."""
    fake = work / "fake-bin"
    fake.mkdir(exist_ok=True)
    (fake / "apptainer").write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    (fake / "apptainer").chmod(0o755)
    extra = {"SQENV_ENGINE": "apptainer", "SQENV_APPTAINER_IMAGE": str(base_sif), "PATH": f"{fake}:/usr/bin:/bin"}
    launcher = work / "binds" / "launcher"
    copy = copy_install(app, user, env, work / "binds")
    launcher.write_text(launcher.read_text().replace("SQENV_BIND_PATHS=''", "SQENV_BIND_PATHS=/var/spool:/nonexistent"))
    pw = pwd.getpwnam(user)  # not app.run: that puts the real apptainer first on PATH
    as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"] if os.geteuid() == 0 else []
    argv = [*as_user, str(copy / "bin" / "python"), "-c", "pass"]
    proc = subprocess.run(argv, env=env_for(extra), cwd="/var/tmp", capture_output=True, text=True, timeout=60)
    args = ok(proc).stdout.splitlines()
    binds = args[args.index("--bind") + 1].split(",")
    expected = sorted(
        str(p) for p in Path("/").iterdir() if p.is_dir() and p.name not in {*OS_DIRS, "mnt"} and "," not in p.name
    )
    assert sorted(b for b in binds if b.count("/") == 1) == expected
    assert [b for b in binds if b.startswith("/mnt/")] == sorted(str(p) for p in Path("/mnt").iterdir() if p.is_dir())
    assert binds[-1] == "/var/spool" and "/nonexistent" not in binds
    layer = next(copy.glob("v1-*.sqfs"))
    assert args[:5] == ["-s", "exec", "--no-eval", "--pwd", "/var/tmp"]
    assert args[-8:] == [
        "--bind", f"{layer}:/mnt/sqenv:ro,image-src=/", "--bind", f"{layer}:{copy}:ro,image-src=/",
        str(base_sif), f"{copy}/bin/python", "-c", "pass",
    ]  # fmt: skip


OS_DIRS = ("bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "lost+found", "proc", "root", "run",
           "sbin", "sys", "tmp", "usr", "var")  # fmt: skip


def test_launch_overhead(app, user, env, appenv) -> None:
    """How much an apptainer launch costs over the embedded engine (printed; run with -s to see)."""

    def median(extra: dict[str, str]) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            ok(py(app, user, env, "pass", env=extra))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    embedded = median({})
    apptainer = median(appenv)
    print(f"\n`python -c pass`: embedded {embedded * 1000:.0f} ms, apptainer {apptainer * 1000:.0f} ms (median of 5)")
    assert apptainer < 5


# ---------------------------------------------------------------- sqenv wrap
def test_wrap_container_runs_its_programs_in_it(app, user, base_sif, work) -> None:
    prefix = work / "wrapped-sif"
    ok(run(app, user, [*SQENV, "wrap", base_sif, "--prefix", prefix, "-w", "/usr/bin/python3"], cwd=work))
    assert launchers(prefix) == ["python3"]
    assert (prefix / "container.sif").is_file() and not (prefix / "sqenv-enter").exists()
    code = (
        "import os, sys; print(sys.executable); print(os.path.exists('/.sqenv-base'));"
        "print(open('/etc/os-release').readline().strip()); print(os.environ['APPTAINER_CONTAINER'])"
    )
    # whatever SQENV_ENGINE says: a wrapped container runs with apptainer
    extra = {"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS, "SQENV_ENGINE": "embedded"}
    out = ok(run(app, user, [prefix / "bin" / "python3", "-c", code], env=extra, cwd=work)).stdout.splitlines()
    assert out == [
        "/usr/bin/python3",
        "True",
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
        f"{prefix}/container.sif",
    ]
    assert not Path("/.sqenv-base").exists()  # a file only the container has
    info = json.loads(ok(run(app, user, [*SQENV, "info", prefix, "--json", "--verify"])).stdout)
    assert info["programs"] == ["python3"] and info["verified"]


def test_wrap_container_tykky_front_end(app, user, base_sif, work) -> None:
    prefix = work / "tykky-sif"
    front = "import sys; from sqenv.cli.tykky import wrap_container as m; sys.argv[0] = 'wrap-container'; sys.exit(m())"
    ok(run(app, user, [sys.executable, "-c", front, "-w", "/usr/bin", "--prefix", prefix, base_sif], cwd=work))
    names = set(launchers(prefix))
    assert {"python3", "ls", "cat"} <= names
    out = run(app, user, [prefix / "bin" / "ls", "/.sqenv-base"], env={"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS})
    assert ok(out).stdout.strip() == "/.sqenv-base"


@pytest.fixture(scope="module")
def vendor_sif(app: Apptainer, user: str, base_sif: Path, work: Path) -> Path:
    """The base image with a program in /opt, where vendor images keep theirs (/opt/conda, /opt/rocm)."""
    tree, out = work / "vendor-tree", work / "vendor.sif"
    ok(run(app, user, ["apptainer", "-s", "build", "--sandbox", tree, base_sif], cwd=work, timeout=600))
    script = 'mkdir -p "$1/opt/vendor/bin" && printf "#!/bin/sh\\necho hello from the vendor\\n" >"$1/$2"'
    ok(run(app, user, ["sh", "-c", f'{script} && chmod 755 "$1/$2"', "sh", tree, "opt/vendor/bin/vhello"], cwd=work))
    ok(run(app, user, ["apptainer", "-s", "build", out, tree], cwd=work, timeout=600))
    return out


def test_wrap_container_host_dirs_never_hide_its_own(app, user, vendor_sif, work) -> None:
    """Issue 13: the host's /opt is not bound over the container's (non-empty) /opt; an empty
    directory of the container (/home, /srv) still gets the host's; the site's bind_paths win."""
    prefix = work / "vendor-wrapped"
    ok(run(app, user, [*SQENV, "wrap", vendor_sif, "--prefix", prefix, "-w", "/opt/vendor/bin", "-q"], cwd=work))
    assert launchers(prefix) == ["vhello"]
    lines = (prefix / "launcher").read_text().splitlines()
    header = next(line for line in lines if line.startswith("SQENV_CONTAINER_DIRS="))
    has = header.split("=", 1)[1].strip("'").split(":")
    assert "/opt" in has and "/usr" in has and "/home" not in has and "/srv" not in has, header
    # /opt named as a host directory (as the default scan of the host's / finds it): not bound
    host_dirs = {"SQENV_APPTAINER_HOST_DIRS": f"{HOST_DIRS}:/opt"}
    out = ok(run(app, user, [prefix / "bin" / "vhello"], env=host_dirs, cwd=work))
    assert out.stdout.strip() == "hello from the vendor"
    # the site's bind_paths are bound as named, even over the container's directories
    launcher = prefix / "launcher"
    launcher.write_text(launcher.read_text().replace("SQENV_BIND_PATHS=''", "SQENV_BIND_PATHS=/opt"))
    proc = run(app, user, [prefix / "bin" / "vhello"], env=host_dirs, cwd=work)
    assert proc.returncode != 0 and "hello from the vendor" not in proc.stdout


def test_wrap_directory_relocates_it(app, user, tree, work, appenv) -> None:
    prefix = work / "wrapped-venv"
    ok(run(app, user, [*SQENV, "wrap", tree, "--prefix", prefix, "-w", "bin", "-q"]))
    moved = tree.with_name("moved-away")
    tree.rename(moved)  # nothing may still point at the original tree
    try:
        for extra in ({}, appenv):
            out = ok(run(app, user, [prefix / "bin" / "hello"], env={"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS, **extra}))
            assert out.stdout.strip() == "hello /mnt/sqenv installed at /mnt/sqenv"
        code = "import sys; print(sys.prefix); print(open('/mnt/sqenv/share/blob.bin', 'rb').read())"
        out = ok(py(app, user, prefix, code, env=appenv)).stdout.splitlines()
        pad = b"\0" * (len(str(tree)) - len("/mnt/sqenv"))
        assert out == [str(prefix), repr(b"\x7fELF\0/mnt/sqenv/lib" + pad + b"\0tail\0")]
    finally:
        moved.rename(tree)
    assert launchers(prefix) == ["hello", "python", "python3", "python3.11"]


def test_wrap_directory_with_mask_shows_it_at_its_own_path(app, user, tree, work, appenv, base_sif) -> None:
    prefix = work / "masked-venv"
    ok(run(app, user, [*SQENV, "wrap", tree, "--prefix", prefix, "-w", "bin", "--mask", "-q"]))
    (tree / "share" / "where.txt").rename(tree / "share" / "where.old")  # the original is hidden inside
    try:
        for extra in ({}, appenv):
            out = ok(run(app, user, [prefix / "bin" / "hello"], env={"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS, **extra}))
            assert out.stdout.strip() == f"hello {tree} installed at {tree}"
    finally:
        (tree / "share" / "where.old").rename(tree / "share" / "where.txt")
    assert json.loads((prefix / "sqenv.json").read_text())["mount_path"] == str(tree)


def test_wrap_directory_with_engine_and_base_image(app, user, tree, work) -> None:
    """`--engine apptainer --base-image`: the install carries its container and uses it by default."""
    prefix = work / "carried"
    argv = [*SQENV, "wrap", tree, "--prefix", prefix, "-w", "bin", "--engine", "apptainer"]
    ok(run(app, user, [*argv, "--base-image", app.base_sif(user), "-q"]))
    assert (prefix / "container.sif").is_file()
    # its top-level directories recorded at create time: host directories are not bound over them
    lines = (prefix / "launcher").read_text().splitlines()
    assert any(line.startswith("SQENV_CONTAINER_DIRS=") and ":/usr:" in line for line in lines)
    out = ok(run(app, user, [prefix / "bin" / "hello"], env={"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS}))
    assert out.stdout.strip() == "hello /mnt/sqenv installed at /mnt/sqenv"
    code = "import os; print(os.environ['APPTAINER_CONTAINER'])"
    out = ok(py(app, user, prefix, code, env={"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS}))
    assert out.stdout.strip() == f"{prefix}/container.sif"


def test_wrap_directory_deeper_path_keeps_dollar0(app, user, work) -> None:
    src = work / "app-tree"
    (src / "opt" / "tool" / "bin").mkdir(parents=True)
    (src / "opt" / "tool" / "share").mkdir()
    (src / "opt" / "tool" / "share" / "msg").write_text("found via $0\n")
    tool = src / "opt" / "tool" / "bin" / "tool"
    tool.write_text('#!/bin/sh\ncat "${0%/*}/../share/msg"\n')
    tool.chmod(0o755)
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(src):
        for name in [*dirs, *files, "."]:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
    prefix = work / "app-wrapped"
    ok(run(app, user, [*SQENV, "wrap", src, "--prefix", prefix, "-w", "opt/tool/bin", "-q"]))
    assert launchers(prefix) == ["tool"]
    assert ok(run(app, user, [prefix / "bin" / "tool"])).stdout == "found via $0\n"


def test_conda_activation_runs_inside_the_container(app, user, work, appenv) -> None:
    """SQENV_ACTIVATE installs: the activation script (from the image) runs in the container first."""
    import conda_channel

    channel = conda_channel.build_channel(work / "channels")
    prefix = work / "conda-env"
    no_proxy = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    argv = [*SQENV, "create", prefix, "-c", channel.as_uri(), "sqpython", "sqbin", "--pkgs-dir", work / "pkgs", "-q"]
    ok(run(app, user, argv, env=no_proxy))
    assert ok(run(app, user, [prefix / "bin" / "sqhello"], env=appenv)).stdout == "prefix=/mnt/sqenv\n"
    out = ok(run(app, user, [prefix / "bin" / "sqbin"], env=appenv)).stdout
    assert out == f"/mnt/sqenv/{conda_channel.SQBIN_DATA_RELPATH}\n" + conda_channel.SQBIN_DATA.decode()
    script = 'echo "$SQPYTHON_ACTIVATED|$CONDA_PREFIX|$APPTAINER_NAME"'
    out = ok(run(app, user, [*SQENV, "run", prefix, "--", "sh", "-c", script], env=appenv)).stdout
    assert out == f"yes|{prefix}|{Path(appenv['SQENV_APPTAINER_IMAGE']).name}\n"
