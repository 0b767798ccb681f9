"""Build the `sqenv-enter` helper from its C source, once per source version.

The binary is cached under the user's cache directory and copied into every
install, so an install keeps working when sqenv itself is gone or upgraded.
A static build is preferred: it runs on compute nodes whose libc differs from
the login node's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqenv.errors import ToolMissing
from sqenv.launch import MOUNT_PATH, template


def cache_dir() -> Path:
    """sqenv's cache: config `cache_dir` (or SQENV_CACHE_DIR), else ~/.cache/sqenv."""
    from sqenv.config import load_config

    configured = load_config().get("cache_dir")
    base = configured or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sqenv")
    return Path(os.path.expanduser(base))


def enter_binary() -> Path:
    """Path of a compiled `sqenv-enter` matching this sqenv's source."""
    source = template("enter.c")
    digest = hashlib.sha256((source + MOUNT_PATH).encode()).hexdigest()[:12]
    target = cache_dir() / "bin" / f"sqenv-enter-{digest}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise ToolMissing(
            "no C compiler found to build the `sqenv-enter` helper",
            "install gcc (Debian: `apt-get install gcc libc6-dev`), or load a compiler module",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp, "enter.c")
        src.write_text(source)
        out = Path(tmp, "sqenv-enter")
        base = [compiler, "-O2", "-Wall", f'-DSQENV_MOUNT_PATH="{MOUNT_PATH}"', "-o", str(out), str(src)]
        for extra in (["-static"], []):
            proc = subprocess.run(base + extra, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            raise ToolMissing(
                f"cannot compile the `sqenv-enter` helper: {proc.stderr.strip()[-500:]}",
                "install a working C compiler and libc headers",
            )
        out.chmod(0o755)
        os.replace(out, target)
    return target
