"""A pip layer on a vendor container's own Python (`sqenv create PREFIX --base-image vendor.sif`).

The vendor image is the infra's stand-in (tests/infra/apptainer.sh `vendor-sif`): Debian 12
with python3, python3-numpy (playing the vendor's torch) and python3-pip, and a second copy of
Python and numpy under /opt/vendor, off the PATH, as vendor images keep theirs (/opt/conda).
Everything runs as an ordinary user through the real Apptainer; packages come from PyPI.
"""

from __future__ import annotations

import hashlib
import json
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apptainer import Apptainer, env_for, run_as  # tests/infra

from support import SQENV, need, owned_dir

pytestmark = pytest.mark.apptainer

HOST_DIRS = "/home:/work"  # what the shim shows apptainer besides /tmp and /var/tmp
LAYER = "six\nmsgpack\ntifffile\n"  # pure Python, a compiled wheel, a package that needs numpy
SHOW = (
    "import sys, six, msgpack._cmsgpack, tifffile, numpy; "
    "print(sys.prefix, six.__file__, msgpack._cmsgpack.__file__, tifffile.__file__, numpy.__file__, sep='\\n')"
)


@pytest.fixture(scope="module")
def user(app: Apptainer) -> str:
    return app.ensure_user("sqapp")


@pytest.fixture(scope="module")
def vendor(app: Apptainer, user: str) -> Path:
    return app.vendor_sif(user)


@pytest.fixture(scope="module")
def work(user: str) -> Iterator[Path]:
    pw = pwd.getpwnam(user)
    with owned_dir("sqenv-base-image-tests", pw.pw_uid, pw.pw_gid) as path:
        (path / "req.txt").write_text(LAYER)
        yield path


