"""`PREFIX/pyvenv.cfg` on the host, so that editors see a pip install as the venv it is.

VS Code's Python extension (its venv locators and the native finder), PyCharm and other tools
decide that an interpreter `DIR/bin/python` belongs to a virtual environment by finding
`DIR/pyvenv.cfg` (PEP 405) on disk, and read its Python version from the `version_info` line
without running it; opening a folder that holds such a directory lists it as a venv. Inside the
namespace the image covers PREFIX, so Python reads the image's own `pyvenv.cfg` there; on the
host PREFIX holds only launchers, images and metadata, and the install would be an unknown
interpreter. A copy of the image's file beside `bin/` fixes that. Python never reads the copy
(inside, the image hides it), so it cannot change what runs.

Only pip installs (a venv made at the image path) get one: a conda environment or a wrapped
tree is not a venv, and a `pyvenv.cfg` would make editors treat it as one.

The copy leaves out the `uv = VERSION` line uv writes: VS Code's native finder tags a venv with it
as made by uv, and the Python Environments extension then always lists and installs its packages
with `uv pip --python PREFIX/bin/python`, which reads and writes `PREFIX/lib` on the host instead
of the image (an empty list; installs the environment never sees). Without it, the user's
`python-envs.alwaysUseUv: false` makes the extension use `python -m pip`, which works.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqenv.publish.modes import adopt

NAME = "pyvenv.cfg"
_MAX_SIZE = 64 << 10  # a pyvenv.cfg is a few lines; anything bigger is not one


def write(staging: Path, install_dir: Path, kind: str) -> bool:
    """Copy the environment's `pyvenv.cfg` (at the root of `staging`, the image's tree) into
    `install_dir`, atomically and without its `uv` line; True if one was written."""
    if kind != "pip":
        return False
    source = staging / NAME
    try:
        st = os.lstat(source)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_SIZE:
        return False  # a link or something else a post-install script left: not copied
    lines = source.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if line.partition(b"=")[0].strip().lower() != b"uv"]
    tmp = install_dir / f".{NAME}.new{os.getpid()}"
    tmp.write_bytes(b"".join(kept))
    adopt(install_dir, tmp)
    os.replace(tmp, install_dir / NAME)
    return True


GUARD = "lib"


def guard_lib(install_dir: Path) -> None:
    """An empty, read-only `PREFIX/lib` on the host. Tools that take the interpreter's word for
    where its packages go (`uv pip install --python PREFIX/bin/python`, an editor's package
    panel) would otherwise create `PREFIX/lib/python3.X/site-packages` on the host, write
    packages there the environment never sees (inside, the image covers PREFIX) and succeed; now
    they fail with "Permission denied". Kept in the install, removed with it."""
    path = install_dir / GUARD
    path.mkdir(mode=0o555)
    path.chmod(0o555)
