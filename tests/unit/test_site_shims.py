"""The `.pth` line that reads the image's module files without an isatty() round trip each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqenv.builders import shims

# importlib's `_io` swapped for one whose open_code refuses: what still imports did not use it
PROBE = """
import sys, types, _io, _frozen_importlib_external as bootstrap
exec(FAST_READ, {"sys": types.SimpleNamespace(prefix=INSIDE), "bootstrap": bootstrap})
class Refusing:
    def __getattr__(self, name):
        return getattr(_io, name)
    def open_code(self, path):
        raise OSError("open_code " + path)
bootstrap._io = Refusing()
sys.path[:0] = [INSIDE + "/site", OUTSIDE]
import inside_mod
print(inside_mod.TEXT)
try:
    import outside_mod
except OSError as exc:
    print(exc)
"""


def test_modules_under_the_prefix_skip_open_code_and_others_do_not(tmp_path: Path) -> None:
    inside, outside = tmp_path / "env", tmp_path / "elsewhere"
    (inside / "site").mkdir(parents=True)
    outside.mkdir()
    (inside / "site" / "inside_mod.py").write_text("TEXT = 'héllo'\n", encoding="utf-8")
    (outside / "outside_mod.py").write_text("TEXT = 'out'\n")
    code = f"FAST_READ = {shims.FAST_READ!r}\nINSIDE = {str(inside)!r}\nOUTSIDE = {str(outside)!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-B", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == f"héllo\nopen_code {outside}/outside_mod.py\n"


def test_the_pth_line_patches_once_however_often_site_runs_it() -> None:
    # site.py executes a .pth line that starts with "import" with exec(line); Debian's may read it twice
    assert shims.PTH_READ.startswith("import sys,") and shims.PTH_READ.count("\n") == 1
    code = (
        "import _frozen_importlib_external as b; stock = b.FileLoader.get_data\n"
        f"exec({shims.PTH_READ!r}); exec({shims.PTH_READ!r})\n"
        "patched = b.FileLoader.get_data\n"
        "print(patched is not stock, patched.__globals__['stock'] is stock, patched.__doc__ == stock.__doc__)"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "True True True\n"
