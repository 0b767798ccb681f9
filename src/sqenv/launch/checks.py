"""The checks behind `sqenv doctor [PREFIX]`: can this node build and run environments (each
failure with its fix), and which engine a launcher would use here and why. The command line
(cli/doctor.py) only prints them.

The engine choice is made by running the launcher's own choice (its engine section and the engines' `usable` checks,
the shipped sh code) with the `exec` functions replaced by `echo`: the
answer cannot drift from what launchers do.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqenv.engines import RUNTIMES
from sqenv.errors import SqenvError
from sqenv.publish import header as launcher_header


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


def _helper() -> str | None:
    from sqenv.launch.helper import enter_binary, is_static

    try:
        path = enter_binary()
    except SqenvError as err:
        return err.message
    if not is_static(path):
        return f"`{path}` is dynamically linked: it may fail on compute nodes with an older glibc"
    return None


def _python() -> str | None:
    return None if shutil.which("python3") else "no `python3` on PATH (pip environments need a base Python)"


CHECKS = (
    Check(
        "mksquashfs", "create", _tool("mksquashfs"), "install squashfs-tools (Debian: `apt-get install squashfs-tools`)"
    ),
    Check("fusermount3", "run (embedded)", _tool("fusermount3"), "install fuse3 (Debian: `apt-get install fuse3`)"),
    Check("/dev/fuse", "run (embedded)", _fuse, "ask the admins to load the fuse module and make /dev/fuse mode 0666"),
    Check(
        "user namespaces",
        "run (embedded)",
        _userns,
        "ask the admins to set `sysctl user.max_user_namespaces=15000`, or use SQENV_ENGINE=apptainer",
    ),
    Check(
        "sqenv-enter helper",
        "create",
        _helper,
        "reinstall sqenv with a C compiler and static libc (Debian: gcc libc6-dev; RHEL: glibc-static)",
    ),
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
        lambda: None if any(map(shutil.which, RUNTIMES)) else "neither found (optional)",
        "only needed where user namespaces or FUSE are disabled",
    ),
)


# ------------------------------------------------------------------ engine choice
_STUBS = """
sqenv_die() { printf 'none\\n%s\\n' "$1"; exit 0; }
sqenv_embedded_exec() { echo embedded; exit 0; }
sqenv_apptainer_exec() { echo "$sqenv_engine"; exit 0; }
sqenv_singularity_exec() { echo "$sqenv_engine"; exit 0; }
"""
_ENGINE_SECTION = "# --- Engine"


@dataclass(frozen=True)
class EngineChoice:
    """The engine a launcher would use on this node, why, and what would still fail."""

    engine: str  # embedded | apptainer | singularity | none
    why: str
    problems: tuple[str, ...] = ()


def launcher_choice(enter_dir: Path, default: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(engine, message) from the launcher's own engine section, run in sh."""
    from sqenv import engines
    from sqenv.launch import template

    body = template("launcher.sh")
    start = body.find(_ENGINE_SECTION)
    if start < 0:
        raise SqenvError("cannot find the engine choice in launcher.sh", "this is a bug in sqenv")
    script = "\n".join([*engines.scripts(), _STUBS, body[start:]])
    full = {
        **env,
        "SQENV_PREFIX": str(enter_dir),
        "sqenv_enter": str(enter_dir / "sqenv-enter"),  # the body sets it before the engine section
        "SQENV_DEFAULT_ENGINE": default,
        "SQENV_ENGINES": " ".join(engines.ORDER),
    }
    proc = subprocess.run(["sh", "-c", script, "sqenv-doctor"], capture_output=True, text=True, env=full)
    lines = proc.stdout.splitlines() or ["none", proc.stderr.strip()]
    return lines[0], " ".join(lines[1:])


def _embedded_blockers(enter: Path) -> list[str]:
    """Why `sqenv_embedded_usable` says no, in words (the same tests)."""
    found = []
    problem = _fuse()
    if problem:
        found.append(problem)
    if not os.access(enter, os.X_OK):
        found.append(f"`{enter}` is not executable")
    try:
        with open("/proc/sys/user/max_user_namespaces") as fh:
            if int(fh.read()) <= 0:
                found.append("user namespaces are disabled (user.max_user_namespaces = 0)")
    except (OSError, ValueError):
        pass
    return found


