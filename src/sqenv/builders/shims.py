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


def install(site_packages: Path) -> None:
    source = resources.files("sqenv.builders").joinpath("site/_sqenv_site.py")
    with resources.as_file(source) as path:
        shutil.copyfile(path, site_packages / "_sqenv_site.py")
    (site_packages / "_sqenv.pth").write_text(PTH)
