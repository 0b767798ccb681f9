"""uv, run in the build namespace: for pip environments and for the `pip:` part of conda ones."""

from __future__ import annotations

from uv import find_uv_bin

from sqenv.builders.base import BuildContext
from sqenv.tools.diagnose import classify_uv
from sqenv.tools.progress import UvProgress


def uv(ctx: BuildContext, argv: list[str], what: str) -> str:
    """Run uv in the build namespace: package sources from the spec, its progress read for the
    display, a failure reported by its cause (`sqenv.tools.diagnose`). No hard links into uv's cache
    when a post-install script may rewrite files in place, or in an update (its target is an overlay)."""
    exe = find_uv_bin()
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    if ctx.mode == "update" or ctx.spec.post_install:
        env["UV_LINK_MODE"] = "copy"
    progress = None
    if argv[0] == "venv":  # --seed fetches pip from the index
        argv = [*argv, *ctx.spec.index.uv_args(exe)]
    elif argv[:2] == ["pip", "install"]:
        # -v: uv names each package as it resolves and fetches it (counts for the display, details for the log)
        argv = [*argv[:2], "-v", *ctx.spec.index.uv_args(exe), *argv[2:]]
        progress = UvProgress()
    return ctx.run([exe, *argv], what=what, env=env, progress=progress,
                   classify=lambda output, code: classify_uv(output, code, "uv"))  # fmt: skip
