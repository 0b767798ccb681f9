"""`sqenv update`: a new image layer holding only the changes.

The current layers are mounted read-only (sqenv's image server, in the build
directory; for non-root users inside a user namespace of our own, see
`layers.own_namespace`) and stacked with overlayfs under a writable upper
directory at the mount path, inside the build namespace. The builder (uv for pip envs) and the
post-install script run there; the upper directory then holds exactly what
changed (new files, whiteouts for removed ones, opaque markers for replaced
directories) and becomes the new top layer. Past `MAX_LAYERS` the merged tree
is packed into one image instead, as it is when a layer below was packed
with modes other users cannot read through overlayfs (`layers.unreadable`).
Publishing follows `sqenv.publish.versions`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from packaging.utils import canonicalize_name

from sqenv import snippets
from sqenv.builders import BuildContext, BuildResult, scripts
from sqenv.builders.base import builder_for
from sqenv.errors import InputError
from sqenv.publish import launchers, versions
from sqenv.ui import UI
from sqenv.update import layers
from sqenv.update.session import Change, Options, pack_and_publish, readable, session

__all__ = ["Change", "Options", "update"]


def _programs(ctx: BuildContext) -> list[str]:
    """The merged bin/ seen at the mount path, classified by `launchers.programs`."""
    out = ctx.run(snippets.sh("update-programs.sh", ctx.mount_path), what="listing the programs")
    fake = ctx.workdir / "programs"
    (fake / "bin").mkdir(parents=True)
    for line in out.splitlines():
        kind, _, name = line.partition(" ")
        if kind == "L":
            (fake / "bin" / name).symlink_to("target")
        elif kind == "X":
            (fake / "bin" / name).touch(mode=0o755)
    return launchers.programs(fake)


def _check_removals(change: Change, base: dict, prefix: Path) -> None:
    installed = {canonicalize_name(p["name"]) for p in base.get("packages", [])}
    for name in change.remove:
        if canonicalize_name(name) not in installed:
            raise InputError(f"`{name}` is not installed in {prefix}", "see `sqenv info PREFIX` for what is installed")


def _runs_in_container(version: dict) -> bool:
    """Whether launches of this install go to Apptainer/Singularity: its own engine, or a forced config."""
    from sqenv.config import load_config
    from sqenv.engines import stacks_layers

    config = load_config()
    engine = config.get("engine") if config.setting("engine").forced else (version.get("launch") or {}).get("engine")
    return not stacks_layers(engine)


def _changed(ctx: BuildContext, lowers: list[str], change: Change, base: dict, result: BuildResult) -> bool:
    """Did the update change anything? The upper directory says; an unpacked layer (on a base
    image) is compared by its packages (a post-install script counts as a change)."""
    if ctx.container is None:
        return layers.changed(ctx.staging, lowers)
    before = sorted((p["name"], p["version"]) for p in base.get("packages", []))
    return bool(change.post_install) or before != sorted((p.name, p.version) for p in result.packages)


def update(prefix: Path, change: Change, ui: UI, options: Options | None = None) -> dict | None:
    """Apply `change` as a new version; None when it changed nothing."""
    options = options or Options()
    with session(prefix, ui, options, change) as (install, data, ctx):
        base = versions.by_number(data, data["current"])
        change = replace(change, base=base)
        _check_removals(change, base, install.prefix)
        builder = builder_for(data["kind"])  # a wrapped tree's refuses the update
        if options.keep is not None:
            data["keep"] = options.keep
        lowers = ctx.mounts[1::2]
        if ctx.container is None:  # else: the staging directory holds the unpacked layer (session)
            (ctx.staging).mkdir()
            (ctx.workdir / "overlay-work").mkdir()
            ctx = replace(ctx, mounts=(*ctx.mounts, "-u", str(ctx.staging), "-W", str(ctx.workdir / "overlay-work")))
        result: BuildResult = builder.update(ctx, change)
        if change.post_install:
            scripts.run(ctx, change.post_install, result)
            result = builder.refresh(ctx, result)
        if not _changed(ctx, lowers, change, base, result):
            ui.info(f"Nothing changed: {install.prefix} stays at version {base['number']}")
            if options.keep is not None:
                versions.finish(install, data, base["number"], ui)
            return None
        packages = [{k: v for k, v in vars(p).items() if v is not None} for p in result.packages]
        # Past the launcher's limit, over an image others cannot read through overlayfs, or for an
        # install that runs in Apptainer (which cannot stack layers over PREFIX): pack it all.
        single = _runs_in_container(base)
        whole = single or len(lowers) + 1 > options.max_layers or not readable(install, base)
        parts = [versions.package_diff(base.get("packages", []), packages)]
        parts += [f"post-install {change.post_install.name}"] if change.post_install else []
        summary = "; ".join(p for p in parts if p) or "files changed"
        if whole and not single:
            summary += " (layers compacted)" if len(lowers) + 1 > options.max_layers else " (repacked readable)"
        inputs = {**change.inputs(), **({"index": ctx.spec.index.record()} if ctx.spec.index.record() else {})}
        record = versions.new_record(base, "update", inputs=inputs, packages=packages,
                                     programs=_programs(ctx), summary=summary,
                                     python=result.python, **result.extra)  # fmt: skip
        record = pack_and_publish(install, data, record, ctx, whole)
    ui.info(f"Updated {install.prefix} to version {record['number']}: {record['summary']}")
    return record
