"""Node-local staging: copy an install's image once to every node of a Slurm job.

`sqenv stage PREFIX`, run in a batch script (or `salloc` shell) before the
`srun` that starts thousands of ranks, puts the current image layer(s) at

    ${SQENV_STAGE_DIR:-/tmp}/sqenv-stage-$SLURM_JOB_ID/FILE

on every node of the job: `sbcast --force` (one read of the parallel file
system, fanned out by Slurm), else one `srun` task per node running `cp`. Each
node checks the copy's sha256 against the install's metadata, and only then
renames it into place, so a launcher never sees a partial or corrupt copy.
Launchers of that job mount the staged copy when they find it (and it is the
user's own); the mount itself stays once per node and user.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqenv import snippets
from sqenv.errors import PrefixError, SqenvError, ToolMissing, UsageError
from sqenv.publish import metadata
from sqenv.publish.layout import Install
from sqenv.ui import UI


class StageError(SqenvError):
    """Copying or checking the staged image failed on some node."""

    exit_code = 7


@dataclass(frozen=True)
class Layer:
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Staged:
    directory: str
    layers: tuple[Layer, ...]
    nodes: int
    method: str  # "sbcast" or "srun cp"
    seconds: float


def current_layers(data: dict) -> list[Layer]:
    """The image files new launches mount, with their checksums (a layer may
    have been made by an earlier version of the install)."""
    known = {img["file"]: img for version in data["versions"] for img in version.get("images", [])}
    layers = []
    for name in metadata.current(data)["layers"]:
        if name not in known:
            raise PrefixError(
                f"the metadata has no checksum for the image `{name}`", "the install's metadata is damaged"
            )
        layers.append(Layer(name, known[name]["sha256"], int(known[name]["size"])))
    return layers


def job_env(env: Mapping[str, str]) -> tuple[str, int]:
    job = env.get("SLURM_JOB_ID")
    if not job:
        raise UsageError(
            "`sqenv stage` works only inside a Slurm allocation (SLURM_JOB_ID is not set)",
            "run it in your batch script, or in an `salloc` shell, before the `srun` that starts the program",
        )
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1"
    return job, int(nodes)


def stage_directory(stage_dir: str, job: str) -> str:
    return f"{stage_dir.rstrip('/')}/sqenv-stage-{job}"


class Nodes:
    """Runs one task per node of the current job."""

    def __init__(self, nodes: int, env: Mapping[str, str], ui: UI) -> None:
        self.nodes = nodes
        self.env = dict(env)
        self.ui = ui

    def srun_argv(self, script: str, *args: str) -> list[str]:
        n = str(self.nodes)
        # --overlap: also while another step runs; -n/-c/--mpi explicit, since
        # srun would take them from the job's SLURM_NTASKS, ... variables.
        return [
            "srun", "--quiet", "--overlap", "-N", n, "-n", n, "--ntasks-per-node=1", "-c", "1", "--mpi=none",
            "--kill-on-bad-exit=0", "sh", "-c", script, "sh", *args,
        ]  # fmt: skip

    def run(self, argv: Sequence[str], what: str) -> subprocess.CompletedProcess:
        self.ui.detail("$ " + shlex.join(argv))
        try:
            return subprocess.run(
                list(argv), env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3600
            )
        except FileNotFoundError:
            raise ToolMissing(f"`{argv[0]}` is not installed: {what} needs Slurm's commands") from None

    def each(self, script: str, *args: str, what: str) -> subprocess.CompletedProcess:
        proc = self.run(self.srun_argv(script, *args), what)
        if proc.returncode != 0:
            raise StageError(
                f"{what} failed on some node (srun exit code {proc.returncode})",
                "check that the stage directory is on node-local storage you can write (SQENV_STAGE_DIR)",
                "\n".join("  | " + line for line in (proc.stdout + proc.stderr).strip().splitlines()[-15:]),
            )
        return proc


def stage(
    prefix: Path,
    ui: UI,
    *,
    stage_dir: str = "/tmp",
    env: Mapping[str, str] | None = None,
    method: str = "auto",
) -> Staged:
    """Copy the current image layer(s) of PREFIX to every node of the current job."""
    env = os.environ if env is None else env
    job, count = job_env(env)
    install = Install.open(prefix)
    layers = current_layers(metadata.load(install.metadata))
    for layer in layers:
        if not install.image(layer.file).is_file():
            raise PrefixError(f"the image `{install.image(layer.file)}` is missing", "rebuild the install")
    directory = stage_directory(stage_dir, job)
    nodes = Nodes(count, env, ui)
    start = time.monotonic()
    size = sum(layer.size for layer in layers)
    tmp = f".tmp-{os.getpid()}"
    with ui.phase(f"Staging {size / 1e6:,.1f} MB to {directory} on {count} node(s)"):
        nodes.each(snippets.text("slurm-mkdir.sh"), directory, what=f"creating `{directory}`")
        used = "sbcast" if method in ("auto", "sbcast") else "srun cp"
        for layer in layers:
            source, target = str(install.image(layer.file)), f"{directory}/{layer.file}{tmp}"
            if used == "sbcast":
                proc = nodes.run(["sbcast", "--force", source, target], "sbcast")
                if proc.returncode != 0:
                    if method == "sbcast":
                        raise StageError(f"sbcast failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
                    ui.detail(f"sbcast failed ({(proc.stderr or proc.stdout).strip()[-200:]}); using srun + cp")
                    used = "srun cp"
            if used == "srun cp":
                nodes.each(snippets.text("slurm-copy.sh"), source, target, what=f"copying `{layer.file}`")
        pairs = [arg for layer in layers for arg in (layer.sha256, layer.file + tmp, layer.file)]
        proc = nodes.each(
            snippets.text("slurm-verify.sh"), directory, *pairs, what="checking the staged copies (sha256)"
        )
        ok = [line for line in proc.stdout.splitlines() if line.endswith(": ok")]
        if len(ok) != count:
            raise StageError(f"only {len(ok)} of {count} nodes confirmed the staged copy", None, proc.stdout)
    return Staged(directory, tuple(layers), count, used, time.monotonic() - start)


def unstage(prefix: Path, ui: UI, *, stage_dir: str = "/tmp", env: Mapping[str, str] | None = None) -> str:
    """Remove PREFIX's staged copies from every node of the job (and the directory once empty)."""
    env = os.environ if env is None else env
    job, count = job_env(env)
    layers = current_layers(metadata.load(Install.open(prefix).metadata))
    directory = stage_directory(stage_dir, job)
    script = 'dir=$1; shift; for f in "$@"; do rm -f "$dir/$f"; done; rmdir "$dir" 2>/dev/null; true'
    Nodes(count, env, ui).each(script, directory, *(layer.file for layer in layers), what="removing staged copies")
    return directory
