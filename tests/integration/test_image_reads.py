"""Python reads the image's module files without an isatty() ioctl each (a FUSE round trip each).

The real launcher, image server and namespace helper, traced with strace as the test user.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from support import User, need, ok, run

pytestmark = pytest.mark.slow

_OPEN = re.compile(r'^\d+\s+openat\([^"]*"([^"]+)".*\)\s+=\s+(\d+)')
_TTY = re.compile(r"^\d+\s+ioctl\((\d+), TCGETS")
_CLOSE = re.compile(r"^\d+\s+close\((\d+)\)")


def tty_probes(trace: str, under: str) -> tuple[int, int]:
    """(isatty ioctls on module files (.py, .pyc) opened under `under`, such files opened) in an
    strace log. The `.pth` files are read by site before sqenv's line in one of them runs."""
    fds: dict[str, str] = {}
    probes = opened = 0
    for line in trace.splitlines():
        if (m := _OPEN.match(line)) and m.group(1).endswith((".py", ".pyc")):
            fds[m.group(2)] = m.group(1)
            opened += m.group(1).startswith(under)
        elif m := _TTY.match(line):
            probes += fds.get(m.group(1), "").startswith(under)
        elif m := _CLOSE.match(line):
            fds.pop(m.group(1), None)
    return probes, opened


def test_imports_from_the_image_make_no_isatty_round_trips(small_env: Path, user: User) -> None:
    need("strace")
    python = small_env / "bin" / "python"
    ok(run([python, "-c", "pass"], user=user))  # mounts the image: setuid fusermount3 cannot run under strace
    with tempfile.NamedTemporaryFile("r", suffix=".strace", dir="/tmp") as out:
        Path(out.name).chmod(0o666)
        argv = ["strace", "-f", "-qq", "-e", "trace=openat,ioctl,close", "-o", out.name,
                python, "-c", "import six, json; print(six.PY3)"]  # fmt: skip
        assert ok(run(argv, user=user)).stdout == "True\n"
        probes, opened = tty_probes(out.read(), f"{small_env}/lib/")
    assert opened >= 2  # six's and _distutils_hack's byte code
    assert probes == 0
