"""`PREFIX/pyvenv.cfg` for editors (publish/venvcfg.py): which installs get one, that it is the
image's own file (but for uv's line, which would make VS Code manage it with uv), and that an
install holding it is still an sqenv install to `--force`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqenv.publish import venvcfg
from sqenv.publish.launchers import render
from sqenv.publish.publisher import foreign_entries

CFG = "home = /usr/bin\nimplementation = CPython\nversion_info = 3.11.2\ninclude-system-site-packages = false\n"


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    staging, out = tmp_path / "root", tmp_path / "out"
    staging.mkdir()
    out.mkdir()
    return staging, out


def test_a_pip_install_gets_the_images_pyvenv_cfg_without_uvs_line(tmp_path: Path) -> None:
    staging, out = _trees(tmp_path)
    (staging / "pyvenv.cfg").write_text(CFG.replace("implementation", "uv = 0.13.9\nimplementation"))
    old = os.umask(0o077)
    try:
        assert venvcfg.write(staging, out, "pip") is True
    finally:
        os.umask(old)
    assert (out / "pyvenv.cfg").read_text() == CFG
    assert (out / "pyvenv.cfg").stat().st_mode & 0o777 == 0o600  # the umask's mode, as every file sqenv writes
    assert sorted(p.name for p in out.iterdir()) == ["pyvenv.cfg"]  # no temporary file left


def test_conda_and_wrapped_installs_and_odd_files_get_none(tmp_path: Path) -> None:
    staging, out = _trees(tmp_path)
    (staging / "pyvenv.cfg").write_text(CFG)
    assert not venvcfg.write(staging, out, "conda") and not venvcfg.write(staging, out, "wrap")
    (staging / "pyvenv.cfg").unlink()
    assert not venvcfg.write(staging, out, "pip")  # no venv in the image: nothing to copy
    (staging / "pyvenv.cfg").symlink_to("/etc/passwd")
    assert not venvcfg.write(staging, out, "pip")  # a link a post-install script left is not followed
    assert list(out.iterdir()) == []


def test_an_install_with_pyvenv_cfg_is_still_an_sqenv_install(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "launcher").write_text(render(["v1-0123456789abcdef.sqfs"], activate=False, options={}))
    (prefix / "sqenv.json").write_text(json.dumps({"format": 1, "versions": []}))
    (prefix / "v1-0123456789abcdef.sqfs").write_bytes(b"")
    (prefix / "bin" / "python").symlink_to("../launcher")
    (prefix / "pyvenv.cfg").write_text(CFG)
    assert foreign_entries(prefix) == []  # `--force` may replace it
    (prefix / "notes.txt").write_text("mine")
    assert foreign_entries(prefix) == ["notes.txt"]
