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

It also puts the install's programs there, in `DIR/NAME-HASH/` (the same path on
every node; `sqenv stage --print-path` prints its `bin`): a copy of the launcher,
told which install it serves, a copy of `sqenv-enter`, and `bin/PROG` links. With
that `bin` first on PATH, a rank's start opens nothing on the shared file system:
the launcher chain (the kernel's exec of the sh launcher, sh reading it, the exec
of sqenv-enter) would otherwise cost three opens and closes per rank on the
metadata server, which at 1,000 nodes x 128 ranks is more than the image's one
open per node. The staged launcher runs the install's own one instead when the
install changed after staging (a newer `PREFIX/launcher`) or its copy is gone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqenv import snippets
from sqenv.errors import PrefixError, SqenvError, ToolMissing, UsageError
from sqenv.publish import metadata
from sqenv.publish.launchers import STAGED_LINES
from sqenv.publish.layout import PROGRAM_LINKS, Install
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
    bin: str | None = None  # the node-local programs (None: this install's launcher cannot be staged)


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


def programs_key(prefix: Path) -> str:
    """The name of PREFIX's programs directory in the stage directory: readable, and one
    per install (two installs of the same name in one job do not meet)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", prefix.name).lstrip(".") or "env"
    return f"{name}-{hashlib.sha256(str(prefix).encode()).hexdigest()[:10]}"


def staged_launcher(text: str, prefix: Path, at: str) -> str | None:
    """The install's launcher text, told that it is the node-local copy at `at` serving
    `prefix` (None: a launcher written before sqenv could stage programs)."""
    if f"\n{STAGED_LINES}\n" not in text:
        return None
    filled = f"sqenv_staged={shlex.quote(str(prefix))}\nsqenv_staged_at={shlex.quote(at)}"
    return text.replace(f"\n{STAGED_LINES}\n", f"\n{filled}\n", 1)


def launcher_programs(install: Install) -> list[str]:
    """The names in PREFIX/bin that run the launcher (what `sqenv create` linked there)."""
    names = []
    for entry in sorted(install.bin.iterdir()) if install.bin.is_dir() else []:
        if entry.is_symlink() and os.readlink(entry) in PROGRAM_LINKS and not entry.name.startswith("."):
            names.append(entry.name)
    return names


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        bindir = stage_programs(install, directory, nodes, ui)
    return Staged(directory, tuple(layers), count, used, time.monotonic() - start, bindir)


def stage_programs(install: Install, directory: str, nodes: Nodes, ui: UI) -> str | None:
    """Put the launcher, sqenv-enter and bin/ links of the install in DIRECTORY/KEY on every
    node; return that bin directory (None, with a warning, for a launcher that predates this)."""
    key = programs_key(install.prefix)
    at = f"{directory}/{key}"
    text = staged_launcher(install.launcher.read_text(), install.prefix, at)
    enter = install.prefix / "sqenv-enter"
    if text is None or not enter.is_file():
        ui.warn(
            f"the launcher of {install.prefix} was written by an older sqenv: staged the image only, not the "
            "programs (recreate the install to stage them too)"
        )
        return None
    launcher_sha = hashlib.sha256(text.encode()).hexdigest()
    proc = nodes.each(
        snippets.text("slurm-launchers.sh"),
        directory,
        key,
        str(enter),
        _sha256(enter),
        text,
        launcher_sha,
        *launcher_programs(install),
        what="staging the programs",
    )
    ok = [line for line in proc.stdout.splitlines() if line.endswith(": ok")]
    if len(ok) != nodes.nodes:
        raise StageError(f"only {len(ok)} of {nodes.nodes} nodes confirmed the staged programs", None, proc.stdout)
    return f"{at}/bin"


def unstage(prefix: Path, ui: UI, *, stage_dir: str = "/tmp", env: Mapping[str, str] | None = None) -> str:
    """Remove PREFIX's staged copies from every node of the job (and the directory once empty)."""
    env = os.environ if env is None else env
    job, count = job_env(env)
    layers = current_layers(metadata.load(Install.open(prefix).metadata))
    directory = stage_directory(stage_dir, job)
    key = programs_key(Install.open(prefix).prefix)
    Nodes(count, env, ui).each(
        snippets.text("slurm-unstage.sh"), directory, key, *(layer.file for layer in layers),
        what="removing staged copies",
    )  # fmt: skip
    return directory


def programs_path(prefix: Path, *, stage_dir: str = "/tmp", env: Mapping[str, str] | None = None) -> str:
    """Where `sqenv stage` puts PREFIX's programs in the current job (the same on every node)."""
    job, _ = job_env(os.environ if env is None else env)
    return f"{stage_directory(stage_dir, job)}/{programs_key(Install.open(prefix).prefix)}/bin"
