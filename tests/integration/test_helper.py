"""The `sqenv-enter` helper ships with the package: static, and no compiler needed by users."""

from __future__ import annotations

import filecmp
import os
import re
from pathlib import Path

import pytest

from sqenv.launch.helper import enter_binary, is_static
from support import BASE_PYTHON, User, need, ok, run, sqenv

pytestmark = pytest.mark.slow

COMPILERS = re.compile(r"^(cc|c89|c99|gcc.*|g\+\+.*|.*-gcc(-[\d.]+)?|clang.*|tcc|cpp.*)$")


def test_helper_is_static() -> None:
    assert is_static(enter_binary())


def test_user_without_a_compiler_creates_and_runs(user: User) -> None:
    need("mksquashfs")
    home = Path(f"/var/tmp/sqenv-nocc-{os.getpid()}")
    tools = home / "bin"
    tools.mkdir(parents=True)
    for source in (Path("/usr/bin"), Path("/bin"), Path("/usr/sbin")):
        for entry in source.iterdir():
            if not COMPILERS.match(entry.name) and not (tools / entry.name).exists():
                (tools / entry.name).symlink_to(entry)
    home.chmod(0o755)
    os.chown(home, user.uid, user.gid)
    prefix = home / "env"
    try:
        env = {"PATH": str(tools), "CC": ""}
        assert run(["sh", "-c", "command -v gcc cc || echo none"], user=user, env=env).stdout.strip() == "none"
        ok(sqenv("create", prefix, "six", "--python", BASE_PYTHON, "-q", user=user, env=env))
        assert filecmp.cmp(prefix / "sqenv-enter", enter_binary(), shallow=False)
        out = ok(run([str(prefix / "bin" / "python"), "-c", "import six; print(six.__name__)"], user=user, env=env))
        assert out.stdout.strip() == "six"
    finally:
        run(["rm", "-rf", str(home)])
