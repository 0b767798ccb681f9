"""A second, hostile user on the same node, and what launches must never do.

/tmp on a login or compute node is writable by every user. The victim here
(`sqvictim`) has no mount or runtime directory of its own yet, so the hostile
user (`sqhostile`) can plant whatever it likes at every path the victim's
launch touches: the runtime directory /tmp/sqenv-UID (a directory with a
fake image tree, a symlink to one, a FIFO, a file) and a node-local staged
copy under /tmp/sqenv-stage-JOB. The victim's program must never run planted
code, and the launch must fail with one line naming the path and its owner
(or use the user's own $XDG_RUNTIME_DIR).

Also here: descriptors a caller passes (MPI/PMI pass some) reach the program
untouched, mount daemons idle out whatever signal dispositions the launcher
inherited, and the helper refuses to run with more rights than its caller.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import User, ensure_user, fuse_mounts, need, ok, run, sqenv

pytestmark = pytest.mark.slow

PWNED_SCRIPT = "#!/bin/sh\nid -u > {out}\necho planted\n"


@pytest.fixture(scope="module")
def victim() -> User:
    return ensure_user("sqvictim")


@pytest.fixture(scope="module")
def hostile() -> User:
    return ensure_user("sqhostile")


@pytest.fixture
def clean_runtime(victim: User):
    """The victim's default runtime dir does not exist before or after the test."""
    runtime = Path(f"/tmp/sqenv-{victim.uid}")

    def wipe() -> None:
        for mnt in fuse_mounts(str(runtime)):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        subprocess.run(["pkill", "-u", str(victim.uid), "-x", "sqenv-serve"], check=False)
        if not os.path.lexists(runtime):
            return
        if stat.S_ISDIR(os.lstat(runtime).st_mode):
            shutil.rmtree(runtime)
        else:  # a planted symlink, FIFO or file
            runtime.unlink()

    wipe()
    yield runtime
    wipe()


def as_user(user: User, script: str) -> None:
    ok(run(["sh", "-c", script], user=user))


def plant_tree(hostile: User, where: Path, image_ids: list[str], out: Path) -> None:
    """A runtime-dir look-alike: for each image ID a marker and a bin/python that records who ran it."""
    body = PWNED_SCRIPT.format(out=out)
    script = f"mkdir -p {where} && chmod 777 {where}\n"
    for image_id in image_ids:
        script += (
            f"mkdir -p {where}/{image_id}/bin && touch {where}/{image_id}/.sqenv-image\n"
            f"printf '%s' '{body}' > {where}/{image_id}/bin/python && chmod 755 {where}/{image_id}/bin/python\n"
        )
    as_user(hostile, script)


def image_ids(prefix: Path) -> list[str]:
    return [p.name.split("-", 1)[1].removesuffix(".sqfs") for p in prefix.glob("*.sqfs")]


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "file"])
def test_planted_runtime_dir_is_never_used(
    kind: str, small_env: Path, victim: User, hostile: User, clean_runtime: Path, tmp_path: Path
) -> None:
    out = Path(f"/var/tmp/sqenv-pwned-{os.getpid()}-{kind}")
    out.unlink(missing_ok=True)
    decoy = Path(f"/tmp/sqenv-decoy-{os.getpid()}-{kind}")
    if kind == "directory":
        plant_tree(hostile, clean_runtime, image_ids(small_env), out)
    elif kind == "symlink":
        plant_tree(hostile, decoy, image_ids(small_env), out)
        as_user(hostile, f"ln -s {decoy} {clean_runtime}")
    elif kind == "fifo":
        as_user(hostile, f"mkfifo -m 666 {clean_runtime}")
    else:
        as_user(hostile, f"echo x > {clean_runtime} && chmod 666 {clean_runtime}")
    try:
        proc = run([str(small_env / "bin" / "python"), "-c", "print('real')"], user=victim, timeout=60)
        assert proc.returncode == 125, proc
        assert "planted" not in proc.stdout and not out.exists(), "the victim ran the hostile user's program"
        line = proc.stderr.splitlines()[0]
        assert str(clean_runtime) in line and "sqhostile" in line and "refusing" in line, proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        out.unlink(missing_ok=True)
        if decoy.exists():
            shutil.rmtree(decoy)


