"""`sqenv kernel install|remove`: a real Jupyter kernel from an install.

jupyter_client (the test extra) starts the kernelspec as the ordinary test user, runs code in it,
interrupts it (SIGINT through the launcher, which execs: the kernel keeps the pid Jupyter started),
restarts and shuts it down. The environment is built with ipykernel from PyPI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from support import BASE_PYTHON, need, ok, run, sqenv


@pytest.fixture(scope="module")
def kernel_env(user, shared_dir: Path) -> Path:
    need("mksquashfs")
    prefix = shared_dir / "kernel-env"
    ok(sqenv("create", prefix, "ipykernel", "six", "--python", BASE_PYTHON, user=user))
    return prefix


@pytest.fixture
def jupyter_dirs(user, shared_dir: Path, tmp_path: Path) -> dict[str, str]:
    """JUPYTER_DATA_DIR / JUPYTER_RUNTIME_DIR of the test user, fresh for each test."""
    base = shared_dir / f"jupyter-{tmp_path.name}"
    base.mkdir()
    os.chown(base, user.uid, user.gid)
    return {"JUPYTER_DATA_DIR": str(base / "data"), "JUPYTER_RUNTIME_DIR": str(base / "runtime")}


def test_kernel_runs_interrupts_restarts_and_shuts_down(kernel_env: Path, user, jupyter_dirs) -> None:
    out = ok(sqenv("kernel", "install", kernel_env, "--name", "sq-test", user=user, env=jupyter_dirs)).stderr
    spec_dir = Path(jupyter_dirs["JUPYTER_DATA_DIR"]) / "kernels" / "sq-test"
    assert f"Installed the kernel `sq-test` in {spec_dir}" in out
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"][0] == str(kernel_env / "bin" / "python")
    driver_script = str(Path(__file__).with_name("kernel_driver.py"))
    driver = run([sys.executable, driver_script, "sq-test"], user=user, env=jupyter_dirs)
    result = json.loads(ok(driver).stdout.splitlines()[-1])
    six_file, pid = result["six"]["stdout"].split()
    assert six_file.startswith(f"{kernel_env}/lib/") and six_file.endswith("six.py")
    assert int(pid) == result["started_pid"]  # the launcher exec'd: Jupyter's pid is the kernel's
    assert result["interrupt"] == {"status": "error", "ename": "KeyboardInterrupt"}
    assert result["after_interrupt"]["stdout"] == "42\n"
    prefix, new_pid = result["after_restart"]["stdout"].split()
    assert prefix == str(kernel_env) and int(new_pid) == result["restarted_pid"] != result["started_pid"]
    assert result["alive_after_shutdown"] is False and result["pid_exists_after_shutdown"] is False
    removed = ok(sqenv("kernel", "remove", "sq-test", user=user, env=jupyter_dirs)).stderr
    assert "Removed the kernel `sq-test`" in removed and not spec_dir.exists()


def test_kernel_refuses_an_env_without_ipykernel(small_env: Path, user, jupyter_dirs) -> None:
    proc = sqenv("kernel", "install", small_env, user=user, env=jupyter_dirs)
    assert proc.returncode == 3
    assert f"error: `{small_env}` has no ipykernel" in proc.stderr
    assert f"hint: add it: `sqenv update {small_env} ipykernel`" in proc.stderr
    assert not Path(jupyter_dirs["JUPYTER_DATA_DIR"]).exists()


def test_kernel_install_on_a_non_install_is_one_clear_line(user, jupyter_dirs, shared_dir: Path) -> None:
    proc = sqenv("kernel", "install", shared_dir, user=user, env=jupyter_dirs)
    assert proc.returncode == 3 and proc.stderr.startswith(f"error: `{shared_dir}` is not a sqenv install")
    assert "Traceback" not in proc.stderr and not Path(jupyter_dirs["JUPYTER_DATA_DIR"]).exists()


def test_kernel_into_a_jupyter_the_user_cannot_write(kernel_env: Path, user, jupyter_dirs) -> None:
    proc = sqenv("kernel", "install", kernel_env, "--sys-prefix", "/usr", user=user, env=jupyter_dirs)
    assert proc.returncode == 3 and "is not writable for you" in proc.stderr, proc.stderr
    assert "--sys-prefix" in ok(sqenv("kernel", "install", "--help")).stdout


def test_kernel_remove_leaves_other_kernels_alone(user, jupyter_dirs) -> None:
    other = Path(jupyter_dirs["JUPYTER_DATA_DIR"]) / "kernels" / "python3"
    ok(run(["mkdir", "-p", str(other)], user=user))
    ok(run(["sh", "-c", f"echo '{{\"argv\": [\"python3\"]}}' > '{other}/kernel.json'"], user=user))
    proc = sqenv("kernel", "remove", "python3", user=user, env=jupyter_dirs)
    assert proc.returncode == 2 and "was not written by sqenv" in proc.stderr and other.exists()
    missing = sqenv("kernel", "remove", "nope", user=user, env=jupyter_dirs)
    assert missing.returncode == 2 and "there is no kernel `nope`" in missing.stderr
