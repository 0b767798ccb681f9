"""`sqenv update`, `history`, `rollback` and `compact` on real installs (uv + PyPI, FUSE, overlayfs).

Every test works on its own copy of one small install (six on /usr/bin/python3)
and its own build directory, so leftovers of an update can be checked exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sqenv.publish.layout import Install
from sqenv.publish.versions import launcher_layers
from support import BASE_PYTHON, SQENV, User, need, ok, run

pytestmark = pytest.mark.slow

GROUP = "sqenvproj"
MEMBERS = ("sqenvupd-a", "sqenvupd-b")


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("mksquashfs")
    need("fusermount3")
    prefix = tmp_path_factory.mktemp("update-base") / "env"
    ok(run([*SQENV, "create", str(prefix), "six", "--python", BASE_PYTHON, "-q"]))
    return prefix


@pytest.fixture
def env(base_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SQENV_BUILD_DIR", str(tmp_path / "build"))
    return Path(shutil.copytree(base_env, tmp_path / "env", symlinks=True))


def sqenv(*args: object, **kw) -> subprocess.CompletedProcess[str]:
    return run([*SQENV, *map(str, args)], **kw)


def py(prefix: Path, code: str, **kw) -> subprocess.CompletedProcess[str]:
    return run([str(prefix / "bin" / "python"), "-c", code], **kw)


def importable(prefix: Path, module: str) -> bool:
    return py(prefix, f"import {module}").returncode == 0


def meta(prefix: Path) -> dict:
    return json.loads((prefix / "sqenv.json").read_text())


def snapshot(prefix: Path) -> dict[str, object]:
    """Every entry of the prefix: content of the small files, size and mtime of the rest."""
    out: dict[str, object] = {}
    for path in sorted(prefix.rglob("*")):
        rel = str(path.relative_to(prefix))
        if path.is_symlink():
            out[rel] = os.readlink(path)
        elif path.suffix == ".sqfs" or path.name == "sqenv-enter":
            st = path.stat()
            out[rel] = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


def assert_clean(prefix: Path, build: Path) -> None:
    """Metadata, launcher and files agree; nothing of an interrupted update is left."""
    data = meta(prefix)
    current = next(v for v in data["versions"] if v["number"] == data["current"])
    assert launcher_layers(Install(prefix)) == current["layers"]
    assert not any(v.get("pending") for v in data["versions"])
    used = {name for v in data["versions"] for name in v["layers"]}
    assert {p.name for p in prefix.glob("*.sqfs")} == used
    hidden = [p.name for p in prefix.iterdir() if p.name.startswith(".")]
    assert hidden == [], hidden
    assert not list(build.glob("sqenv-update-*")), "a build directory was left"
    with open("/proc/self/mountinfo") as fh:
        assert str(build) not in fh.read(), "a layer mount was left"


# --- add, remove, post-install, history ------------------------------------------------------------------------


def test_add_remove_history_and_nothing_changed(env: Path, tmp_path: Path) -> None:
    out = ok(sqenv("update", env, "idna"))
    assert "Updated" in out.stderr and "+idna" in out.stderr
    assert importable(env, "idna") and importable(env, "six")
    ok(sqenv("update", env, "--remove", "six"))
    assert not importable(env, "six")
    assert importable(env, "idna")
    listed = {
        p["name"].lower() for p in json.loads(ok(run([str(env / "bin" / "pip"), "list", "--format=json"])).stdout)
    }
    assert "six" not in listed and "idna" in listed
    assert "six" not in {p["name"].lower() for p in meta(env)["versions"][-1]["packages"]}

    before = snapshot(env)
    again = ok(sqenv("update", env, "idna"))
    assert "Nothing changed" in again.stderr
    assert snapshot(env) == before

    history = json.loads(ok(sqenv("history", env, "--json")).stdout)
    assert [v["number"] for v in history] == [1, 2, 3]
    assert history[1]["summary"].startswith("+idna ") and history[2]["summary"] == "-six"
    assert history[2]["inputs"] == {"remove": ["six"]} and history[2]["current"]
    assert [len(v["layers"]) for v in history] == [1, 2, 3]
    text = ok(sqenv("history", env)).stdout
    assert "-six" in text and "--remove six" in text and text.splitlines()[0].startswith("*")
    assert_clean(env, tmp_path / "build")


def test_post_install_runs_inside_the_env_in_the_callers_cwd(env: Path, tmp_path: Path) -> None:
    script = tmp_path / "post.sh"
    script.write_text(
        'set -e\nmkdir -p "$VIRTUAL_ENV/share/demo"\npwd > "$VIRTUAL_ENV/share/demo/cwd"\n'
        'python -c "import six, sys; print(sys.prefix)" > "$VIRTUAL_ENV/share/demo/prefix"\n'
    )
    work = tmp_path / "cwd"
    work.mkdir()
    ok(sqenv("update", env, "--post-install", script, cwd=work))
    read = "import sys; d = sys.prefix + '/share/demo/'; print(open(d + 'cwd').read(), open(d + 'prefix').read())"
    assert ok(py(env, read)).stdout.split() == [str(work), "/mnt/sqenv"]  # the host was visible, cwd the caller's
    assert "post-install post.sh" in meta(env)["versions"][-1]["summary"]


def test_whiteouts_and_replaced_directories_survive_layers_and_compaction(env: Path, tmp_path: Path) -> None:
    def post(name: str, body: str) -> None:
        (tmp_path / name).write_text('set -e\ncd "$VIRTUAL_ENV"\n' + body)
        ok(sqenv("update", env, "--post-install", tmp_path / name))

    def tree() -> str:
        code = "import os; print(sorted(os.listdir('/mnt/sqenv/share/d')), os.path.exists('/mnt/sqenv/gone'))"
        return ok(py(env, code)).stdout.strip()

    post("a.sh", "mkdir -p share/d/sub && touch share/d/a share/d/b share/d/sub/x gone\n")
    post("b.sh", "rm -rf share/d gone && mkdir -p share/d && touch share/d/c\n")  # opaque dir + whiteout
    assert tree() == "['c'] False"
    ok(sqenv("update", env, "idna"))  # 4 layers
    assert len(meta(env)["versions"][-1]["layers"]) == 4
    post("c.sh", "touch share/d/e\n")  # a 5th layer would be one too many: packed whole
    last = meta(env)["versions"][-1]
    assert len(last["layers"]) == 1 and "layers compacted" in last["summary"]
    assert tree() == "['c', 'e'] False" and importable(env, "idna") and importable(env, "six")

    ok(sqenv("update", env, "--remove", "six"))
    assert ok(sqenv("compact", env)).returncode == 0
    last = meta(env)["versions"][-1]
    assert last["change"] == "compact" and len(last["layers"]) == 1
    assert tree() == "['c', 'e'] False" and not importable(env, "six") and importable(env, "idna")
    assert "nothing to compact" in ok(sqenv("compact", env)).stderr
    assert len(list(env.glob("*.sqfs"))) <= 3 * 4, "images on disk stay bounded"
    assert_clean(env, tmp_path / "build")


# --- rollback, running programs, concurrency ----------------------------------------------------------------------


def test_rollback_and_forward(env: Path, tmp_path: Path) -> None:
    data = meta(env)  # the install's own launch settings are carried from version to version
    data["versions"][0]["launch"] = {"engine": "embedded"}
    (env / "sqenv.json").write_text(json.dumps(data))
    ok(sqenv("update", env, "idna"))
    ok(sqenv("update", env, "tomli"))
    ok(sqenv("rollback", env))
    assert importable(env, "idna") and not importable(env, "tomli")
    ok(sqenv("rollback", env, "--to", "1"))
    assert not importable(env, "idna")
    assert json.loads(ok(sqenv("history", env, "--json")).stdout)[0]["current"]
    ok(sqenv("rollback", env, "--to", "3"))
    assert importable(env, "tomli")
    bad = sqenv("rollback", env, "--to", "9")
    assert bad.returncode == 2 and "no version 9" in bad.stderr and "Traceback" not in bad.stderr
    ok(sqenv("rollback", env, "--to", "1"))
    ok(sqenv("update", env, "iniconfig", "--keep", "2"))  # built on version 1; keeps 4 and 3
    data = meta(env)
    assert [v["number"] for v in data["versions"]] == [3, 4] and data["versions"][-1]["base"] == 1
    assert not importable(env, "tomli") and not importable(env, "idna") and importable(env, "iniconfig")
    assert "SQENV_DEFAULT_ENGINE=embedded\n" in (env / "launcher").read_text()
    assert_clean(env, tmp_path / "build")


def test_running_program_keeps_its_version_while_new_launches_see_the_new_one(env: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (f"import os, time\nprint('ready', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
            "import six\ntry:\n import idna\nexcept ImportError:\n print('old version')\n")  # fmt: skip
    old = subprocess.Popen([str(env / "bin" / "python"), "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert old.stdout.readline().strip() == "ready"
        ok(sqenv("update", env, "idna", "--remove", "six"))
        assert importable(env, "idna") and not importable(env, "six")
        go.touch()
        assert old.communicate(timeout=30)[0].strip() == "old version" and old.returncode == 0
    finally:
        old.kill()


def test_concurrent_updates_are_serialised(env: Path) -> None:
    procs = [subprocess.Popen([*SQENV, "update", str(env), pkg], stderr=subprocess.PIPE, text=True)
             for pkg in ("idna", "tomli")]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    data = meta(env)
    assert [v["number"] for v in data["versions"]] == [1, 2, 3]
    assert importable(env, "idna") and importable(env, "tomli")


# --- failures change nothing; SIGKILL at any point leaves a working install ----------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_failing_updates_change_nothing_and_say_why(env: Path, tmp_path: Path, small_fs: Path) -> None:
    bad_script = tmp_path / "bad.sh"
    bad_script.write_text("echo about to fail\nexit 3\n")
    big = tmp_path / "big.sh"
    big.write_text('head -c 24000000 /dev/urandom > "$VIRTUAL_ENV/blob"\n')
    cases = [
        (env, ["no-such-package-sqenv-test"], "was not found on the package index"),
        (env, ["--post-install", bad_script], "post-install script"),
        (env, ["--remove", "requests"], "`requests` is not installed"),
        (env, ["idna", "--post-install", bad_script], "post-install script"),
    ]
    full = Path(shutil.copytree(env, small_fs / "env", symlinks=True))  # the disk fills while packing
    cases.append((full, ["--post-install", big], "no space left"))
    for prefix, args, why in cases:
        before = snapshot(prefix)
        proc = sqenv("update", prefix, *args)
        assert proc.returncode != 0 and why in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert snapshot(prefix) == before, f"{args} changed the install"
        assert importable(prefix, "six") and not importable(prefix, "idna")
    assert_clean(env, tmp_path / "build")


KILL_AT = """
import os, signal, sys
import sqenv.publish.versions as v
from sqenv.cli import main
where, args = sys.argv[1], sys.argv[2:]
publish = v.publish
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
def patched(*a, **k):
    if where == "publish":
        die()
    setattr(v, where, die)
    return publish(*a, **k)
