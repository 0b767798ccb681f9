"""Build step: compile the `sqenv-enter` namespace helper into the package.

The helper runs on compute nodes, whose glibc may be older than the build
host's, so it is linked statically; if that is not possible here the build
fails (it never degrades silently to a dynamic binary). Users never need a
compiler: `sqenv create` copies the binary shipped in the package.
Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "src" / "sqenv" / "launch" / "enter.c"
SOURCES = [SOURCE, SOURCE.with_name("serve.c")]
TARGET = SOURCE.with_name("sqenv-enter")
# the image server (serve.c) is libsquashfuse + libfuse3 with every decompressor squashfuse knows
LIBS = ["-lsquashfuse_ll", "-lsquashfuse", "-lfuse3", "-lzstd", "-llz4", "-llzo2", "-llzma", "-lz", "-lpthread", "-ldl"]
STAMP = SOURCE.with_name("sqenv-enter.sha256")  # the source it was built from


def source_digest() -> str:
    """What the helper is built from (the same function as sqenv.launch.helper's check)."""
    h = hashlib.sha256()
    for path in [*SOURCES, SOURCE.with_name("cpu.h"), SOURCE.with_name("launch.h")]:
        h.update(path.read_bytes())
    return h.hexdigest()


def compile_helper() -> None:
    digest = source_digest()
    if TARGET.exists() and STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise SystemExit("building sqenv needs a C compiler for its `sqenv-enter` helper (Debian: gcc libc6-dev)")
    tmp = TARGET.with_name(".sqenv-enter.tmp")
    argv = [compiler, "-O2", "-Wall", "-static", "-o", str(tmp), *map(str, SOURCES), *LIBS]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            "cannot link the `sqenv-enter` helper statically (it must run on compute nodes with an older glibc);"
            " install the static libraries (Debian: libc6-dev libfuse3-dev libsquashfuse-dev libzstd-dev liblz4-dev"
            f" liblzo2-dev liblzma-dev zlib1g-dev):\n{proc.stderr[-3000:]}"
        )
    tmp.chmod(0o755)
    os.replace(tmp, TARGET)
    STAMP.write_text(digest + "\n")


class BuildPy(build_py):
    """build_py that compiles the helper first (also for editable installs)."""

    def run(self) -> None:
        compile_helper()
        super().run()


setup(cmdclass={"build_py": BuildPy})
