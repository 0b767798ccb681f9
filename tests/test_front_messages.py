"""What sqenv says: "did you mean", rich markup in names shown as typed, `export` without
`--format`, and `rollback` saying back or forward."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import ok, sqenv


@pytest.mark.parametrize(
    ("argv", "error", "hint"),
    [
        (["crate", "/x"], "error: `crate` is not a sqenv command", "did you mean `sqenv create`?"),
        (["create", "/x", "six", "--pyton", "p"], "`sqenv create` has no option `--pyton`", "did you mean `--python`?"),
        (["info", "/x", "--jsn"], "`sqenv info` has no option `--jsn`", "did you mean `--json`?"),
        (["export", "/x", "--format", "yaml"], "`yaml` is not one of explicit, yml, requirements", "`yml`?"),
    ],
)
def test_did_you_mean(argv: list[str], error: str, hint: str) -> None:
    proc = sqenv(*argv)
    assert proc.returncode == 2 and error in proc.stderr and hint in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_suggested_options_exist(tmp_path: Path) -> None:
    """Every option a "did you mean" names is in that subcommand's --help."""
    proc = sqenv("create", tmp_path / "x", "six", "--post-instll", "s.sh")
    assert "did you mean `--post-install`?" in proc.stderr
    assert "--post-install" in ok(sqenv("create", "--help")).stdout


def test_export_without_format_uses_the_one_that_applies(small_env: Path) -> None:
    out = ok(sqenv("export", small_env)).stdout
    assert any(line.startswith("six==") for line in out.splitlines()), out


@pytest.fixture
def two_versions(small_env: Path, user, shared_dir: Path, tmp_path: Path) -> Path:
    """A copy of the small install with a version 2 made by a post-install script named like markup."""
    target = shared_dir / f"copy-{os.getpid()}-{tmp_path.name}"
    shutil.copytree(small_env, target, symlinks=True)
    for path in [target, *target.rglob("*")]:
        os.chown(path, user.uid, user.gid, follow_symlinks=False)
    scripts = shared_dir / f"scripts [x]-{tmp_path.name}"
    scripts.mkdir()
    script = scripts / "[bold]post.sh"
    script.write_text("python -c \"import pathlib, sys; pathlib.Path(sys.prefix, 'marker').write_text('x')\"\n")
    proc = ok(sqenv("update", target, "--post-install", script, user=user))
    assert "✓ Running the post-install script [bold]post.sh (" in proc.stderr  # as typed, not taken as markup
    yield target
    shutil.rmtree(target)
    shutil.rmtree(scripts)


def test_rollback_and_forward_say_which(two_versions: Path, user) -> None:
    back = ok(sqenv("rollback", two_versions, user=user)).stderr
    assert f"Rolled back {two_versions} to version 1 (was 2)" in back
    forward = ok(sqenv("rollback", two_versions, "--to", "2", user=user)).stderr
    assert f"Switched {two_versions} forward to version 2 (was 1)" in forward
