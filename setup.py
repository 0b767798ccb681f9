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
TARGET = SOURCE.with_name("sqenv-enter")
STAMP = SOURCE.with_name("sqenv-enter.sha256")  # the source it was built from


def compile_helper() -> None:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    if TARGET.exists() and STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise SystemExit("building sqenv needs a C compiler for its `sqenv-enter` helper (Debian: gcc libc6-dev)")
    tmp = TARGET.with_name(".sqenv-enter.tmp")
    argv = [compiler, "-O2", "-Wall", "-static", "-o", str(tmp), str(SOURCE)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            "cannot link the `sqenv-enter` helper statically (it must run on compute nodes with an older glibc);"
            f" install the static C library (Debian: libc6-dev, RHEL: glibc-static):\n{proc.stderr}"
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
