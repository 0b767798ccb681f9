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


def test_compiler_flags_for_target_cpus() -> None:
    from sqenv.inputs.cpu import compiler_flag

    got = {n: compiler_flag(n) for n in ("x86_64", "x86_64_v3", "zen2", "zen3", "skylake_avx512", "neoverse_v1")}
    assert got == {"x86_64": "-march=x86-64", "x86_64_v3": "-march=x86-64-v3", "zen2": "-march=znver2",
                   "zen3": "-march=znver3", "skylake_avx512": "-march=skylake-avx512",
                   "neoverse_v1": "-mcpu=neoverse-v1"}  # fmt: skip


def test_packages_uv_built_from_source() -> None:
    from sqenv.tools.progress import built_from_source

    out = ("Resolved 3 packages in 35ms\n   Building cflagsprobe==1.0\n      Built cflagsprobe==1.0\n"
           "      Built mine @ file:///src/mine\n      Built cflagsprobe==1.0\nInstalled 3 packages\n")  # fmt: skip
    assert built_from_source(out) == ["cflagsprobe", "mine"]
