"""Build: fill a staging directory with the environment, as seen at the mount path.

Every builder works inside a private namespace where the staging directory is
mounted read-write at `MOUNT_PATH`, so shebangs, `RECORD` files and conda
prefix placeholders name the path the image will have at run time.
One module per way of building: `pip` (uv), `conda` (py-rattler), `wrap`.
"""

from __future__ import annotations

from sqenv.build.base import BuildContext, BuildResult, Package

__all__ = ["BuildContext", "BuildResult", "Package", "build"]


def build(ctx: BuildContext) -> BuildResult:
    """Run the pre-install script, the builder for the spec's kind, then the post-install script."""
    from sqenv.build import postinstall

    kind = ctx.spec.kind
    if kind == "pip":
        from sqenv.build import pip as builder
    elif kind == "conda":
        from sqenv.build import conda as builder  # type: ignore[no-redef]
    else:
        from sqenv.build import wrap as builder  # type: ignore[no-redef]
    if ctx.spec.pre_install:
        postinstall.run(ctx, ctx.spec.pre_install, phase="pre-install")
    result = builder.build(ctx)
    if kind == "pip":
        from sqenv.build import shims
        from sqenv.build.pip import site_packages

        found = site_packages(ctx.staging)
        if found is not None:
            shims.install(found)
    if ctx.spec.post_install:
        postinstall.run(ctx, ctx.spec.post_install, result)
        result = builder.refresh(ctx, result)
    return result