def run(app: Apptainer, user: str, argv: list, **kw):
    env = {"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS, **kw.pop("env", {})}
    return run_as(app, user, argv, env=env, timeout=900, **kw)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def layer(app: Apptainer, user: str, vendor: Path, work: Path) -> Path:
    need("mksquashfs")
    prefix = work / "layer"
    ok(run(app, user, [*SQENV, "create", prefix, "--base-image", vendor, "-r", work / "req.txt", "-q"]))
    return prefix


def test_layer_packages_come_from_the_layer_and_numpy_from_the_container(app, user, layer) -> None:
    out = ok(run(app, user, [layer / "bin" / "python", "-c", SHOW])).stdout.splitlines()
    site = f"{layer}/lib/python3.11/site-packages/"
    assert out[0] == str(layer)
    assert out[1].startswith(site) and out[2].startswith(site) and out[2].endswith(".so")
    assert out[3].startswith(site)
    assert out[4] == "/usr/lib/python3/dist-packages/numpy/__init__.py"  # the image's, not reinstalled


def test_the_image_console_scripts_run_with_the_layer_python(app, user, layer) -> None:
    """`vendor-tool` (`#!/usr/bin/python3` in the image, like a PyTorch image's torchrun) gets a
    launcher, and runs with the layer's Python: it sees the layer's packages."""
    assert "vendor-tool" in (p.name for p in (layer / "bin").iterdir())
    out = ok(run(app, user, [layer / "bin" / "vendor-tool"])).stdout.split()
    # (like the layer's own console scripts, it starts its Python by the image path)
    assert out == ["/mnt/sqenv", "/mnt/sqenv/lib/python3.11/site-packages/six.py"]


def test_the_layer_holds_no_numpy_and_info_names_the_base_image(app, user, layer, vendor) -> None:
    listing = f"import os; print(os.listdir('{layer}/lib/python3.11/site-packages'))"
    found = ok(run(app, user, [layer / "bin" / "python", "-c", listing]))
    assert "numpy" not in found.stdout and "tifffile" in found.stdout
    assert not [d for d in found.stdout.split("'") if d.endswith(".dist-info") and "numpy" in d.lower()]
    info = json.loads(ok(run(app, user, [*SQENV, "info", layer, "--json"])).stdout)
    base = info["base_image"]
    assert base["path"] == str(vendor) and base["python"] == "/usr/bin/python3.11"
    assert base["sha256"] == hashlib.sha256(vendor.read_bytes()).hexdigest()
    names = {p["name"].lower() for p in info["packages"]}
    assert {"six", "msgpack", "tifffile"} <= names and "numpy" not in names
    assert (layer / "container.sif").is_file()


def test_pip_in_the_layer_sees_the_container_packages(app, user, layer) -> None:
    listed = json.loads(ok(run(app, user, [layer / "bin" / "python", "-m", "pip", "list", "--format", "json"])).stdout)
    versions = {p["name"].lower(): p["version"] for p in listed}
    assert versions["numpy"] == "1.24.2" and "tifffile" in versions


def test_update_adds_one_package_and_rollback_removes_it(app, user, layer) -> None:
    ok(run(app, user, [*SQENV, "update", layer, "idna", "-q"]))
    show = "import idna, numpy; print(idna.__file__, numpy.__file__)"
    out = ok(run(app, user, [layer / "bin" / "python", "-c", show]))
    idna, numpy = out.stdout.split()
    assert idna.startswith(f"{layer}/lib/python3.11/site-packages/") and numpy.startswith("/usr/lib/python3/")
    history = ok(run(app, user, [*SQENV, "history", layer, "--json"])).stdout
    assert sorted(v["number"] for v in json.loads(history)) == [1, 2]
    ok(run(app, user, [*SQENV, "rollback", layer, "-q"]))
    gone = run(app, user, [layer / "bin" / "python", "-c", "import idna"])
    assert gone.returncode == 1 and "No module named 'idna'" in gone.stderr
    assert ok(run(app, user, [layer / "bin" / "python", "-c", "import tifffile; print('ok')"])).stdout.strip() == "ok"


def test_a_python_under_opt_referenced_image(app, user, vendor, work) -> None:
    """`--python` inside the image (/opt/vendor, which the host's /opt must not hide), and
    `--base-image-ref`: launches use the image where it is."""
    prefix = work / "opt-layer"
    argv = [*SQENV, "create", prefix, "--base-image", vendor, "--base-image-ref", "--python", "/opt/vendor/bin/python3"]
    ok(run(app, user, [*argv, "six", "-q"]))
    assert not (prefix / "container.sif").exists()
    assert f"SQENV_CONTAINER={vendor}" in (prefix / "launcher").read_text()
    out = ok(run(app, user, [prefix / "bin" / "python", "-c", "import six, numpy; print(numpy.__file__)"]))
    assert out.stdout.strip() == "/opt/vendor/lib/python3/dist-packages/numpy/__init__.py"


def test_requirements_that_would_replace_the_container_numpy_fail_clearly(app, user, vendor, work) -> None:
    prefix = work / "replaced"
    proc = run(app, user, [*SQENV, "create", prefix, "--base-image", vendor, "numexpr==2.14.2"])
    assert proc.returncode == 5, proc.stderr
    assert "other versions of what the base image has: numpy 1.24.2" in proc.stderr
    assert "Traceback" not in proc.stderr and not prefix.exists()


def test_naming_the_container_package_installs_it_into_the_layer(app, user, vendor, work) -> None:
    prefix = work / "own-numpy"
    ok(run(app, user, [*SQENV, "create", prefix, "--base-image", vendor, "numpy>=1.26", "-q"]))
    show = "import numpy; print(numpy.__version__, numpy.__file__)"
    out = ok(run(app, user, [prefix / "bin" / "python", "-c", show]))
    version, path = out.stdout.split()
    assert path.startswith(f"{prefix}/lib/python3.11/site-packages/") and version != "1.24.2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--python", "/opt/none/python3"], "has no working Python at `/opt/none/python3`", id="no-python"),
        pytest.param(["--python", "python3"], "must be an absolute path inside the base image", id="relative-python"),
        pytest.param(["--engine", "embedded"], "a layer on a base image runs in that container", id="embedded"),
    ],
)
def test_bad_layer_input_is_one_line_and_leaves_nothing(app, user, vendor, work, args, message) -> None:
    prefix = work / "bad"
    proc = run(app, user, [*SQENV, "create", prefix, "--base-image", vendor, "six", *args])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not prefix.exists()


