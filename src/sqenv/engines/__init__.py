"""Engines: how a launcher makes the image appear and runs the program.

Each engine is one POSIX sh file defining two functions, the whole interface:

    sqenv_<engine>_usable      exit status 0 when the engine can run here
    sqenv_<engine>_exec ARGS   mount/enter and exec `$sqenv_prog` with ARGS
                               (reads SQENV_PREFIX, SQENV_LAYERS, sqenv_argv0)

`embedded` uses the `sqenv-enter` helper (namespace and FUSE image server) (no root, no
setuid); `apptainer` hands over to a site's Apptainer or SingularityCE. The
launcher picks the first usable one per call, unless SQENV_ENGINE says.
"""

from __future__ import annotations

from importlib import resources

ENGINES = ("embedded", "apptainer")


def engine_script(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.sh").read_text()
