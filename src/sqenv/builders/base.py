"""What every builder gets and returns."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class BuildContext:
    """The staging area of one build and how to run commands against it."""

    spec: BuildSpec
    staging: Path
    workdir: Path
    enter: Path
    ui: UI
    cwd: Path
    mounts: tuple[str, ...] = ()
    """sqenv-enter options that make the environment appear at MOUNT_PATH.

    Default: the staging directory, read-write. An update passes the current
    image layers plus a writable upper directory instead."""

    log_path: Path | None = None
    """Where the tools' output goes; outside the build dir, so it survives a failure."""

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
        mounts = self.mounts or ("-w", "-l", str(self.staging))
        full = [str(self.enter), *mounts, "--", *argv]
        merged = dict(os.environ)
        merged.update(env or {})
        return run(self.ui, full, log=self.log, error=error, what=what, hint=hint, env=merged, cwd=cwd or self.cwd,
                   **output)  # fmt: skip

    @property
    def mount_path(self) -> str:
        return MOUNT_PATH
