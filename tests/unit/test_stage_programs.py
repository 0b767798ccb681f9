"""The node-local programs `sqenv stage` makes (slurm/stage.py), checked without Slurm or an
image: the real launcher text, filled in as staging fills it, run by dash. `sqenv-enter` is a
stand-in script that prints how it was called (the real one needs an image and FUSE; the
staged programs on the virtual cluster are tested in tests/integration/test_scale_cluster.py
and test_slurm.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sqenv.publish.launchers import render
from sqenv.slurm.stage import programs_key, staged_launcher
from support import need, ok, run, sqenv

ENTER = '#!/bin/sh\nprintf \'%s\\n\' {who} "$PATH" "$@"\n'


@pytest.fixture
def install(tmp_path: Path) -> tuple[Path, Path]:
    """A PREFIX with launcher, stand-in sqenv-enter and bin/python, and its staged copy."""
    prefix = tmp_path / "my env"
    (prefix / "bin").mkdir(parents=True)
    text = render(["v1-0123456789abcdef.sqfs"], activate=False)
    (prefix / "launcher").write_text(text)
    (prefix / "sqenv.json").write_text("{}")  # marks run mode: PREFIX/launcher PROG
    (prefix / "sqenv-enter").write_text(ENTER.format(who="prefix-enter"))
    (prefix / "bin" / "python").symlink_to("../launcher")
    at = tmp_path / "stage" / "sqenv-stage-7" / programs_key(prefix)
    (at / "bin").mkdir(parents=True)
    staged = staged_launcher(text, prefix, str(at))
    assert staged is not None
    (at / "launcher").write_text(staged)
    (at / "sqenv-enter").write_text(ENTER.format(who="staged-enter"))
    (at / "bin" / "python").symlink_to("../launcher")
    for f in (prefix / "launcher", prefix / "sqenv-enter", at / "launcher", at / "sqenv-enter"):
        f.chmod(0o755)
    old = (prefix / "launcher").stat().st_mtime - 60  # written at create time, before staging
    os.utime(prefix / "launcher", (old, old))
    return prefix, at


def launch(bindir: Path, *args: str) -> list[str]:
    """How sqenv-enter was called: who, PATH, then its arguments (one per line); BINDIR first on PATH."""
    env = {"SQENV_ENGINE": "embedded", "PATH": f"/usr/local/bin:{bindir}:/usr/bin:/bin"}
    return ok(run(["dash", "-c", 'exec "$@"', "sh", *args], env=env)).stdout.splitlines()


def without_script(call: list[str]) -> list[str]:
    """The call minus the staged script's `-L FILE` (the one thing the staged copy adds)."""
    i = call.index("-L")
    return call[:i] + call[i + 2 :]


@pytest.mark.parametrize("args", [["python", "-c", "pass"], ["launcher", "pip", "list"], ["launcher"]])
def test_staged_program_calls_the_helper_as_the_installs_own_launcher(
    install: tuple[Path, Path], args: list[str]
) -> None:
    """A program of the staged bin (staged bin on PATH) and the same program of PREFIX/bin
    (PREFIX/bin on PATH): the same program, argv[0], image, PREFIX and PATH (PREFIX/bin where
    the staged bin was), but the node-local helper (and its script named)."""
    prefix, at = install
    staged = launch(at / "bin", args[0] if args[0] != "launcher" else f"{at}/launcher", *args[1:])
    own = launch(
        prefix / "bin", f"{prefix}/bin/{args[0]}" if args[0] != "launcher" else f"{prefix}/launcher", *args[1:]
    )
    assert staged[0] == "staged-enter" and own[0] == "prefix-enter"
    assert staged[staged.index("-L") + 1] == f"{at}/launcher"
    assert without_script(staged)[1:] == own[1:]
    assert f"{prefix}/v1-0123456789abcdef.sqfs" in own and own[own.index("-p") + 1] == str(prefix)


@pytest.mark.parametrize("change", ["update", "enter-gone"])
def test_staged_program_falls_back_to_the_install(install: tuple[Path, Path], change: str) -> None:
    """After an update or rollback (a newer PREFIX/launcher) the staged copy would start an old
    version; with its helper gone it cannot start at all: the install's own launcher runs."""
    prefix, at = install
    if change == "update":
        os.utime(prefix / "launcher")
    else:
        (at / "sqenv-enter").unlink()
    for args in (["python", "-c", "pass"], [f"{at}/launcher", "python"]):
        out = launch(at / "bin", *args)
        assert out[0] == "prefix-enter" and "-L" not in out, out


def test_a_launcher_from_before_staged_programs_is_not_staged() -> None:
    text = render(["v1-a.sqfs"], activate=False).replace("sqenv_staged=\nsqenv_staged_at=\n", "")
    assert staged_launcher(text, Path("/p"), "/tmp/x") is None


def test_programs_key_is_one_per_install() -> None:
    assert programs_key(Path("/a/env")) != programs_key(Path("/b/env"))
    assert programs_key(Path("/a/env")).startswith("env-")
    assert "/" not in programs_key(Path("/a/we ird/.x y")) and not programs_key(Path("/a/.x")).startswith(".")


def test_staged_launcher_is_shellcheck_clean(tmp_path: Path) -> None:
    need("shellcheck")
    text = staged_launcher(render(["v1-a.sqfs"], activate=False), Path("/p q"), "/tmp/s t")
    assert text is not None and "sqenv_staged='/p q'\nsqenv_staged_at='/tmp/s t'\n" in text
    (tmp_path / "launcher").write_text(text)
    proc = run(["shellcheck", "-s", "sh", str(tmp_path / "launcher")])
    assert proc.returncode == 0, proc.stdout


def test_print_path_and_remove_together_is_one_clear_error(tmp_path: Path) -> None:
    proc = sqenv("stage", tmp_path / "env", "--remove", "--print-path")
    assert proc.returncode != 0 and proc.stdout == "", proc
    assert "--remove and --print-path exclude each other" in proc.stderr and "Traceback" not in proc.stderr
