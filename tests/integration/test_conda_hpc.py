"""Conda environments made right for an HPC machine: the host's MPI, the compute nodes' CPU.

Real solves and installs with py-rattler from the local test channel
(`conda_channel.py`: an mpich/openmpi family with bundled and `external_*`
builds, impi_rt with a bundled build only, mpi4py on mpich, and
`_x86_64-microarch-level` + `sqfast` microarchitecture builds), built and run
by the ordinary test user through the real CLI and launchers.

The one thing simulated: a CPU older than this machine's, through the helper's
test-only SQENV_TEST_CPU_FEATURES (the detected feature bits cannot be
changed otherwise). The host MPI libraries for `sqenv doctor` are stub files in
a directory named by `mpi_libraries`: doctor judges them by their soname.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import User, need, ok, run, sqenv

try:
    import conda_channel
except ImportError:  # tests/ imported as a package
    from tests import conda_channel

MOUNT = "/mnt/sqenv"


@pytest.fixture(scope="module")
def hpc_root(user: User) -> Path:
    """World-readable channel, a package cache and prefixes the test user owns."""
    need("mksquashfs")
    root = Path("/var/tmp") / f"sqenv-hpc-tests-{os.getpid()}"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    conda_channel.build_channel(root / "channels")
    for name in ("pkgs", "envs", "config"):
        (root / name).mkdir()
        os.chown(root / name, user.uid, user.gid)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _channel(root: Path) -> str:
    return next((root / "channels").glob("sqchannel-*")).as_uri()


def create(root: Path, user: User, name: str, *args: str, env: dict[str, str] | None = None):
    prefix = root / "envs" / name
    proc = sqenv("create", prefix, "-c", _channel(root), *args, "--pkgs-dir", root / "pkgs", user=user, env=env)
    return prefix, proc


def config(root: Path, name: str, text: str) -> dict[str, str]:
    path = root / "config" / name
    path.write_text(text)
    os.chmod(path, 0o644)
    return {"SQENV_CONFIG": str(path)}


def lock(prefix: Path) -> dict:
    return json.loads((prefix / "sqenv.json").read_text())["versions"][-1]["lock"]


def builds(prefix: Path) -> dict[str, str]:
    return {p["name"]: p["build"] for p in lock(prefix)["packages"]}


def inside(prefix: Path, user: User, script: str, env: dict[str, str] | None = None):
    """A shell command in the environment, through the install's own launcher (no Python on the way)."""
    return run([prefix / "launcher", "/bin/sh", "-c", script], user=user, env=env)


# --------------------------------------------------------------------------- MPI
def test_mpi_host_resolves_mpi4py_without_any_libmpi(hpc_root: Path, user: User) -> None:
    prefix, proc = create(hpc_root, user, "mpi-host", "mpi4py", "--mpi", "host")
    ok(proc)
    assert "libmpi" not in proc.stderr  # no bundled-MPI warning
    got = builds(prefix)
    assert got["mpich"] == "external_0" and got["mpi"] == "mpich" and "mpi4py" in got
    found = ok(inside(prefix, user, f"find {MOUNT} -name 'libmpi*'; ls {MOUNT}/share/mpi4py")).stdout
    assert found == "README\n", found  # mpi4py is there, no libmpi anywhere in the image
    info = json.loads(ok(sqenv("info", prefix, "--json", user=user)).stdout)
    assert info["mpi"]["mode"] == "host" and info["mpi"]["expected"] == "mpich"
    assert "mpi            host: " in ok(sqenv("info", prefix, user=user)).stdout


