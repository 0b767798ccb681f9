"""`--target-cpu` for pip environments (issue 16 item 3): recorded, and sdists uv builds warned about or
compiled for the target (`--optimize-sdists`). Real uv and a real C compiler, as the test user; the sdist
is made here and found through `--find-links` + `--no-index` (no network).

The sdist's own build backend compiles `probe.c`, which fails unless the compiler was told to use
SSE4.2 (`__SSE4_2__`: x86-64-v2, which GCC's default x86-64 leaves out), and writes the CFLAGS it saw
and whether that compile worked into the installed package. x86_64_v2 is the target so the launches
(which check the target's level) work on any machine of this decade.
"""

from __future__ import annotations

import io
import json
import platform
import tarfile
import tempfile
from pathlib import Path

import pytest

from support import BASE_PYTHON, User, need, ok, sqenv

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 target names")

_BACKEND = '''\
"""Compiles probe.c with $CFLAGS, as extension builds do; records what it saw in the wheel."""
import base64, hashlib, os, shlex, subprocess, zipfile

NAME, VERSION = "cflagsprobe", "1.0"


def _record(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\\n"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    cflags = os.environ.get("CFLAGS", "")
    proc = subprocess.run(["cc", *shlex.split(cflags), "-c", "probe.c", "-o", "probe.o"])
    module = f"CFLAGS = {cflags!r}\\nCXXFLAGS = {os.environ.get('CXXFLAGS', '')!r}\\nSSE42 = {proc.returncode == 0}\\n"
    dist = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{NAME}/__init__.py": module.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: sqenv-tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = "".join(_record(n, d) for n, d in files.items()) + f"{dist}/RECORD,,\\n"
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{dist}/RECORD", record)
    return name
'''
_FILES = {
    "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n\n'
    '[project]\nname = "cflagsprobe"\nversion = "1.0"\n',
    "backend.py": _BACKEND,
    "probe.c": "#ifndef __SSE4_2__\n#error built without -march for x86-64-v2\n#endif\nint probe(void) { return 1; }\n",
    "PKG-INFO": "Metadata-Version: 2.1\nName: cflagsprobe\nVersion: 1.0\n",
}


@pytest.fixture
def links(shared_dir: Path) -> Path:
    """A --find-links directory holding only the sdist (root's, readable by the test user)."""
    d = Path(tempfile.mkdtemp(dir=shared_dir))
    with tarfile.open(d / "cflagsprobe-1.0.tar.gz", "w:gz") as tf:
        for name, text in _FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(f"cflagsprobe-1.0/{name}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    d.chmod(0o755)
    (d / "cflagsprobe-1.0.tar.gz").chmod(0o644)
    return d


def _probe(prefix: Path, user: User) -> dict:
    code = "import cflagsprobe as c, json; print(json.dumps([c.CFLAGS, c.CXXFLAGS, c.SSE42]))"
    out = ok(sqenv("run", prefix, "--", "python", "-c", code, user=user)).stdout
    cflags, cxxflags, sse42 = json.loads(out.strip().splitlines()[-1])
    return {"CFLAGS": cflags, "CXXFLAGS": cxxflags, "SSE42": sse42}


def test_sdists_built_for_the_target_only_when_asked(user: User, place: Path, links: Path) -> None:
    need("mksquashfs")
    need("cc")
    # a uv cache of this test's own: the generic build lands in it, and must not be reused for the target
    env = {"UV_CACHE_DIR": str(place / "uv-cache"), "CFLAGS": "-O2"}
    index = ("--find-links", links, "--no-index", "--python", BASE_PYTHON)
    generic = place / "generic"
    proc = ok(sqenv("create", generic, "cflagsprobe", "--target-cpu", "x86_64_v2", *index, user=user, env=env))
    warnings = [line for line in proc.stderr.splitlines() if "built from source" in line]
    assert len(warnings) == 1, proc.stderr
    assert "cflagsprobe" in warnings[0] and "-march=x86-64-v2" in warnings[0] and "--optimize-sdists" in warnings[0]
    assert _probe(generic, user) == {"CFLAGS": "-O2", "CXXFLAGS": "", "SSE42": False}
    info = ok(sqenv("info", generic, user=user)).stdout
    assert "x86_64_v2" in info, info

    fast = place / "fast"
    proc = ok(sqenv("create", fast, "cflagsprobe", "--target-cpu", "x86_64_v2", "--optimize-sdists", *index,
                    user=user, env=env))  # fmt: skip
    assert "warning: built from source" not in proc.stderr, proc.stderr
    assert _probe(fast, user) == {"CFLAGS": "-O2 -march=x86-64-v2", "CXXFLAGS": "-march=x86-64-v2", "SSE42": True}
    shown = json.loads(ok(sqenv("info", fast, "--json", user=user)).stdout)
    # code compiled with -march needs the target's instructions: launches check them
    assert (shown["target_cpu"], shown["cpu_check"]) == ("x86_64_v2", "x86-64-v2"), shown
    history = ok(sqenv("history", fast, "--json", user=user)).stdout
    assert '"optimize_sdists": true' in history and '"target_cpu": "x86_64_v2"' in history, history
    # the image's lock names the target too
    lock = ok(sqenv("run", fast, "--", "cat", "/mnt/sqenv/.sqenv/lock.json", user=user)).stdout
    assert json.loads(lock)["target_cpu"] == "x86_64_v2"


def test_optimize_sdists_needs_a_target(user: User, place: Path, links: Path) -> None:
    proc = sqenv("create", place / "e", "cflagsprobe", "--optimize-sdists", "--find-links", links, "--no-index",
                 "--python", BASE_PYTHON, user=user, env={"SQENV_CONFIG": "/dev/null"})  # fmt: skip
    assert proc.returncode == 2 and "--target-cpu" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (place / "e").exists()
