"""Pre- and post-install scripts: the user's own commands, run inside the environment.

The script runs with `sh`, with the environment's `bin` first on PATH (so
`pip install x` and `python -c ...` act on it), the host visible, and the cwd
where the user ran sqenv. Its output is streamed
(prefixed); a failure says how it ended (exit code, or the signal that killed it).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqenv.builders.base import BuildContext, BuildResult
from sqenv.errors import BuildError, InputError
from sqenv.tools.diagnose import classify_script


def run(ctx: BuildContext, script: Path, result: BuildResult | None = None, *, phase: str = "post-install") -> None:
    """Run a user script in the environment (`phase`: pre-install runs before any package)."""
    if not script.is_file() or not os.access(script, os.R_OK):
        raise InputError(f"{phase} script `{script}` does not exist or is not readable")
    mount = ctx.mount_path
    env = {
        "PATH": f"{mount}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": mount,
        "CONDA_PREFIX": mount,
        "SQENV_BUILD_PREFIX": mount,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    what = f"{phase} script `{script}`"
    with ctx.ui.phase(f"Running the {phase} script {script.name}"):
        ctx.run(
            ["/bin/sh", str(script.resolve())],
            what=what,
            error=BuildError,
            env=env,
            classify=lambda output, code: classify_script(output, code, what),
            stream=phase,  # the user debugging their script sees its output as it runs
        )
