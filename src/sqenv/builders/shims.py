"""Small files added to pip environments so they behave well as read-only images.

See `site/_sqenv_site.py` for what they do and why.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

PTH = (
    "import sys; ('venv' in sys.orig_argv or 'install' in sys.orig_argv or 'uninstall' in sys.orig_argv) "
    "and __import__('_sqenv_site')\n"
)

# Module files of the image are read without asking whether they are a terminal. Python before
# 3.14 opens every `.py` and `.pyc` it imports with `io.open_code`, a buffered `open()` that calls
# isatty() (an ioctl) to choose line buffering; on the image's FUSE mount each such ioctl is a round
# trip to the image server (the kernel forwards every one: replying ENOSYS does not stop it, see
# fs/fuse/ioctl.c), 476 of them for `import numpy, scipy.linalg, pandas`, and on a busy node each
# waits for the server to be scheduled. Under the environment's prefix (the image) FileLoader then
# reads with an unbuffered FileIO, which gives the same bytes (what importlib's other loaders do);
# any other path goes the stock way (and an embedder's open_code hook with it). The `.pth` files
# themselves are read by site before (2-4 ioctls per start, whatever their content).
FAST_READ = """\
import _io
stock = bootstrap.FileLoader.get_data
here = sys.prefix.rstrip("/") + "/"
def get_data(self, path):
    if not str(path).startswith(here):
        return stock(self, path)
    with _io.FileIO(path, "r") as file:
        return file.read()
get_data.__doc__ = stock.__doc__
get_data.sqenv = True
bootstrap.FileLoader.get_data = get_data
"""
# ~0.12 ms per start (measured); site may read the .pth twice (Debian's site paths): the second
# time only the check runs
PTH_READ = (
    "import sys, _frozen_importlib_external as b; sys.version_info < (3, 14) and not hasattr(b.FileLoader.get_data, "
    f"'sqenv') and exec({FAST_READ!r}, {{'sys': sys, 'bootstrap': b}})\n"
)


def install(site_packages: Path) -> None:
    source = resources.files("sqenv.builders").joinpath("site/_sqenv_site.py")
    with resources.as_file(source) as path:
        shutil.copyfile(path, site_packages / "_sqenv_site.py")
    (site_packages / "_sqenv.pth").write_text(PTH + PTH_READ)
