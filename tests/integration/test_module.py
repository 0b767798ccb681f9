"""`sqenv module`: module files loaded by the real Lmod and Environment Modules.

Lmod is Debian's `lmod`; Environment Modules is Debian's `environment-modules` package, which
conflicts with lmod, so scripts/setup.sh unpacks it under /opt/sqenv-test and the test defines
`module` exactly as its init/sh does (`eval "$(tclsh modulecmd.tcl sh ...)"`)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from support import IN_CI, ok, run, sqenv

LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")
MODULECMD = Path("/opt/sqenv-test/environment-modules/usr/lib/modulecmd.tcl")

CHECK = """
module use {dir}
before=$PATH
module load {name}
python -c 'import six, sys; print("SIX=" + six.__file__)'
echo "VIRTUAL_ENV=$VIRTUAL_ENV"
module whatis {name} 2>&1
module unload {name}
[ "$PATH" = "$before" ] && echo PATH-RESTORED
echo "AFTER=${{VIRTUAL_ENV-unset}}"
"""


def _need(path: Path) -> None:
    if not path.exists():
        (pytest.fail if IN_CI else pytest.skip)(f"{path} is missing: run `sh scripts/setup.sh --test`")


@pytest.fixture
def moddir(user, shared_dir: Path, tmp_path: Path) -> Path:
    path = shared_dir / f"modules-{tmp_path.name}"
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    return path


@pytest.mark.parametrize("system", ["lmod", "environment-modules"])
def test_module_load_and_unload(small_env: Path, user, moddir: Path, system: str) -> None:
    if system == "lmod":
        _need(LMOD_INIT)
        fmt, setup = "lua", f". {LMOD_INIT}"
    else:
        _need(MODULECMD)
        fmt, setup = "tcl", f'module() {{ eval "$(tclsh8.6 {MODULECMD} sh "$@")"; }}'
    proc = ok(sqenv("module", small_env, "--dir", moddir, "--name", "smallenv/1.0", "--format", fmt, user=user))
    assert f"module use {moddir}; module load smallenv/1.0" in proc.stderr
    script = setup + CHECK.format(dir=shlex.quote(str(moddir)), name="smallenv/1.0")
    out = ok(run(["bash", "-c", script], user=user)).stdout
    assert f"SIX={small_env}/lib/" in out and f"VIRTUAL_ENV={small_env}\n" in out, out
    assert "six" in out.split("VIRTUAL_ENV=")[1]  # whatis lists the main packages
    assert "PATH-RESTORED" in out and "AFTER=unset" in out, out


def test_module_into_a_dir_the_user_cannot_write(small_env: Path, user) -> None:
    proc = sqenv("module", small_env, "--dir", "/usr/share/sqenv-no-modules", user=user)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: cannot write the module file `/usr/share/sqenv-no-modules/small-env.lua`")
    assert "--dir DIR" in proc.stderr and not Path("/usr/share/sqenv-no-modules").exists()


def test_module_of_a_non_install(user, moddir: Path) -> None:
    proc = sqenv("module", moddir.parent, "--dir", moddir, user=user)
    assert proc.returncode == 3 and "is not a sqenv install" in proc.stderr and not any(moddir.iterdir())