def test_bundled_mpi_warns_with_the_library_and_the_flag(hpc_root: Path, user: User) -> None:
    prefix, proc = create(hpc_root, user, "mpi-bundled", "mpi4py")
    ok(proc)
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "lib/libmpi.so.12" in warning[0] and "`--mpi host`" in warning[0], proc.stderr
    assert "mpich 4.1.2 (h0bundled_100)" in warning[0]
    assert builds(prefix)["mpich"] == "h0bundled_100"
    assert ok(inside(prefix, user, f"ls {MOUNT}/lib")).stdout == "libmpi.so.12\n"
    text = ok(sqenv("info", prefix, user=user)).stdout
    assert f"bundled: {prefix}/lib/libmpi.so.12 (MPICH ABI)" in text.replace("\n", "")


def test_no_external_build_is_one_clear_error(hpc_root: Path, user: User) -> None:
    prefix, proc = create(hpc_root, user, "mpi-none", "impi_rt", "--mpi", "host")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: `--mpi host`: the channels have no external build of `impi_rt`, so its own libmpi "
                      "would land in the image"], proc.stderr  # fmt: skip
    assert "`mpich=*=external_*` or `openmpi=*=external_*`" in proc.stderr  # the choices
    assert "Traceback" not in proc.stderr and not prefix.exists()


def test_site_config_mpi_host_and_doctor_checks_the_abi(hpc_root: Path, user: User) -> None:
    """`mpi = "host"` from the config; doctor finds the configured host library and judges its ABI."""
    libs = {}
    for abi, soname in (("mpich", "libmpi.so.12"), ("openmpi", "libmpi.so.40")):
        libs[abi] = hpc_root / "config" / f"host-{abi}"
        libs[abi].mkdir()
        (libs[abi] / soname).write_bytes(b"stub")
        os.chmod(libs[abi], 0o755)
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    assert "libmpi.so.12 " not in ldconfig, "this test needs a machine without an MPICH-ABI libmpi installed"

    good = config(hpc_root, "mpich.toml", f'[defaults]\nmpi = "host"\nmpi_libraries = ["{libs["mpich"]}"]\n')
    prefix, proc = create(hpc_root, user, "mpi-site", "mpi4py", env=good)
    ok(proc)
    assert builds(prefix)["mpich"] == "external_0"
    out = ok(sqenv("doctor", prefix, user=user, env=good)).stdout
    assert f"ok    mpi: host: {libs['mpich']}/libmpi.so.12 (MPICH ABI)" in out, out

    wrong = config(hpc_root, "ompi.toml", f'[defaults]\nmpi = "host"\nmpi_libraries = ["{libs["openmpi"]}"]\n')
    prefix, proc = create(hpc_root, user, "mpi-site-wrong", "mpi4py", env=wrong)
    ok(proc)
    doctor = sqenv("doctor", prefix, user=user, env=wrong)
    assert doctor.returncode == 1
    assert "FAIL  mpi: the host MPI library" in doctor.stdout and "has the Open MPI ABI" in doctor.stdout
    assert "need the MPICH ABI (libmpi.so.12)" in doctor.stdout


# --------------------------------------------------------------------------- target CPU
@pytest.mark.parametrize(("target", "build", "level"), [("x86_64_v3", "v3_100", "3"), ("x86_64", "generic_0", "1")])
def test_target_cpu_picks_the_builds_for_it(hpc_root: Path, user: User, target: str, build: str, level: str) -> None:
    prefix, proc = create(hpc_root, user, f"cpu-{target}", "sqfast", "--target-cpu", target)
    ok(proc)
    got = builds(prefix)
    assert got["sqfast"] == build
    assert (got.get("_x86_64-microarch-level") == f"2_{target}") == (level != "1")
    assert ok(inside(prefix, user, f"cat {MOUNT}/share/sqfast/BUILD")).stdout == build.split("_")[0] + "\n"
    assert lock(prefix)["target_cpu"] == target and lock(prefix)["target_cpu_from"] == "--target-cpu"
    info = json.loads(ok(sqenv("info", prefix, "--json", user=user)).stdout)
    assert info["target_cpu"] == target
    assert info["cpu_check"] == (None if level == "1" else f"x86-64-v{level}")
    assert f"target cpu     {target} (--target-cpu" in ok(sqenv("info", prefix, user=user)).stdout


