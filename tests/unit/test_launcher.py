"""What publish writes for launches, checked without building anything: the launcher rendered
from its template (shellcheck-clean, read back by the one header parser) and the activate script."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqenv.publish import header
from support import need, ok, run


@pytest.mark.parametrize("activate", [False, True], ids=["plain", "with-activate"])
def test_assembled_launcher_is_shellcheck_clean(tmp_path: Path, activate: bool) -> None:
    need("shellcheck")
    from sqenv.publish.launchers import render

    launcher = tmp_path / "launcher"
    launcher.write_text(
        render(["v1-0123456789abcdef.sqfs", "v2-fedcba9876543210.sqfs"], activate=activate, options={"mpi": "host"})
    )
    proc = run(["shellcheck", "-s", "sh", str(launcher)])
    assert proc.returncode == 0, proc.stdout


def test_header_parser_reads_what_render_writes() -> None:
    from sqenv.publish.launchers import render

    text = render(["v1-a.sqfs", "v2-b.sqfs"], activate=True, options={"engine": "apptainer", "mpi": "none"})
    parsed = header.parse(text)
    assert parsed.layers == ["v1-a.sqfs", "v2-b.sqfs"]
    assert parsed.get("SQENV_DEFAULT_ENGINE") == "apptainer"
    assert parsed.get("SQENV_ACTIVATE") == "1"
    assert parsed.overridable["SQENV_IDLE"] == ("SQENV_IDLE_TIMEOUT", "60")
    assert "SQENV_LD_PREPEND" in parsed.values and "SQENV_MPI" not in parsed.values  # nothing reads the mode


def test_conda_kind_sets_conda_prefix(tmp_path: Path) -> None:
    from sqenv.publish import activation

    (tmp_path / "bin").mkdir()
    activation.write(tmp_path, tmp_path, "conda")
    script = f". '{tmp_path}/bin/activate'; echo \"$CONDA_PREFIX|${{VIRTUAL_ENV-unset}}\"; deactivate; "
    script += 'echo "[$CONDA_PREFIX]"'
    out = ok(run(["dash", "-c", script], env={"CONDA_PREFIX": ""})).stdout.split()
    assert out == [f"{tmp_path}|unset", "[]"]


@pytest.mark.parametrize(
    ("activate", "options", "starts"),
    [
        (False, {}, True),
        (False, {"engine": "embedded"}, True),
        (True, {}, False),  # conda: the activation script runs in the shell
        (False, {"engine": "apptainer"}, False),
        (False, {"only_engine": "apptainer"}, False),  # a layer on a base image, a wrapped container
        (False, {"mount_path": "/opt/tool"}, False),  # `wrap --mask`
        (False, {"cpu_level": "x86-64-v3"}, False),
        (False, {"env": {"MIOPEN_USER_DB_PATH": "/tmp/x"}}, False),  # a launch profile
    ],
    ids=["pip", "embedded", "activate", "apptainer", "only-apptainer", "mask", "cpu-level", "profile-env"],
)
def test_programs_link_to_the_helper_only_where_it_can_start_them(activate: bool, options: dict, starts: bool) -> None:
    """`bin/NAME -> ../sqenv-enter` only where the helper's launch mode (launch/launch.h) may do all
    the launcher does; the rest link to the shell launcher, sparing the helper's exec."""
    from sqenv.config import load_config
    from sqenv.publish.launchers import header_values, helper_starts

    config = load_config()
    values = header_values(["v1-0123456789abcdef.sqfs"], activate=activate, options=options, config=config)
    assert helper_starts(values, options, config) is starts
