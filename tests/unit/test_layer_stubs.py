"""A pip layer on a base image: the metadata-only stand-ins of the image's packages (stubs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sqenv.builders.base_image import ContainerRun, find_python, named_packages, remove_stubs, write_stubs
from sqenv.errors import BuildError, InputError


def test_stubs_stay_inside_site_packages_and_skip_the_venv_own(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "pip-26.0.dist-info").mkdir()  # the venv's own pip (from --seed)
    packages = [("numpy", "1.24.2"), ("pip", "23.0"), ("../../evil", "1"), ("/abs/x", "1"), ("ok", "1/../../2"),
                ("ok", "1..2"), ("Torch", "2.5.1+rocm6.2")]  # fmt: skip
    stubs = write_stubs(site, packages)
    assert sorted(stubs) == ["numpy", "torch"]
    assert sorted(p.name for p in site.iterdir()) == ["Torch-2.5.1+rocm6.2.dist-info", "numpy-1.24.2.dist-info",
                                                      "pip-26.0.dist-info"]  # fmt: skip
    assert not (tmp_path / "evil-1.dist-info").exists()
    meta = (site / "numpy-1.24.2.dist-info" / "METADATA").read_text()
    assert "Name: numpy\nVersion: 1.24.2\n" in meta


def test_a_replaced_base_package_is_an_error_unless_named(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    stubs = write_stubs(site, [("numpy", "1.24.2"), ("six", "1.16.0")])
    shutil.rmtree(stubs["numpy"])  # what uv does when it installs another numpy over the stub
    with pytest.raises(BuildError, match=r"other versions of what the base image has: numpy 1\.24\.2"):
        remove_stubs(site, stubs, set(), {"numpy": "1.24.2", "six": "1.16.0"})
    assert not any(site.iterdir())  # the kept stub (six) is gone too
    stubs = write_stubs(site, [("numpy", "1.24.2")])
    shutil.rmtree(stubs["numpy"])
    remove_stubs(site, stubs, {"numpy"}, {"numpy": "1.24.2"})  # named: on purpose


def test_named_packages_reads_arguments_and_requirement_files(tmp_path: Path) -> None:
    req = tmp_path / "req.txt"
    req.write_text("# comment\n--index-url https://x\nNumPy>=1.26  # why\ntorch[rocm]==2.5 ; python_version>'3'\n\n")
    assert named_packages(["six", "not a requirement!"], [req, tmp_path / "missing.txt"]) == {"six", "numpy", "torch"}


@pytest.mark.parametrize(
    ("stderr", "error", "says"),
    [("FATAL:   container creation failed: mount source /x/uv does not exist", BuildError,
      r"apptainer could not start `v\.sif`"),
     ("/bin/sh: 1: exec: python3: not found", InputError, r"`v\.sif` has no working Python")],
)  # fmt: skip
def test_a_container_that_does_not_start_is_not_called_pythonless(tmp_path: Path, stderr: str, error: type,
                                                                   says: str) -> None:  # fmt: skip
    """Apptainer's own failure (a bind it cannot see) is not the image's missing Python."""
    exe = tmp_path / "apptainer"
    exe.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit 255\n")
    exe.chmod(0o755)
    with pytest.raises(error, match=says) as info:
        find_python(ContainerRun(exe=str(exe), image=tmp_path / "v.sif"), None)
    assert stderr in (info.value.details or "")
