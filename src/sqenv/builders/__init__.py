"""Build: fill a staging directory with the environment, as seen at the mount path.

Every builder works inside a private namespace where the staging directory is
mounted read-write at `MOUNT_PATH`, so shebangs, `RECORD` files and conda
prefix placeholders name the path the image will have at run time.
One module per way of building: `pip` (uv), `conda` (py-rattler), `wrap`.
"""

from __future__ import annotations

from pathlib import Path

from sqenv.builders.base import BuildContext, BuildResult, Package
from sqenv.errors import InputError

__all__ = ["BuildContext", "BuildResult", "Package", "build"]


def build(ctx: BuildContext) -> BuildResult:
    """Run the pre-install script, the builder for the spec's kind, then the post-install script."""
    from sqenv.builders import scripts

    kind = ctx.spec.kind
    if kind == "pip":
        from sqenv.builders import pip as builder
    elif kind == "conda":
        from sqenv.builders.conda import create as builder  # type: ignore[no-redef]
    else:
        from sqenv.builders import container as builder  # type: ignore[no-redef]
    if ctx.spec.pre_install:
        scripts.run(ctx, ctx.spec.pre_install, phase="pre-install")
    result = builder.build(ctx)
    if kind == "pip":
        from sqenv.builders import shims
        from sqenv.builders.pip import site_packages

        found = site_packages(ctx.staging)
        if found is not None:
            shims.install(found)
    if ctx.spec.post_install:
        scripts.run(ctx, ctx.spec.post_install, result)
        result = builder.refresh(ctx, result)
    if ctx.spec.environ_file:
        add_environ(ctx.staging, ctx.spec.environ_file)
        result.activate = True
    return result


ENVIRON = ".sqenv/environ.sh"
_ACTIVATE = ".sqenv/activate.sh"
_SOURCE = '. "${0%/*}/environ.sh"  # the user\'s --environ file\n'


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
        activate.write_text(head + _SOURCE + sep + tail if sep else body + _SOURCE + 'exec "$@"\n')
    else:
        activate.write_text(
            "# shellcheck shell=sh\n# sqenv: run PROG after the user's environ file.\n" + _SOURCE + 'exec "$@"\n'
        )
    for path in (staging / ENVIRON, activate):
        path.chmod(0o644)
