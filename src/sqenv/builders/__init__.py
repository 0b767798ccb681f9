"""Build: fill a staging directory with the environment, as seen at the mount path.

Every builder works inside a private namespace where the staging directory is
mounted read-write at `MOUNT_PATH`, so shebangs, `RECORD` files and conda
prefix placeholders name the path the image will have at run time.
One module per way of building (`base.BUILDERS`): `pip` (uv), `conda` (py-rattler), `container`
(an existing tree); `sif` wraps an Apptainer image the same way.
"""

from __future__ import annotations

from pathlib import Path

from sqenv.builders.base import BuildContext, Builder, BuildResult, Package, builder_for
from sqenv.errors import InputError

__all__ = ["BuildContext", "BuildResult", "Builder", "Package", "build", "builder_for"]


def build(ctx: BuildContext) -> BuildResult:
    """Run the pre-install script, the builder for the spec's kind, then the post-install script."""
    from sqenv.builders import scripts

    builder = builder_for(ctx.spec.builder)
    if ctx.spec.pre_install:
        scripts.run(ctx, ctx.spec.pre_install, phase="pre-install")
    result = builder.build(ctx)
    if ctx.spec.post_install:
        scripts.run(ctx, ctx.spec.post_install, result)
        result = builder.refresh(ctx, result)
    if ctx.spec.environ_file:
        add_environ(ctx.staging, ctx.spec.environ_file)
        result.activate = True
    return result


ENVIRON = ".sqenv/environ.sh"
_ACTIVATE = ".sqenv/activate.sh"
ENVIRON_SOURCE = '. "${0%/*}/environ.sh"  # the user\'s --environ file\n'


def add_environ(staging: Path, environ: Path) -> None:
    """The user's `--environ` file (Tykky's), sourced in the namespace before every program.

    It goes into the image next to the activation script, which sources it
    last, just before the program starts (a pip environment gets a minimal
    activation script for it)."""
    try:
        text = environ.read_text()
    except OSError as exc:
        raise InputError(f"cannot read the environ file `{environ}`: {exc.strerror}") from None
    (staging / ".sqenv").mkdir(exist_ok=True)
    (staging / ENVIRON).write_text(text)
    activate = staging / _ACTIVATE
    if activate.is_file():
        body = activate.read_text()
        head, sep, tail = body.rpartition('exec "$@"')
        activate.write_text(head + ENVIRON_SOURCE + sep + tail if sep else body + ENVIRON_SOURCE + 'exec "$@"\n')
    else:
        activate.write_text(
            "# shellcheck shell=sh\n# sqenv: run PROG after the user's environ file.\n" + ENVIRON_SOURCE + 'exec "$@"\n'
        )
    for path in (staging / ENVIRON, activate):
        path.chmod(0o644)