def test_a_referenced_image_others_can_replace_is_refused(app, user, vendor, work) -> None:
    """`--base-image-ref` runs whatever is at that path at every launch."""
    shared = work / "group-writable"
    shared.mkdir()
    shared.chmod(0o777)  # (not sticky: anyone may replace the image)
    shutil.copyfile(vendor, shared / "vendor.sif")
    (shared / "vendor.sif").chmod(0o644)
    proc = run(
        app, user, [*SQENV, "create", work / "ref", "--base-image", shared / "vendor.sif", "--base-image-ref", "six"]
    )
    assert proc.returncode == 2 and f"`{shared}` can be changed by other users" in proc.stderr, proc.stderr
    assert not (work / "ref").exists()


def test_a_base_image_that_is_not_a_sif_is_refused(app, user, work) -> None:
    fake = work / "fake.sif"
    fake.write_text("not an image\n")
    prefix = work / "bad-image"
    proc = run(app, user, [*SQENV, "create", prefix, "--base-image", fake, "six"])
    assert proc.returncode == 2 and "is not a SIF or squashfs container image" in proc.stderr
    assert not prefix.exists()


def test_srun_two_tasks_in_the_layer(app, user, layer) -> None:
    from slurm import ensure_slurm

    cluster = ensure_slurm()
    code = "import os, sys, tifffile, numpy; print(os.environ['SLURM_PROCID'], sys.prefix, numpy.__file__)"
    extra = {"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS, "PATH": f"{app.bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    cp = cluster.srun(["-n", "2", "--overcommit", f"{layer}/bin/python", "-c", code], user=user, env=extra,
                      cwd="/var/tmp")  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    numpy = "/usr/lib/python3/dist-packages/numpy/__init__.py"
    assert sorted(cp.stdout.splitlines()) == [f"0 {layer} {numpy}", f"1 {layer} {numpy}"], cp.stdout


def test_a_launch_profile_binds_a_host_file_and_sets_variables(app, user, vendor, work) -> None:
    """`--profile gpu` ([profiles.gpu] of the config): what LUMI's GPU containers need, here a
    host file (libcxi.so.1's stand-in) the container does not otherwise see, and a variable that
    names node-local storage with the user's name, expanded at launch."""
    host = Path(tempfile.mkdtemp(prefix="sqenv-profile-", dir="/home"))  # not bound by default: not $HOME
    try:
        host.chmod(0o755)
        lib = host / "libcxi.so.1"
        lib.write_text("fake libcxi\n")
        lib.chmod(0o644)
        config = work / "profile.toml"
        config.write_text(f'[profiles.gpu]\nbind_paths = ["{lib}"]\n'
                          'env = { MIOPEN_USER_DB_PATH = "/tmp/${USER}-miopen" }\n')  # fmt: skip
        prefix = work / "gpu-layer"
        env = {"SQENV_CONFIG": str(config), "SQENV_APPTAINER_HOST_DIRS": "/var/tmp"}
        ok(run(app, user, [*SQENV, "create", prefix, "--base-image", vendor, "--profile", "gpu", "six", "-q"], env=env))
        code = f"import os; print(os.environ['MIOPEN_USER_DB_PATH'], open('{lib}').read().strip())"
        out = ok(run(app, user, [prefix / "bin" / "python", "-c", code], env=env)).stdout
        assert out.strip() == f"/tmp/{user}-miopen fake libcxi"
        plain = run(app, user, ["apptainer", "exec", vendor, "test", "-e", lib], env=env)
        assert plain.returncode == 1  # seen only through the profile's bind
        bad = run(app, user, [*SQENV, "create", work / "nope", "six", "--profile", "cpu"], env=env)
        assert bad.returncode == 2 and "no launch profile `cpu` in the sqenv config (gpu)" in bad.stderr
    finally:
        shutil.rmtree(host, ignore_errors=True)


def test_from_a_layer_rebuilds_it_on_its_image_and_a_python_mismatch_is_refused(app, user, layer, work) -> None:
    again = work / "again"
    ok(run(app, user, [*SQENV, "create", again, "--from", layer, "-q"]))
    info = json.loads(ok(run(app, user, [*SQENV, "info", again, "--json"])).stdout)
    original = json.loads(ok(run(app, user, [*SQENV, "info", layer, "--json"])).stdout)
    assert info["base_image"]["sha256"] == original["base_image"]["sha256"]
    assert {p["name"].lower() for p in info["packages"]} >= {"six", "msgpack", "tifffile"}
    # a lock made on another Python (its record says 3.12): refused before anything is built
    other = work / "made-on-3.12"
    shutil.copytree(layer, other, symlinks=True)
    meta = json.loads((other / "sqenv.json").read_text())
    for version in meta["versions"]:
        version["python"]["version"] = "3.12.7"
    (other / "sqenv.json").write_text(json.dumps(meta))
    proc = run(app, user, [*SQENV, "create", work / "mismatch", "--from", other])
    assert proc.returncode == 2, proc.stderr
    assert "the lock was made with Python 3.12.7" in proc.stderr and "is Python 3.11.2" in proc.stderr
    assert not (work / "mismatch").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_interrupted_layer_build_leaves_no_container_process(app, user, vendor, work, sig) -> None:
    """A signal while a command runs in the container: Apptainer gets SIGTERM and the time to
    unmount its image (its FUSE server is in another process group, which a plain SIGKILL of the
    tool's group leaves running): from sqenv's handler, or after a SIGKILL of sqenv from the
    tool's parent-death signal and sqenv's watchdog. The next create sweeps the rest."""
    started = work / "started"
    started.unlink(missing_ok=True)
    script = work / "slow.sh"
    script.write_text(f"touch {started}\nsleep 120\n")
    prefix = work / f"interrupted-{sig.name}"
    argv = [*SQENV, "create", prefix, "--base-image", vendor, "six", "--pre-install", script]
    env = env_for({"SQENV_APPTAINER_HOST_DIRS": HOST_DIRS})
    with app.popen([str(a) for a in argv], user=user, cwd="/var/tmp", env=env, text=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:  # fmt: skip
        for _ in range(600):
            if started.exists() or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert started.exists(), proc.communicate()
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err
    if sig == signal.SIGTERM:
        assert "interrupted" in err, err
    uid = pwd.getpwnam(user).pw_uid
    for _ in range(100):  # (the watchdog allows 10 s before its SIGKILL)
        left = [
            p for p in Path("/proc").iterdir() if p.name.isdigit() and owned_by(p, uid) and "squashfuse" in cmdline(p)
        ]
        if not left:
            break
        time.sleep(0.2)
    assert not left, [cmdline(p) for p in left]
    assert not prefix.exists()
    ok(run(app, user, [*SQENV, "create", prefix, "--base-image", vendor, "six", "-q"]))
    assert sorted(p.name for p in prefix.parent.iterdir() if p.name.startswith(f".{prefix.name}")) == []


def owned_by(proc: Path, uid: int) -> bool:
    try:
        return proc.stat().st_uid == uid
    except OSError:
        return False


def cmdline(proc: Path) -> str:
    try:
        return proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- what a second user must not do
def test_a_referenced_image_is_recorded_by_its_real_path(app, user, vendor, work) -> None:
    """A symlink (or `..`) in `--base-image-ref` is resolved once, checked, and recorded: launches
    do not follow a link someone could move later."""
    link = work / "current.sif"
    link.symlink_to(vendor)
    prefix = work / "by-link"
    ok(run(app, user, [*SQENV, "create", prefix, "--base-image", link, "--base-image-ref", "six", "-q"]))
    assert f"SQENV_CONTAINER={vendor.resolve()}" in (prefix / "launcher").read_text()
    info = json.loads(ok(run(app, user, [*SQENV, "info", prefix, "--json", "--verify"])).stdout)
    assert info["base_image"]["path"] == str(vendor.resolve()) and info["verified"]


def test_an_image_others_can_write_is_copied_not_linked(app, user, vendor, work) -> None:
    shared = work / "shared.sif"
    shutil.copyfile(vendor, shared)
    shared.chmod(0o666)
    prefix = work / "copied"
    ok(run(app, user, [*SQENV, "create", prefix, "--base-image", shared, "six", "-q"]))
    assert (prefix / "container.sif").stat().st_ino != shared.stat().st_ino
    shared.write_bytes(b"changed by someone else\n")
    info = json.loads(ok(run(app, user, [*SQENV, "info", prefix, "--json", "--verify"])).stdout)
    assert info["verified"]


def test_update_refuses_a_build_directory_everyone_can_write(app, user, layer, work) -> None:
    open_dir = Path(tempfile.mkdtemp(prefix="sqenv-ww-", dir="/var/tmp"))
    try:
        open_dir.chmod(0o777)  # not sticky: another user could swap the build tree
        proc = run(app, user, [*SQENV, "update", layer, "idna"], env={"SQENV_BUILD_DIR": str(open_dir)})
        assert proc.returncode == 2 and "is not safe to build in" in proc.stderr, proc.stderr
        assert list(open_dir.iterdir()) == []
    finally:
        shutil.rmtree(open_dir, ignore_errors=True)


def test_a_uv_cache_another_user_made_is_refused(app, user, vendor, work) -> None:
    planted = Path(tempfile.mkdtemp(prefix="sqenv-uv-cache-", dir="/var/tmp"))  # root's, 0777: not the user's
    try:
        planted.chmod(0o777)
        proc = run(app, user, [*SQENV, "create", work / "cache", "--base-image", vendor, "six"],
                   env={"UV_CACHE_DIR": str(planted)})  # fmt: skip
        assert proc.returncode == 2 and "uv's cache" in proc.stderr and "not safe" in proc.stderr, proc.stderr
        assert not (work / "cache").exists()
    finally:
        shutil.rmtree(planted, ignore_errors=True)


def test_the_user_site_is_not_taken_for_the_image(app, user, vendor, work) -> None:
    """six in ~/.local (the user's own site) is not a package of the image: the layer gets its own."""
    home = Path(pwd.getpwnam(user).pw_dir)
    site = home / ".local" / "lib" / "python3.11" / "site-packages"
    made = not site.exists()
    try:
        ok(run(app, user, ["mkdir", "-p", site]))
        dist = site / "six-1.0.dist-info"
        make = f"mkdir {dist} && printf 'Name: six\\nVersion: 1.0\\n' > {dist}/METADATA"
        ok(run(app, user, ["sh", "-c", make]))
        prefix = work / "user-site"
        ok(run(app, user, [*SQENV, "create", prefix, "--base-image", vendor, "six", "-q"]))
        info = json.loads(ok(run(app, user, [*SQENV, "info", prefix, "--json"])).stdout)
        assert "six" in {p["name"].lower() for p in info["packages"]}
    finally:
        shutil.rmtree(site / "six-1.0.dist-info", ignore_errors=True)
        if made:
            shutil.rmtree(home / ".local", ignore_errors=True)
