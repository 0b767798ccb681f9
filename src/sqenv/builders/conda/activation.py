"""The conda activation of an environment: `.sqenv/activate.sh` (what `conda activate` does:
`env_vars.d`, `activate.d` scripts, the yml's variables), conda's `state`, and the PEP 668 marker.
Written into the staging tree at create (`write_activation`), into the new layer at update
(`refresh_mounted`)."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

from sqenv import snippets
from sqenv.builders import ENVIRON_SOURCE
from sqenv.builders.base import BuildContext
from sqenv.launch import template

ACTIVATE = ".sqenv/activate.sh"

EXTERNALLY_MANAGED = """\
[externally-managed]
Error=This Python belongs to a sqenv environment: it lives in a read-only image,
 so pip cannot change it here. From outside the environment, add or remove
 packages with `sqenv update PREFIX PKG...` (or `-r requirements.txt`), or
 rebuild it with `sqenv create --force`. For packages of your own on top,
 make a venv: `python -m venv --system-site-packages DIR`.
"""


def sh_ok(script: Path) -> bool:
    return subprocess.run(["/bin/sh", "-n", str(script)], capture_output=True).returncode == 0


def activation_body(ctx: BuildContext, env_vars: dict[str, str | None], scripts: dict[str, bool], own: dict) -> str:
    """The body of `.sqenv/activate.sh`: `env_vars.d` files (name -> text), `activate.d` scripts (name -> valid sh)."""
    variables: dict[str, str] = {}
    for name, text in sorted(env_vars.items()):
        try:
            variables.update({str(k): str(v) for k, v in json.loads(text or "").items()})
        except (ValueError, AttributeError):
            ctx.ui.warn(f"ignoring etc/conda/env_vars.d/{name}: not a JSON object of variables")
    variables.update(own)
    for name, valid in sorted(scripts.items()):
        if not valid:
            ctx.ui.warn(f"skipping activation script {name}: it is not valid POSIX sh")
    body = template("activate.sh")
    # Values are literal, as conda sets them (no `$VAR` expansion); the scripts are the packages'.
    exports = "".join(f"# shellcheck disable=SC2016\nexport {k}={shlex.quote(v)}\n" for k, v in variables.items())
    sources = "".join(
        f'# shellcheck source=/dev/null\n. "$CONDA_PREFIX"/etc/conda/activate.d/{shlex.quote(s)}\n'
        for s, valid in sorted(scripts.items())
        if valid
    )
    return body.replace("# @VARIABLES@\n", exports or ":\n").replace("# @SCRIPTS@\n", sources or ":\n")


def write_activation(ctx: BuildContext) -> None:
    """`.sqenv/activate.sh` (and conda's own `conda-meta/state` for the yml's variables)."""
    staging = ctx.staging
    env_vars = {
        p.name: p.read_text(errors="replace") for p in (staging / "etc" / "conda" / "env_vars.d").glob("*.json")
    }
    scripts = {p.name: sh_ok(p) for p in (staging / "etc" / "conda" / "activate.d").glob("*.sh")}
    own = dict(ctx.spec.conda.variables)
    target = staging / ACTIVATE
    target.parent.mkdir(exist_ok=True)
    target.write_text(activation_body(ctx, env_vars, scripts, own))
    target.chmod(0o644)
    if own and (staging / "conda-meta").is_dir():
        (staging / "conda-meta" / "state").write_text(state_json(own))


def state_json(variables: dict[str, str]) -> str:
    return json.dumps({"env_vars": variables}, indent=1) + "\n"


def mark_externally_managed(staging: Path) -> None:
    """PEP 668 marker in the conda Python's stdlib directory (a conda Python is not a venv)."""
    for os_py in staging.glob("lib/python3*/os.py"):
        marker = os_py.parent / "EXTERNALLY-MANAGED"
        if not marker.exists():
            marker.write_text(EXTERNALLY_MANAGED)


def _copy_in(ctx: BuildContext, pairs: list[tuple[Path, str]], what: str) -> None:
    """Write files at the mount path (through the overlay, so they land in the upper directory)."""
    if not pairs:
        return
    ctx.run(
        [
            "/bin/sh",
            "-c",
            snippets.text("conda-copy-in.sh"),
            "sh",
            *(x for src, dest in pairs for x in (str(src), dest)),
        ],
        what=what,
    )


def refresh_mounted(ctx: BuildContext, variables: dict[str, str] | None = None) -> None:
    """After an update: conda's `state` (the yml's `variables`), the activation script and the PEP 668
    marker of a new Python, each written only when it differs from what the environment has."""
    mount = ctx.mount_path
    out = ctx.run(
        [sys.executable, "-c", snippets.text("conda_gather.py"), mount, ACTIVATE], what="reading the activation scripts"
    )
    found = json.loads(out.strip().splitlines()[-1])
    writes: list[tuple[Path, str]] = []
    own: dict[str, str] = {}
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        own = {str(k): str(v) for k, v in json.loads(found["state"] or "{}").get("env_vars", {}).items()}
    if variables is not None and variables != own:
        own = variables
        (ctx.workdir / "state").write_text(state_json(own))
        writes.append((ctx.workdir / "state", f"{mount}/conda-meta/state"))
    body = activation_body(ctx, found["env_vars"], found["scripts"], own)
    if ENVIRON_SOURCE in (found["activate"] or ""):  # keep sourcing the install's --environ file
        head, sep, tail = body.rpartition('exec "$@"')
        body = head + ENVIRON_SOURCE + sep + tail
    if body != found["activate"]:
        (ctx.workdir / "activate.sh").write_text(body)
        writes.append((ctx.workdir / "activate.sh", f"{mount}/{ACTIVATE}"))
    if found["unmarked"]:
        (ctx.workdir / "EXTERNALLY-MANAGED").write_text(EXTERNALLY_MANAGED)
        writes += [(ctx.workdir / "EXTERNALLY-MANAGED", f"{mount}/{d}/EXTERNALLY-MANAGED") for d in found["unmarked"]]
    _copy_in(ctx, writes, "writing the activation script")