def test_planted_runtime_dir_falls_back_to_the_users_own_xdg_dir(
    small_env: Path, victim: User, hostile: User, clean_runtime: Path
) -> None:
    out = Path(f"/var/tmp/sqenv-pwned-{os.getpid()}-xdg")
    plant_tree(hostile, clean_runtime, image_ids(small_env), out)
    xdg = Path(f"/var/tmp/sqenv-xdg-{os.getpid()}")
    xdg.mkdir(mode=0o700)
    os.chown(xdg, victim.uid, victim.gid)
    try:
        env = {"XDG_RUNTIME_DIR": str(xdg), "SQENV_IDLE_TIMEOUT": "1"}
        proc = ok(run([str(small_env / "bin" / "python"), "-c", "import six; print('real')"], user=victim, env=env))
        assert proc.stdout.strip() == "real" and not out.exists()
    finally:
        deadline = time.monotonic() + 15
        while fuse_mounts(str(xdg)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not fuse_mounts(str(xdg)), "the mount in the fallback directory should idle out"
        shutil.rmtree(xdg)


def test_runtime_dir_is_private_whatever_the_umask(small_env: Path, victim: User, clean_runtime: Path) -> None:
    env = {"SQENV_IDLE_TIMEOUT": "1"}
    code = f"umask 000; {small_env}/bin/python -c 'import os; print(oct(os.stat(\"{clean_runtime}\").st_mode & 0o777))'"
    assert ok(run(["sh", "-c", code], user=victim, env=env)).stdout.strip() == "0o700"


def test_planted_staged_copy_is_never_used(
    small_env: Path, victim: User, hostile: User, clean_runtime: Path, tmp_path: Path
) -> None:
    """`sqenv stage` copies live in node-local /tmp: only the user's own copy is mounted."""
    need("mksquashfs")
    job = str(900000 + os.getpid() % 1000)
    stage = Path(f"/tmp/sqenv-stage-{job}")
    out = Path(f"/var/tmp/sqenv-pwned-{os.getpid()}-stage")
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / ".sqenv-image").write_text("x\n")
    (fake / "bin" / "python").write_text(PWNED_SCRIPT.format(out=out))
    (fake / "bin" / "python").chmod(0o755)
    layer = next(small_env.glob("*.sqfs")).name
    planted = Path(f"/var/tmp/sqenv-planted-{os.getpid()}.sqfs")
    subprocess.run(["mksquashfs", str(fake), str(planted), "-quiet", "-all-root", "-noappend"], check=True)
    planted.chmod(0o644)
    try:
        as_user(hostile, f"mkdir -m 777 {stage} && cp {planted} {stage}/{layer} && chmod 666 {stage}/{layer}")
        env = {"SLURM_JOB_ID": job, "SQENV_IDLE_TIMEOUT": "1"}
        proc = ok(run([str(small_env / "bin" / "python"), "-c", "import six; print('real')"], user=victim, env=env))
        assert proc.stdout.strip() == "real" and not out.exists()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        out.unlink(missing_ok=True)
        planted.unlink(missing_ok=True)