v.publish = patched
sys.exit(main(args))
"""


@pytest.mark.parametrize(
    "point",
    [
        "line:Resolving",  # uv running
        "line:Running the post-install",  # the user's script running
        "line:Packing",  # mksquashfs writing into PREFIX
        "after:0.6",
        "publish",  # image packed, not yet in place
        "save",  # image in place, no record
        "switch",  # pending record, old launcher
        "finish",  # new launcher, pending record
        "delete_unused",  # new metadata, old images still there
    ],
)
def test_sigkill_at_any_point_leaves_a_working_install_and_a_clean_retry(env: Path, tmp_path: Path, point: str) -> None:
    slow = tmp_path / "slow.sh"
    slow.write_text('head -c 20000000 /dev/urandom > "$VIRTUAL_ENV/blob"\nsleep 1\n')
    args = ["update", str(env), "idna", "--post-install", str(slow), "--keep", "1"]
    if point.startswith(("line:", "after:")):
        proc = subprocess.Popen([*SQENV, *args], stderr=subprocess.PIPE, text=True, start_new_session=True)
        if point.startswith("line:"):
            for line in proc.stderr:
                if line.startswith(point[5:]):
                    break
        else:
            time.sleep(float(point[6:]))
        proc.kill()
    else:
        proc = subprocess.Popen([sys.executable, "-c", KILL_AT, point, *args], stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    with __import__("contextlib").suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what the update had started (uv, the script)

    assert importable(env, "six"), "the install must keep working"
    switched = point in ("finish", "delete_unused")
    assert importable(env, "idna") == switched
    history = json.loads(ok(sqenv("history", env, "--json")).stdout)
    assert [v["number"] for v in history if v["current"]] == [2 if switched else 1]

    retry = ok(sqenv("update", env, "idna"))
    assert ("Nothing changed" in retry.stderr) == switched
    assert importable(env, "idna") and importable(env, "six")
    assert_clean(env, tmp_path / "build")


# --- shared installs ----------------------------------------------------------------------------------------------


def member(name: str) -> User:
    subprocess.run(["groupadd", "-f", GROUP], check=True)
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-G", GROUP, name], check=True)
    else:
        subprocess.run(["usermod", "-aG", GROUP, name], check=True)
    pw = __import__("pwd").getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


@pytest.mark.parametrize("umask", [0o007, 0o027, 0o022], ids=lambda u: f"umask-{u:03o}")
def test_group_install_stays_usable_by_the_group_after_updates(umask: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test users")
    a, b = (member(name) for name in MEMBERS)
    gid = __import__("grp").getgrnam(GROUP).gr_gid
    shared = Path("/var/tmp") / f"sqenv-group-{os.getpid()}-{umask:03o}"
    shared.mkdir()
    try:
        os.chown(shared, 0, gid)
        os.chmod(shared, 0o2770)
        prefix = shared / "env"

        def as_user(user: User, *argv: object) -> subprocess.CompletedProcess[str]:
            return run(["sh", "-c", f'umask {umask:04o} && exec "$@"', "sh", *map(str, argv)], user=user)

        def uses(user: User, code: str) -> None:
            ok(as_user(user, prefix / "bin" / "python", "-c", code))

        ok(as_user(a, *SQENV, "create", prefix, "six", "--python", BASE_PYTHON, "-q"))
        ok(as_user(a, *SQENV, "update", prefix, "idna", "-q"))
        uses(b, "import six, idna")
        by_b = as_user(b, *SQENV, "update", prefix, "--remove", "six", "--keep", "2", "-q")
        if umask & 0o020:  # the prefix is not group-writable: only its owner updates, clearly refused
            assert by_b.returncode == 3 and "permission denied" in by_b.stderr, by_b.stderr
        else:
            ok(by_b)
            uses(a, "import idna\ntry:\n import six\nexcept ImportError: pass\nelse: raise SystemExit(1)")
            ok(as_user(a, *SQENV, "rollback", prefix, "-q"))
            uses(b, "import six, idna")
        for path in [prefix, *prefix.rglob("*")]:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            assert st.st_gid == gid, f"{path} lost the group"
            assert not st.st_mode & 0o002, f"{path} is world-writable"
            assert st.st_mode & 0o040, f"{path} is not group-readable"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_updates_a_kind_of_install_cannot_take_say_so(env: Path, tmp_path: Path) -> None:
    yml = tmp_path / "environment.yml"
    yml.write_text("dependencies: [python]\n")
    before = snapshot(env)
    proc = sqenv("update", env, "-f", yml)
    assert proc.returncode == 2 and "is for conda installs" in proc.stderr, proc.stderr
    data = meta(env)
    data["kind"] = "wrap"  # a packed directory tree: no package manager to update it with
    (env / "sqenv.json").write_text(json.dumps(data))
    proc = sqenv("update", env, "idna")
    assert proc.returncode == 2 and "`wrap` installs cannot be updated" in proc.stderr, proc.stderr
    (env / "sqenv.json").write_bytes(before["sqenv.json"])
    assert snapshot(env) == before
