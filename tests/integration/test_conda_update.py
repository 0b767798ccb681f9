"""`sqenv update` of conda environments: conda packages added, removed and re-solved as new layers.

Local test channel only (`conda_channel.py`): `sqapp` brings `sqlib-b`, `sqlib-a 2.0` and `sqpython`;
`sqbin` is a compiled program with a binary prefix placeholder; `sqconflict-x` needs `sqlib-a <2`.
Every test updates its own copy of one install made once, with its own build directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from support import launchers, need, ok, run, sqenv

try:
    import conda_channel
except ImportError:  # tests/ imported as a package
    from tests import conda_channel

MOUNT = "/mnt/sqenv"
SQBIN_OUT = f"{MOUNT}/{conda_channel.SQBIN_DATA_RELPATH}\n" + conda_channel.SQBIN_DATA.decode()


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conda_channel.build_channel(tmp_path_factory.mktemp("channels"))


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pkgs")


@pytest.fixture(scope="module")
def base_env(channel: Path, pkgs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("mksquashfs")
    need("fusermount3")
    prefix = tmp_path_factory.mktemp("conda-update") / "env"
    ok(sqenv("create", prefix, "-c", channel.as_uri(), "sqapp", "--pkgs-dir", pkgs, "-q"))
    return prefix


@pytest.fixture
def env(base_env: Path, pkgs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SQENV_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("SQENV_PKGS_DIR", str(pkgs))
    return Path(shutil.copytree(base_env, tmp_path / "env", symlinks=True))


def meta(prefix: Path) -> dict:
    return json.loads((prefix / "sqenv.json").read_text())


def current(prefix: Path) -> dict:
    data = meta(prefix)
    return next(v for v in data["versions"] if v["number"] == data["current"])


def names(prefix: Path) -> set[str]:
    return {p["name"] for p in current(prefix)["packages"]}


def explicit(prefix: Path) -> list[str]:
    out = ok(sqenv("export", prefix, "--format", "explicit")).stdout
    return sorted(line.rsplit("/", 1)[1].split("#")[0] for line in out.splitlines() if "://" in line)


def inside(prefix: Path, script: str) -> str:
    return ok(sqenv("run", prefix, "--", "sh", "-c", script)).stdout


def snapshot(prefix: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(prefix.rglob("*")):
        rel = str(path.relative_to(prefix))
        out[rel] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None
    return out


def assert_unchanged(prefix: Path, before: dict[str, object]) -> None:
    assert snapshot(prefix) == before
    build = Path(os.environ["SQENV_BUILD_DIR"])
    assert not list(build.glob("sqenv-update-*")), list(build.iterdir())


ORIGINAL = ["sqapp-1.0-sq_0.conda", "sqlib-a-2.0-sq_0.conda", "sqlib-b-1.0-sq_0.tar.bz2", "sqpython-3.11.0-sq_0.conda"]


def test_add_remove_and_roll_back(env: Path, tmp_path: Path) -> None:
    assert explicit(env) == ORIGINAL
    proc = ok(sqenv("update", env, "sqbin"))
    assert "to version 2: +sqbin 1.0" in proc.stderr
    # the launcher runs the new program; its binary placeholder points at the mount path
    assert ok(run([env / "bin" / "sqbin"])).stdout == SQBIN_OUT
    assert ok(run([env / "bin" / "sqapp"])).stdout == f"sqapp prefix={MOUNT}\nprefix={MOUNT}\n"
    assert names(env) == {"sqapp", "sqbin", "sqlib-a", "sqlib-b", "sqpython"}
    assert explicit(env) == sorted([*ORIGINAL, "sqbin-1.0-sq_0.conda"])
    assert current(env)["lock"]["specs"] == ["sqapp", "sqbin"]
    # only the change is in the new layer
    assert len(current(env)["layers"]) == 2
    assert "extracted_package_dir" not in inside(env, f"cat {MOUNT}/conda-meta/sqbin-*.json")
    # the lock is the updated set: rebuilt from it, the same files
    again = tmp_path / "again"
    ok(sqenv("create", again, "--from", env, "-q"))
    assert explicit(again) == explicit(env)

    proc = ok(sqenv("update", env, "--remove", "sqbin"))
    assert "to version 3: -sqbin" in proc.stderr
    assert not (env / "bin" / "sqbin").exists() and not (env / "bin" / "sqbin").is_symlink()
    inside(env, f"test ! -e {MOUNT}/bin/sqbin && test ! -e {MOUNT}/share/sqbin && ! ls {MOUNT}/conda-meta/sqbin-*")
    assert ok(run([env / "bin" / "sqapp"])).returncode == 0
    assert explicit(env) == ORIGINAL
    history = ok(sqenv("history", env)).stdout
    assert "+sqbin 1.0" in history and "-sqbin" in history and "inputs: --remove sqbin" in history

    # back to version 2 (sqbin there again), then to the first one
    ok(sqenv("rollback", env, "--to", "2"))
    assert ok(run([env / "bin" / "sqbin"])).stdout == SQBIN_OUT
    ok(sqenv("rollback", env, "--to", "1"))
    assert not (env / "bin" / "sqbin").is_symlink()
    assert explicit(env) == ORIGINAL
    inside(env, f"test ! -e {MOUNT}/bin/sqbin")


def test_removing_a_needed_package_is_refused(env: Path) -> None:
    before = snapshot(env)
    proc = sqenv("update", env, "--remove", "sqlib-a")
    assert proc.returncode == 2, proc.stderr
    assert "cannot remove `sqlib-a`: `sqlib-b` depends on it" in proc.stderr
    assert "--remove sqapp --remove sqlib-a --remove sqlib-b" in proc.stderr  # everything that would go
    assert_unchanged(env, before)


def test_unsolvable_update_changes_nothing(env: Path) -> None:
    before = snapshot(env)
    proc = sqenv("update", env, "sqconflict-x")
    assert proc.returncode == 5, proc.stderr
    assert "the requested packages cannot be installed together" in proc.stderr
    assert "sqconflict-x" in proc.stderr and "sqlib-a <2" in proc.stderr  # the solver's explanation
    assert_unchanged(env, before)
    # a package no channel has: named, with the close name, and where pip packages go
    proc = sqenv("update", env, "sqbinn")
    assert proc.returncode == 5 and "package `sqbinn` does not exist" in proc.stderr, proc.stderr
    assert "`sqbin`" in proc.stderr and "-r requirements.txt" in proc.stderr
    # a conda install takes match specs
    proc = sqenv("update", env, "sqbin>>1")
    assert proc.returncode == 2 and "not a valid conda match spec" in proc.stderr, proc.stderr
    assert_unchanged(env, before)
    # what is installed already: no new version
    proc = ok(sqenv("update", env, "sqapp"))
    assert "Nothing changed" in proc.stderr
    assert_unchanged(env, before)


def test_environment_file_resolves_again(env: Path, channel: Path, tmp_path: Path) -> None:
    yml = tmp_path / "environment.yml"
    yml.write_text(f"channels: [{channel.as_uri()}]\ndependencies: [sqapp, sqbin >=1]\nvariables: {{MYVAR: one}}\n")
    post = tmp_path / "post.sh"
    post.write_text('echo "export FROM_POST=1" > "$CONDA_PREFIX/etc/conda/activate.d/zz-post.sh"\n')
    ok(sqenv("update", env, "-f", yml, "--post-install", post))
    assert ok(run([env / "bin" / "sqbin"])).stdout == SQBIN_OUT
    # the yml's variables and the activation scripts, the post-install script's included
    assert inside(env, 'echo "$MYVAR|$SQPYTHON_ACTIVATED|$FROM_POST"') == "one|yes|1\n"
    assert current(env)["lock"]["variables"] == [["MYVAR", "one"]]
    # a new file: only what it asks for (sqlib-a 1.0 now), the rest goes, activation follows
    yml.write_text(f"channels: [{channel.as_uri()}]\ndependencies: [sqlib-a <2]\n")
    proc = ok(sqenv("update", env, "-f", yml))
    assert "-sqapp, -sqbin, -sqlib-b, -sqpython, sqlib-a 2.0→1.0" in proc.stderr
    assert explicit(env) == ["sqlib-a-1.0-sq_0.tar.bz2"]
    out = inside(env, f'echo "[$MYVAR][$SQPYTHON_ACTIVATED][$FROM_POST]"; cat {MOUNT}/share/sqlib-a/VERSION')
    assert out == "[][][1]\n1.0\n"  # the user's script stays: no package owns it
    assert current(env)["programs"] == [] and not launchers(env)
    # an explicit file is not an update's input
    (tmp_path / "explicit.txt").write_text("@EXPLICIT\n")
    proc = sqenv("update", env, "-f", tmp_path / "explicit.txt")
    assert proc.returncode == 2 and "--from" in proc.stderr, proc.stderr
