"""Engines: how a launcher makes the image appear and runs the program.

Each engine is a pair of POSIX sh functions, the whole interface, defined in
an engine script of this package:

    sqenv_<engine>_usable      exit status 0 when the engine can run here
    sqenv_<engine>_exec ARGS   mount/enter and exec `$sqenv_prog` with ARGS
                               (reads SQENV_PREFIX, SQENV_LAYERS, sqenv_argv0)

`embedded` uses the `sqenv-enter` helper (namespace and FUSE image server; no
root, no setuid); `apptainer` and `singularity` hand over to a site's
container runtime (one script serves both). The launcher tries them in
`ORDER` per call (`auto`), unless SQENV_ENGINE or the install names one.
This registry is the one place Python code learns engine facts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Engine:
    name: str  # as SQENV_ENGINE, `--engine` and the config's `engine` say it
    script: str  # the sh file (without .sh) defining sqenv_<name>_usable/_exec
    command: str | None  # the runtime it needs on PATH, if any
    stacks_layers: bool  # can show several image layers as one (overlayfs); containers cannot


_ALL = (
    Engine("embedded", "embedded", None, True),
    Engine("apptainer", "apptainer", "apptainer", False),
    Engine("singularity", "apptainer", "singularity", False),
)
ENGINES: dict[str, Engine] = {engine.name: engine for engine in _ALL}
ORDER: tuple[str, ...] = tuple(ENGINES)
"""What `auto` tries, first usable wins."""
CHOICES: tuple[str, ...] = ("auto", *ORDER)
"""What users may name (`auto` = the first usable in ORDER)."""
RUNTIMES: tuple[str, ...] = tuple(e.command for e in _ALL if e.command)
"""Container runtimes, in order of preference."""


def scripts() -> list[str]:
    """The engine scripts' text, each once, in ORDER (for the launcher and doctor)."""
    names = list(dict.fromkeys(engine.script for engine in _ALL))
    return [resources.files(__package__).joinpath(f"{name}.sh").read_text() for name in names]


def stacks_layers(name: str | None) -> bool:
    """Whether installs run by `name` (None/auto: the embedded one) can use update layers."""
    engine = ENGINES.get(name or "embedded")
    return engine is None or engine.stacks_layers
