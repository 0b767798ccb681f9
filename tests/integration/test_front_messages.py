"""What sqenv says: rich markup in names shown as typed, `export` without `--format`, and
`rollback` saying back or forward (the "did you mean" cases are in unit/test_cli_messages.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import ok, sqenv


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