def test_partition_names_from_the_site_config(hpc_root: Path, user: User) -> None:
    env = config(hpc_root, "cpus.toml", '[cpus]\nlumi-c = "zen2"\nlumi-g = "zen3"\n')
    prefix, proc = create(hpc_root, user, "cpu-partition", "sqfast", "--target-cpu", "lumi-c", env=env)
    ok(proc)
    assert builds(prefix)["_x86_64-microarch-level"] == "2_zen2" and builds(prefix)["sqfast"] == "v3_100"
    assert lock(prefix)["target_cpu"] == "zen2"
    bad = create(hpc_root, user, "cpu-bad", "sqfast", "--target-cpu", "lumi-x", env=env)[1]
    assert bad.returncode != 0
    assert bad.stderr.splitlines()[0] == "error: unknown target CPU `lumi-x`", bad.stderr
    assert "lumi-c, lumi-g" in bad.stderr and "Traceback" not in bad.stderr


V2_ONLY = "cmpxchg16b,lahf_lm,popcnt,sse3,ssse3,sse4.1,sse4.2"


def test_launch_on_a_cpu_without_the_targets_instructions(hpc_root: Path, user: User) -> None:
    """The helper's feature check, on a simulated x86-64-v2 CPU (SQENV_TEST_CPU_FEATURES, test only)."""
    prefix = hpc_root / "envs" / "cpu-x86_64_v3"
    if not prefix.exists():  # made by the test above when it ran
        ok(create(hpc_root, user, "cpu-x86_64_v3", "sqfast", "--target-cpu", "x86_64_v3")[1])
    helper = prefix / "sqenv-enter"
    assert ok(run([helper, "--check-cpu", "x86-64-v3"])).returncode == 0, "this machine must be x86-64-v3"
    assert ok(inside(prefix, user, f"cat {MOUNT}/share/sqfast/BUILD")).stdout == "v3\n"
    old = inside(prefix, user, "echo ran", env={"SQENV_TEST_CPU_FEATURES": V2_ONLY})
    assert old.returncode == 125 and old.stdout == ""
    assert old.stderr.count("\n") == 1, old.stderr  # one line
    assert old.stderr.startswith("sqenv: this environment was built for x86-64-v3 CPUs, and this CPU lacks avx, avx2")
    assert "Illegal instruction" not in old.stderr
    assert "ok    cpu: this CPU has x86-64-v3 (target x86_64_v3)" in ok(sqenv("doctor", prefix, user=user)).stdout
    doctor = sqenv("doctor", prefix, user=user, env={"SQENV_TEST_CPU_FEATURES": V2_ONLY})
    assert doctor.returncode == 1 and "FAIL  cpu: this environment was built for x86-64-v3 CPUs" in doctor.stdout
    generic = hpc_root / "envs" / "cpu-x86_64"
    if generic.exists():  # the generic build runs on that CPU
        assert ok(inside(generic, user, "echo ran", env={"SQENV_TEST_CPU_FEATURES": V2_ONLY})).stdout == "ran\n"


def test_update_keeps_mpi_host_and_the_target(hpc_root: Path, user: User) -> None:
    """An update solves as the create did: mpi4py added later still gets the external mpich."""
    prefix, proc = create(hpc_root, user, "mpi-update", "sqfast", "--mpi", "host", "--target-cpu", "x86_64")
    ok(proc)
    ok(sqenv("update", prefix, "mpi4py", user=user, env={"SQENV_PKGS_DIR": str(hpc_root / "pkgs")}))
    got = builds(prefix)
    assert got["mpich"] == "external_0" and got["sqfast"] == "generic_0"
    assert lock(prefix)["target_cpu"] == "x86_64"
    assert ok(inside(prefix, user, f"find {MOUNT} -name 'libmpi*'")).stdout == ""
