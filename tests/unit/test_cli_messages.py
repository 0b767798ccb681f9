"""What the command line says before any work: "did you mean" for commands, options and choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import ok, sqenv


@pytest.mark.parametrize(
    ("argv", "error", "hint"),
    [
        (["crate", "/x"], "error: `crate` is not a sqenv command", "did you mean `sqenv create`?"),
        (["create", "/x", "six", "--pyton", "p"], "`sqenv create` has no option `--pyton`", "did you mean `--python`?"),
        (["info", "/x", "--jsn"], "`sqenv info` has no option `--jsn`", "did you mean `--json`?"),
        (["export", "/x", "--format", "yaml"], "`yaml` is not one of explicit, yml, requirements", "`yml`?"),
    ],
    ids=["command", "option", "option-of-info", "choice"],
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


def test_compile_tests_is_refused_for_conda(tmp_path: Path) -> None:
    """Conda packages bring their own byte code: the flag would do nothing there, so it says so."""
    spec = tmp_path / "environment.yml"
    spec.write_text("dependencies: [python=3.11]\n")
    proc = sqenv("create", tmp_path / "x", "-f", spec, "--compile-tests")
    assert proc.returncode == 2 and "`--compile-tests` is for pip environments" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x").exists()
