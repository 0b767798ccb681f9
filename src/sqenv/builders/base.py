"""What every builder gets and returns."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sqenv.builders.base_image import ContainerRun
from sqenv.errors import BuildError, SqenvError
from sqenv.inputs import BuildSpec
from sqenv.launch import MOUNT_PATH
from sqenv.tools.run import run
from sqenv.ui import UI


@dataclass(frozen=True)
class Package:
    """One installed distribution, as recorded in the lock."""

    name: str
    version: str
    manager: str = "pip"
    build: str | None = None
    channel: str | None = None
    url: str | None = None
    sha256: str | None = None


@dataclass
class BuildResult:
    """What a build produced, for the metadata and the launchers."""

    packages: list[Package]
    python: dict | None = None
    activate: bool = False
    extra: dict = field(default_factory=dict)
    packs: bool = True
    """False for a wrapped container: the install holds the container, no image of ours."""


@dataclass(frozen=True)
class BuildContext:
    """The staging area of one build and how to run commands against it."""

    spec: BuildSpec
    staging: Path
    workdir: Path
    enter: Path
    ui: UI
    cwd: Path
    mode: Literal["create", "update"] = "create"
    """create: the staging directory is the whole environment; update: `mounts` shows the install's
    layers under a writable upper directory (the staging directory), which becomes the new layer."""
    mounts: tuple[str, ...] = ()
    """sqenv-enter options that make the environment appear at MOUNT_PATH.

    Default: the staging directory, read-write. An update passes the current
    image layers plus a writable upper directory instead."""

    log_path: Path | None = None
    """Where the tools' output goes; outside the build dir, so it survives a failure."""

    container: ContainerRun | None = None
    """A pip layer on a base image (`--base-image`): commands run inside that container, with the
    staging directory at the mount path, instead of in sqenv-enter's namespace."""

    @property
    def log(self) -> Path:
        return self.log_path or self.workdir / "build.log"

    def run(
        self,
        argv: Sequence[str],
        *,
        what: str,
        hint: str | None = None,
        error: type[SqenvError] = BuildError,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        **output: Any,
    ) -> str:
        """Run a command with the staging directory mounted at MOUNT_PATH (`output`: `ui.run`'s
        classify/progress/stream)."""
        if self.container is not None:
            full = [*self.container.argv(self.staging, cwd or self.cwd), *argv]
        else:
            mounts = self.mounts or ("-w", "-l", str(self.staging))
            full = [str(self.enter), *mounts, "--", *argv]
        merged = dict(os.environ)
        merged.update(env or {})
        return run(self.ui, full, log=self.log, error=error, what=what, hint=hint, env=merged, cwd=cwd or self.cwd,
                   graceful=self.container is not None, **output)  # fmt: skip

    @property
    def mount_path(self) -> str:
        return MOUNT_PATH


class Builder(Protocol):
    """One way of filling an environment (a module: `pip`, `conda.create`, `container`).

    `build` fills `ctx.staging` (mode "create"); `update` applies a change
    (`sqenv.update.apply.Change`) to the mounted layers (mode "update");
    `refresh` re-reads what is installed after a user's script, in either mode."""

    def build(self, ctx: BuildContext) -> BuildResult: ...

    def refresh(self, ctx: BuildContext, result: BuildResult) -> BuildResult: ...

    def update(self, ctx: BuildContext, change: Any) -> BuildResult: ...


BUILDERS = {
    "pip": "sqenv.builders.pip",
    "conda": "sqenv.builders.conda.builder",
    "wrap": "sqenv.builders.container",
    "sif": "sqenv.builders.sif",
}
"""The builder of each install kind (`BuildSpec.kind`, `sqenv.json`'s `kind`; a wrapped container
is kind `wrap` built by `sif`: `BuildSpec.builder`), imported when used."""


def builder_for(kind: str) -> Builder:
    return importlib.import_module(BUILDERS[kind])  # type: ignore[return-value]
