"""A pip create hard-links package files from uv's cache (as a plain `uv pip install` does) and
still builds the same image as one that copies them, without ever writing into the user's cache.

Real uv, real PyPI wheels, the real namespace helper; the test user's own uv cache and build
directory share a file system here (/home, /tmp), so the linked install is what a create does.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from support import BASE_PYTHON, User, ok, run, sqenv

pytestmark = pytest.mark.slow

PINS = ("six==1.16.0", "cowsay==6.1")

# the code object of six's byte code in the image names the file at the mount path, as uv writes it
CO_FILENAME = "import marshal, six; print(marshal.loads(open(six.__cached__, 'rb').read()[16:]).co_filename)"

CLEAN_SIX = "import subprocess, uv; subprocess.run([uv.find_uv_bin(), 'cache', 'clean', 'six'])"


def cached_six(user: User) -> list[Path]:
    """The copies of six.py in the test user's uv cache (unpacked wheels)."""
    return sorted((user.home / ".cache" / "uv").glob("archive-v*/*/six.py"))


def test_linked_and_copied_creates_give_the_same_image(user: User, place: Path) -> None:
    linked, copied = place / "linked", place / "copied"
    ok(sqenv("create", linked, *PINS, "--python", BASE_PYTHON, "-q", user=user))
    noop = place / "noop.sh"
    noop.write_text("true\n")  # a post-install script: files are copied, so it may rewrite them
    ok(sqenv("create", copied, *PINS, "--python", BASE_PYTHON, "--post-install", noop, "-q", user=user))
    a, b = next(linked.glob("v1-*.sqfs")), next(copied.glob("v1-*.sqfs"))
    assert a.name == b.name
    assert a.read_bytes() == b.read_bytes()
    out = ok(run([linked / "bin" / "python", "-c", CO_FILENAME], user=user)).stdout
    assert out == "/mnt/sqenv/lib/python3.11/site-packages/six.py\n"
    valid = ok(run([linked / "bin" / "python", "-v", "-c", "import six"], user=user)).stderr
    assert "six.cpython-311.pyc matches" in valid
    assert ok(run([linked / "bin" / "cowsay", "-t", "moo"], user=user)).stdout.count("moo") == 1


def test_a_post_install_script_never_writes_into_the_users_cache(user: User, place: Path) -> None:
    ok(sqenv("create", place / "first", *PINS, "--python", BASE_PYTHON, "-q", user=user))  # fills the cache
    before = {p: p.read_bytes() for p in cached_six(user)}
    assert before, "six is in the test user's uv cache after a create"
    script = place / "append.sh"
    script.write_text('echo "# changed in place" >> "$SQENV_BUILD_PREFIX/lib/python3.11/site-packages/six.py"\n')
    prefix = place / "patched"
    ok(sqenv("create", prefix, *PINS, "--python", BASE_PYTHON, "--post-install", script, "-q", user=user))
    after = {p: p.read_bytes() for p in cached_six(user)}
    if after != before:  # repair the shared test user's cache before failing
        run([sys.executable, "-c", CLEAN_SIX], user=user)
    assert after == before
    tail = ok(run([prefix / "bin" / "python", "-c", "import six; print(open(six.__file__).read()[-19:])"], user=user))
    assert tail.stdout == "# changed in place\n\n"


def test_a_second_create_takes_the_byte_code_from_sqenvs_cache(user: User, place: Path) -> None:
    """The same packages again: every `.pyc` comes from sqenv's cache (none compiled), and the image
    is the one a cold build makes (which is the one uv's own compiling gives, above)."""
    env = {"SQENV_CACHE_DIR": str(place / "sqenv-cache")}  # cold at first, whatever ran before
    first, second = place / "first", place / "second"
    cold = ok(sqenv("create", first, *PINS, "--python", BASE_PYTHON, "-v", user=user, env=env)).stderr
    warm = ok(sqenv("create", second, *PINS, "--python", BASE_PYTHON, "-v", user=user, env=env)).stderr
    assert "from sqenv's cache" not in cold
    files = re.search(r"byte code \(([\d,]+) files", cold)
    assert files and int(files[1]) >= 5  # six.py and cowsay's modules (not its tests)
    assert f"({files[1]} files, {files[1]} from sqenv's cache;" in warm
    a, b = next(first.glob("v1-*.sqfs")), next(second.glob("v1-*.sqfs"))
    assert a.read_bytes() == b.read_bytes()
    valid = ok(run([second / "bin" / "python", "-v", "-c", "import six"], user=user)).stderr
    assert "six.cpython-311.pyc matches" in valid


# what byte code the image holds for cowsay's own package and for its test suite (`cowsay/tests`)
PYCS = (
    "import os, cowsay; here = os.path.dirname(cowsay.__file__)\n"
    "for d in ('__pycache__', 'tests/__pycache__'):\n"
    "    p = os.path.join(here, d); print(d, sorted(os.listdir(p)) if os.path.isdir(p) else [])\n"
    "from cowsay.tests import solutions; print('imports', bool(solutions.CHARS_SOLUTIONS))"
)


def test_test_suites_are_not_byte_compiled_unless_asked(user: User, place: Path) -> None:
    """Packages' test suites (half of numpy's, scipy's and pandas' byte code) get no pycs by default:
    their modules still import (compiled in memory); `--compile-tests` compiles them like uv."""
    default, full = place / "default", place / "full"
    out = ok(sqenv("create", default, *PINS, "--python", BASE_PYTHON, "-v", user=user)).stderr
    assert re.search(r"; \d+ of test suites left out; ", out), out  # cowsay's 4, pip's
    ok(sqenv("create", full, *PINS, "--python", BASE_PYTHON, "--compile-tests", "-q", user=user))
    left, compiled = (ok(run([prefix / "bin" / "python", "-c", PYCS], user=user)).stdout.splitlines()
                      for prefix in (default, full))  # fmt: skip
    assert left[0] == compiled[0] and "__init__.cpython-311.pyc" in left[0]  # the package itself: compiled
    assert left[1] == "tests/__pycache__ []"
    assert compiled[1].startswith("tests/__pycache__ [") and "test_api.cpython-311.pyc" in compiled[1]
    assert left[2] == compiled[2] == "imports True"
    # what `uv venv --seed` put there is compiled too: setuptools' .pth imports this at every start
    start = ok(run([default / "bin" / "python", "-v", "-c", "pass"], user=user)).stderr
    assert "_distutils_hack/__pycache__/__init__.cpython-311.pyc matches" in start, start
