"""`sqenv doctor`: can this node build and run environments? Each failure with its fix."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from sqenv.errors import SqenvError
from sqenv.ui import UI


@dataclass(frozen=True)
class Check:
    name: str
    needed_for: str
    test: Callable[[], str | None]  # None when fine, else what is wrong
    fix: str


def _tool(name: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(name) else f"`{name}` not found on PATH"


def _fuse() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (FUSE is not available on this node)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by you"
    return None


def _userns() -> str | None:
    try:
        with open("/proc/sys/user/max_user_namespaces") as fh:
            if int(fh.read()) == 0:
                return "user namespaces are disabled (user.max_user_namespaces = 0)"
    except OSError:
        pass
    proc = subprocess.run(["unshare", "--user", "--mount", "true"], capture_output=True, text=True)
    if proc.returncode != 0:
        return "cannot create a user namespace: " + (proc.stderr.strip() or f"exit {proc.returncode}")
    return None


def _compiler() -> str | None:
    from sqenv.launch.helper import enter_binary

    try:
        enter_binary()
    except SqenvError as err:
        return err.message
    return None


def _python() -> str | None:
    return None if shutil.which("python3") else "no `python3` on PATH (pip environments need a base Python)"


CHECKS = (
    Check(
        "mksquashfs", "create", _tool("mksquashfs"), "install squashfs-tools (Debian: `apt-get install squashfs-tools`)"
    ),
    Check(
        "squashfuse_ll",
        "run (embedded)",
        _tool("squashfuse_ll"),
        "install squashfuse (Debian: `apt-get install squashfuse`)",
    ),
    Check("fusermount3", "run (embedded)", _tool("fusermount3"), "install fuse3 (Debian: `apt-get install fuse3`)"),
    Check("/dev/fuse", "run (embedded)", _fuse, "ask the admins to load the fuse module and make /dev/fuse mode 0666"),
    Check(
        "user namespaces",
        "run (embedded)",
        _userns,
        "ask the admins to set `sysctl user.max_user_namespaces=15000`, or use SQENV_ENGINE=apptainer",
    ),
    Check("C compiler", "create", _compiler, "install gcc (Debian: `apt-get install gcc libc6-dev`)"),
    Check(
        "setsid, flock",
        "run (embedded)",
        lambda: None if shutil.which("setsid") and shutil.which("flock") else "util-linux's setsid/flock not found",
        "install util-linux",
    ),
    Check("python3", "create (pip)", _python, "load the site's Python module, or pass `--python`"),
    Check(
        "apptainer/singularity",
        "run (apptainer engine, optional)",
        lambda: None if shutil.which("apptainer") or shutil.which("singularity") else "neither found (optional)",
        "only needed where user namespaces or FUSE are disabled",
    ),
)


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser("doctor", help="check this node's tools and permissions")
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    failed = 0
    for check in CHECKS:
        problem = check.test()
        optional = "optional" in check.needed_for
        if problem is None:
            print(f"ok    {check.name}")
        else:
            failed += 0 if optional else 1
            print(f"{'warn' if optional else 'FAIL'}  {check.name}: {problem} (needed to {check.needed_for})")
            print(f"      fix: {check.fix}")
    if failed:
        print(f"\n{failed} problem(s) found.")
        return 1
    print("\nAll checks passed.")
    return 0