def _apptainer_problems(runtime: str, prefix: Path | None, header: Mapping[str, str], env: Mapping[str, str]) -> list:
    found = []
    exe = shutil.which(runtime) or next(filter(None, map(shutil.which, RUNTIMES)), None)
    if exe is None:
        return ["neither `apptainer` nor `singularity` is on PATH"]
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    m = re.search(r"(\d+)\.(\d+)", out)
    if m:
        version = (int(m.group(1)), int(m.group(2)))
        minimum = (1, 1) if "apptainer" in out.lower() else (3, 10)
        if version < minimum:
            found.append(f"`{exe}` is version {m.group(0)}; sqenv needs Apptainer >= 1.1 or SingularityCE >= 3.10")
    image = None
    if prefix is not None and (prefix / "container.sif").is_file():
        image = prefix / "container.sif"
    elif env.get("SQENV_APPTAINER_IMAGE"):
        image = Path(env["SQENV_APPTAINER_IMAGE"])
        if not image.is_file():
            found.append(f"SQENV_APPTAINER_IMAGE names `{image}`, which does not exist")
    elif prefix is not None or "SQENV_APPTAINER_IMAGE" not in env:
        found.append("no container image: the install carries no container.sif and SQENV_APPTAINER_IMAGE is not set")
    if len(header.get("SQENV_LAYERS", "").split()) > 1:
        found.append(f"the install has several image layers: run `sqenv compact {shlex.quote(str(prefix))}` first")
    return found


def engine_choice(prefix: Path | None = None, env: Mapping[str, str] | None = None) -> EngineChoice:
    """Which engine `PREFIX/bin/NAME` (or a new install, without PREFIX) would use here, and why."""
    from sqenv.config import load_config

    env = dict(os.environ if env is None else env)
    if prefix is not None:
        header = launcher_header.read(prefix / "launcher").values
        default = header.get("SQENV_DEFAULT_ENGINE", "auto")
        enter_dir: Path = prefix
        whose = "the install's"
        if "SQENV_ENGINE" in header:
            env["SQENV_ENGINE"] = header["SQENV_ENGINE"]
            forced = "forced by the site configuration (written into the launcher)"
            if not header.get("SQENV_LAYERS"):
                forced = "a wrapped container (`sqenv wrap IMAGE.sif`) runs with apptainer only"
        else:
            forced = None
    else:
        header = {}
        config = load_config(env)
        setting = config.from_files().setting("engine")
        default, whose = setting.value, f"the {setting.source}'s"
        forced = f"forced by the {setting.source}" if setting.forced else None
        if forced:
            env["SQENV_ENGINE"] = setting.value
    with tempfile.TemporaryDirectory() as tmp:
        if prefix is None:  # a new install would carry the helper this sqenv builds
            from sqenv.launch.helper import enter_binary

            enter_dir = Path(tmp)
            try:
                (enter_dir / "sqenv-enter").symlink_to(enter_binary())
            except SqenvError:
                pass  # no helper: the embedded engine cannot run (the helper check says why)
        engine, message = launcher_choice(enter_dir, default, env)
        blockers = _embedded_blockers(enter_dir / "sqenv-enter")
    if engine == "none":  # what the launcher would say
        return EngineChoice("none", message)
    if forced:
        why = forced
    elif env.get("SQENV_ENGINE") and env["SQENV_ENGINE"] != "auto":
        why = "set by SQENV_ENGINE"
    elif default != "auto":
        why = f"{whose} default engine"
    elif engine == "embedded":
        why = "auto: user namespaces and /dev/fuse are usable here"
    else:
        why = f"auto: the embedded engine cannot run here ({'; '.join(blockers)}), and `{engine}` is on PATH"
    problems: list[str] = []
    if engine == "embedded":
        problems += blockers
        for check in CHECKS:
            if check.needed_for == "run (embedded)" and check.name != "/dev/fuse":
                problem = check.test()
                if problem:
                    problems.append(problem)
    else:
        problems += _apptainer_problems(engine, prefix, header, env)
    return EngineChoice(engine, why, tuple(problems))