def fd_probe(prefix: Path, victim: User, env: dict[str, str], tmp_path: Path) -> dict[int, str]:
    """Run the program with fds 3-20 open on distinct files; what does it see on each?"""
    files = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for fd in range(3, 21):
        path = tmp_path / f"fd{fd}"
        path.write_text(f"content {fd}\n")
        path.chmod(0o644)
        files[fd] = path
    tmp_path.chmod(0o755)
    # Every descriptor the program has besides 0-20: only sqenv's pins (>= 1000) are allowed.
    code = (
        "import os\n"
        "extra = [int(f) for f in os.listdir('/proc/self/fd') if 20 < int(f) < 1000]\n"
        "for fd in range(3, 21):\n"
        "    os.lseek(fd, 0, 0)\n"
        "    print(fd, os.read(fd, 100).decode().strip())\n"
        "for fd in extra:\n"
        "    if os.path.exists(f'/proc/self/fd/{fd}'):\n"  # the listing's own descriptor is gone by now
        "        print(fd, 'EXTRA', os.readlink(f'/proc/self/fd/{fd}'))\n"
    )
    # bash opens them on their own numbers (dash takes only 0-9), then becomes the victim's program
    redirs = " ".join(f"{fd}<{path}" for fd, path in files.items())
    launch = " ".join(shlex.quote(a) for a in victim.wrap([str(prefix / "bin" / "python"), "-c", code]))
    proc = subprocess.run(
        ["bash", "-c", f"exec {redirs}; exec {launch}"],
        env=victim.env(env),
        cwd="/tmp",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return {int(line.split()[0]): line.split(None, 1)[1] for line in proc.stdout.splitlines()}


def test_caller_descriptors_pass_untouched_cold_and_warm(
    small_env: Path, victim: User, clean_runtime: Path, tmp_path: Path
) -> None:
    env = {"SQENV_IDLE_TIMEOUT": "30"}  # the fixture unmounts at the end
    want = {fd: f"content {fd}" for fd in range(3, 21)}
    cold = fd_probe(small_env, victim, env, tmp_path / "cold")
    assert cold == want
    assert fuse_mounts(str(clean_runtime)), "the first launch should have mounted the image"
    warm = fd_probe(small_env, victim, env, tmp_path / "warm")
    assert warm == want


def test_mount_idles_out_when_started_with_sigint_ignored(small_env: Path, victim: User, clean_runtime: Path) -> None:
    """A first launch from a background job (SIGINT ignored there, as in srun tasks) must not
    leave a daemon that never idles out (squashfuse_ll's idle timeout raised SIGINT; sqenv's
    server must not depend on inherited dispositions either)."""
    env = {"SQENV_IDLE_TIMEOUT": "1"}
    script = f"{small_env}/bin/python -c 'import six; print(six.__name__)' & wait"
    assert ok(run(["sh", "-c", script], user=victim, env=env)).stdout.strip() == "six"
    deadline = time.monotonic() + 20
    while (fuse_mounts(str(clean_runtime)) or clean_runtime.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not fuse_mounts(str(clean_runtime)), "the mount daemon did not idle out"
    assert not clean_runtime.exists(), "the runtime dir should go with its last mount"
    daemons = subprocess.run(["pgrep", "-u", str(victim.uid), "-x", "sqenv-serve"], capture_output=True, text=True)
    assert daemons.stdout == ""


def test_helper_refuses_setuid_and_capabilities(small_env: Path, victim: User) -> None:
    work = Path(f"/var/tmp/sqenv-suid-{os.getpid()}")
    work.mkdir(mode=0o755)
    try:
        helper = work / "sqenv-enter"
        shutil.copy2(small_env / "sqenv-enter", helper)
        helper.chmod(0o4755)
        proc = run([str(helper), "-l", "/", "--", "/bin/true"], user=victim)
        assert proc.returncode == 125 and "refusing to run setuid" in proc.stderr, proc.stderr
        helper.chmod(0o755)
        if shutil.which("setcap"):
            subprocess.run(["setcap", "cap_sys_admin+ep", str(helper)], check=True)
            proc = run([str(helper), "-l", "/", "--", "/bin/true"], user=victim)
            assert proc.returncode == 125 and "capabilities" in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(work)


def test_nothing_in_an_install_is_setuid_setgid_or_world_writable(small_env: Path) -> None:
    for path in [small_env, *small_env.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        assert not mode & (stat.S_ISUID | stat.S_ISGID) or stat.S_ISDIR(mode), path
        assert not mode & 0o002, path


def test_old_layer_mount_leaves_after_update_while_a_program_runs(victim: User, clean_runtime: Path) -> None:
    """An update while a program runs: the old layer's mount stays for that program, then idles out."""
    need("mksquashfs")
    home = Path(f"/var/tmp/sqenv-upd-{os.getpid()}")
    home.mkdir(mode=0o755)
    os.chown(home, victim.uid, victim.gid)
    prefix = home / "env"
    try:
        ok(sqenv("create", prefix, "six", "--python", "/usr/bin/python3", "-q", user=victim))
        env = {"SQENV_IDLE_TIMEOUT": "1"}
        slow = subprocess.Popen(
            victim.wrap([str(prefix / "bin" / "python"), "-c", "import time, six; time.sleep(6); print('done')"]),
            env=victim.env(env),
            cwd="/tmp",
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not fuse_mounts(str(clean_runtime)) and time.monotonic() < deadline:
            time.sleep(0.1)
        old = fuse_mounts(str(clean_runtime))
        assert len(old) == 1
        ok(sqenv("update", prefix, "idna", "-q", user=victim))
        assert old[0] in fuse_mounts(str(clean_runtime)), "the running program's layer must stay mounted"
        assert slow.communicate(timeout=60)[0].strip() == "done"
        deadline = time.monotonic() + 20
        while fuse_mounts(str(clean_runtime)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not fuse_mounts(str(clean_runtime)), "the old layer's mount should idle out after its last user"
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def sticky_dir(victim: User, hostile: User) -> Path:
    """A sticky, world-writable project directory (like /tmp, or a careless shared scratch dir)."""
    path = Path(f"/var/tmp/sqenv-shared-{os.getpid()}")
    path.mkdir()
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_build_dir_another_user_controls_is_refused(victim: User, hostile: User, sticky_dir: Path) -> None:
    """Mallory's directory as the build base: she could swap the build tree for hers (code in the image)."""
    base = sticky_dir / "build"
    as_user(hostile, f"mkdir -m 777 {base}")
    prefix = sticky_dir / "env"
    proc = sqenv(
        "create", prefix, "six", "--python", "/usr/bin/python3", user=victim, env={"SQENV_BUILD_DIR": str(base)}
    )
    assert proc.returncode == 2, proc
    assert "not safe to build in" in proc.stderr and "Traceback" not in proc.stderr
    assert not prefix.exists() and os.listdir(base) == []


def test_lock_file_planted_by_another_user_is_refused_not_waited_on(
    victim: User, hostile: User, sticky_dir: Path
) -> None:
    lock = sticky_dir / ".env.sqenv-lock"
    holder = subprocess.Popen(
        hostile.wrap(["flock", str(lock), "sleep", "60"]), env=hostile.env(), cwd="/tmp", stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc = sqenv("create", sticky_dir / "env", "six", "--python", "/usr/bin/python3", user=victim, timeout=60)
        assert proc.returncode == 3, proc
        assert "sqhostile" in proc.stderr and "will not wait" in proc.stderr, proc.stderr
        assert not (sticky_dir / "env").exists()
    finally:
        holder.kill()
        holder.wait()


def test_planted_journal_is_one_clear_line_and_the_old_install_stays(
    victim: User, hostile: User, sticky_dir: Path
) -> None:
    prefix = sticky_dir / "env"
    ok(sqenv("create", prefix, "six", "--python", "/usr/bin/python3", "-q", user=victim))
    as_user(hostile, f"echo '{{}}' > {sticky_dir}/.env.sqenv-journal.tmp")
    env = {"SQENV_TEST_NO_RENAME_EXCHANGE": "1"}
    proc = sqenv("create", prefix, "six", "--force", "--python", "/usr/bin/python3", "-q", user=victim, env=env)
    assert proc.returncode == 3, proc
    assert "sqhostile" in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert ok(run([str(prefix / "bin" / "python"), "-c", "import six; print('old')"], user=victim)).stdout == "old\n"


def test_remove_tree_never_chmods_through_a_symlink(victim: User, sticky_dir: Path) -> None:
    """A venv tree (lib64 -> lib) with a read-only directory, removed by its ordinary owner (root's rm
    would not need the fallback): removed whole, a link's target outside untouched."""
    code = """
import os, sys
from pathlib import Path
from sqenv.publish.publisher import remove_tree
base = Path(sys.argv[1])
outside = base / "outside"; outside.mkdir(mode=0o555)
tree = base / "tree"; (tree / "lib" / "ro").mkdir(parents=True)
(tree / "lib" / "ro" / "f").write_text("x"); (tree / "lib" / "ro").chmod(0o555)
(tree / "lib64").symlink_to("lib"); (tree / "out").symlink_to(outside)
remove_tree(tree)
print(tree.exists(), oct(outside.stat().st_mode & 0o777))
"""
    ok(run(["chown", f"{victim.uid}:{victim.gid}", str(sticky_dir)]))
    out = ok(run([sys.executable, "-c", code, str(sticky_dir)], user=victim)).stdout.split()
    assert out == ["False", "0o555"]


@pytest.mark.parametrize("plant", ["symlink-to-the-shared-dir", "attackers-parent-dir"])
def test_a_byte_code_cache_another_user_can_reach_is_refused(
    victim: User, hostile: User, sticky_dir: Path, plant: str
) -> None:
    """Byte code from the cache goes into the image as it is: Mallory must not be able to put hers
    there, neither by a `bytecode` symlink into a sticky shared directory (where she can write
    entries) nor by owning a directory above the victim's cache (she could swap it)."""
    if plant == "symlink-to-the-shared-dir":
        cache = sticky_dir  # the victim's SQENV_CACHE_DIR: a shared directory like /tmp
        as_user(hostile, f"ln -s {sticky_dir} {sticky_dir}/bytecode")
        said = "is a symbolic link"
    else:
        as_user(hostile, f"mkdir -m 1777 {sticky_dir}/mallory")
        cache = sticky_dir / "mallory" / "victim"
        said = f"`{sticky_dir}/mallory` belongs to another user (uid {hostile.uid})"
    prefix = sticky_dir / "env"
    env = {"SQENV_CACHE_DIR": str(cache), "SQENV_BUILD_DIR": str(victim.home / "build")}
    proc = sqenv("create", prefix, "six==1.16.0", "--python", "/usr/bin/python3", user=victim, env=env)
    assert proc.returncode == 2, proc
    assert "sqenv's byte-code cache" in proc.stderr and said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not prefix.exists()


def test_an_unwritable_log_directory_is_one_clear_line(victim: User, sticky_dir: Path) -> None:
    cache = sticky_dir / "ro"
    as_user(victim, f"mkdir -m 500 {cache}")
    proc = sqenv("create", sticky_dir / "env", "six", "--python", "/usr/bin/python3", user=victim,
                 env={"SQENV_CACHE_DIR": str(cache)})  # fmt: skip
    assert proc.returncode == 2, proc
    assert f"cannot write sqenv's logs in `{cache}/logs`: Permission denied" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_a_uv_cache_that_is_a_symlink_to_a_shared_directory_is_refused(
    victim: User, hostile: User, sticky_dir: Path
) -> None:
    """Mallory's symlink as the victim's uv cache: it resolves to a sticky directory of root's, where
    she can write wheels uv would take from its cache."""
    as_user(hostile, f"ln -s {sticky_dir} {sticky_dir}/uv-cache")
    prefix = sticky_dir / "env"
    env = {"UV_CACHE_DIR": str(sticky_dir / "uv-cache"), "SQENV_BUILD_DIR": str(victim.home / "build")}
    proc = sqenv("create", prefix, "six==1.16.0", "--python", "/usr/bin/python3", user=victim, env=env)
    assert proc.returncode == 2, proc
    assert "uv's cache" in proc.stderr and "belongs to another user (uid 0)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not prefix.exists()
