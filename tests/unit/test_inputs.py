"""Inputs read before any work: conda environment files (and what a conda tree is marked with)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_environment_file_parsing(tmp_path: Path) -> None:
    from sqenv.errors import InputError
    from sqenv.inputs.conda import read_environment_file

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "req.txt").write_text("six\n")
    yml = tmp_path / "env.yml"
    yml.write_text("name: x\nprefix: /ignored\nchannels: [conda-forge]\ndependencies:\n  - python=3.12\n"
                   "  - numpy >=1.26,<2\n  - pip:\n    - -r sub/req.txt\n    - ./local-pkg\n    - requests>=2\n"
                   "variables: {A: 1, B: true}\n")  # fmt: skip
    env = read_environment_file(yml)
    assert env.specs == ["python=3.12", "numpy >=1.26,<2"]
    assert env.pip == [f"-r {tmp_path}/sub/req.txt", f"{tmp_path}/local-pkg", "requests>=2"]
    assert env.variables == [("A", "1"), ("B", "true")]
    yml.write_text("dependencies:\n  - pip:\n    - -r missing.txt\n")
    with pytest.raises(InputError, match=r"missing\.txt"):
        read_environment_file(yml)
    yml.write_text("dependencies: [python]\nvariables: {1BAD: x}\n")
    with pytest.raises(InputError, match="not a valid environment variable name"):
        read_environment_file(yml)


def test_externally_managed_marker(tmp_path: Path) -> None:
    """No conda Python is reachable here: the marker's placement, checked on a tree shaped like one."""
    from sqenv.builders.conda.activation import mark_externally_managed

    stdlib = tmp_path / "lib" / "python3.12"
    stdlib.mkdir(parents=True)
    (stdlib / "os.py").write_text("")
    mark_externally_managed(tmp_path)
    text = (stdlib / "EXTERNALLY-MANAGED").read_text()
    assert text.startswith("[externally-managed]\nError=") and "sqenv update" in text
