"""Write the launcher and one `bin/` entry per program.

The launcher is assembled from shipped sh files: the values of this version,
the engines, then the shared body. It is one file, replaced atomically, so
switching versions (update, rollback) is one rename.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
from pathlib import Path

from sqenv import __version__, engines
from sqenv.config import Config, launcher_lines, launcher_values, load_config
from sqenv.launch import MOUNT_PATH, template
from sqenv.publish.layout import LINK_TO_HELPER, LINK_TO_LAUNCHER, TEMP_PREFIX, Install
from sqenv.publish.modes import adopt, make_dir

_NOT_PROGRAMS = ("activate", "deactivate", "pydoc.bat")

STAGED_LINES = "sqenv_staged=\nsqenv_staged_at="
"""The last header lines; `sqenv stage` fills them in its node-local copy of the launcher."""


def render(
    layers: list[str],
    *,
    activate: bool,
    options: dict | None = None,
    config: Config | None = None,
) -> str:
    """The launcher text for these image layers (`header_values`, then the engines and the body)."""
    options = options or {}
    config = config or load_config()
    return _assemble(header_values(layers, activate=activate, options=options, config=config), options, config)


def header_values(layers: list[str], *, activate: bool, options: dict, config: Config) -> dict[str, str]:
    """The plain `KEY=value` settings of the launcher's header.

    `options` are the install's own launch settings, recorded in its version
    record (`launch`): `mpi`, `engine` (default), `only_engine` (forced),
    `mount_path`, `wrap_path` (where a wrapped container's programs are), `container_dirs` (the
    top-level directories of PREFIX/container.sif that host directories must not hide). Site and user config
    fill the rest (engine order, MPI library directories, idle timeout,
    runtime and staging directories); forced config values win.
    """
    values = {
        "SQENV_LAYERS": " ".join(layers),
        "SQENV_ENGINES": " ".join(engines.ORDER),
        "SQENV_MOUNT_PATH": options.get("mount_path") or MOUNT_PATH,
        "SQENV_ACTIVATE": "1" if activate else "0",
        **launcher_values(config, mpi=options.get("mpi")),
    }
    if options.get("engine") and not config.setting("engine").forced:
        values["SQENV_DEFAULT_ENGINE"] = options["engine"]
    if options.get("wrap_path"):
        values["SQENV_WRAP_PATH"] = options["wrap_path"]
    if options.get("container_dirs") is not None:  # the container's own top-level entries: no host binds over them
        values["SQENV_CONTAINER_DIRS"] = options["container_dirs"]
    if options.get("container"):  # `--base-image-ref`: the container where the site keeps it
        values["SQENV_CONTAINER"] = options["container"]
    if options.get("on_container"):  # a layer on the container's Python: its PATH, then the layer's bin
        values["SQENV_ON_CONTAINER"] = "1"
    if options.get("bind_paths"):  # a launch profile's (`create --profile`): after the site's own
        values["SQENV_BIND_PATHS"] = ":".join(p for p in (values["SQENV_BIND_PATHS"], *options["bind_paths"]) if p)
    if options.get("cpu_level"):  # built for a CPU: the helper checks the node has its instructions
        values["SQENV_CPU_LEVEL"] = options["cpu_level"]
    return values


def _assemble(values: dict[str, str], options: dict, config: Config) -> str:
    """The whole launcher: the header (values, runtime settings, profile, forced engine, staging), the
    engines, the body."""
    head = [
        "#!/bin/sh",
        f"# Launcher written by sqenv {__version__}. `sqenv update` and `sqenv rollback` replace it.",
        "# shellcheck disable=SC2034 # some values are only read by one engine",
        *(f"{key}={shlex.quote(value)}" for key, value in values.items()),
        *launcher_lines(config),
        *profile_lines(options.get("env") or {}),
        # a wrapped container runs only in its runtime, whatever SQENV_ENGINE or the config say
        *([f"SQENV_ENGINE={shlex.quote(options['only_engine'])}"] if options.get("only_engine") else []),
        # set only in the node-local copy `sqenv stage` makes (slurm/stage.py): PREFIX and that copy's directory
        STAGED_LINES,
        "",
    ]
    parts = ["\n".join(head)]
    parts += engines.scripts()
    parts.append(template("launcher.sh"))
    return "\n".join(parts)


HELPER_KEYS = frozenset(
    {"SQENV_LAYERS", "SQENV_ENGINES", "SQENV_MOUNT_PATH", "SQENV_ACTIVATE", "SQENV_DEFAULT_ENGINE", "SQENV_LD_PREPEND",
     "SQENV_BIND_PATHS"}
)  # fmt: skip
"""The header values the helper's launch mode reads (`launch/launch.h`); any other needs the shell."""


def helper_starts(values: dict[str, str], options: dict, config: Config) -> bool:
    """Whether the helper may start this install's programs itself (`launch/launch.h`): its header
    (`header_values`) holds nothing only the shell launcher acts on, nor do the lines after it (a
    profile's variables, a forced engine). The helper checks again at every start (and runs the
    launcher when the node or SQENV_ENGINE says so); this spares installs that always need the
    shell the helper's exec."""
    if not values.keys() <= HELPER_KEYS or options.get("env") or options.get("only_engine"):
        return False
    if config.setting("engine").forced:
        return False
    return (
        values["SQENV_ACTIVATE"] == "0"
        and not values["SQENV_LD_PREPEND"]
        and values["SQENV_MOUNT_PATH"] == MOUNT_PATH
        and values["SQENV_DEFAULT_ENGINE"] in ("auto", "embedded")
        and values["SQENV_ENGINES"].split()[:1] == ["embedded"]
    )


def profile_lines(env: dict[str, str]) -> list[str]:
    """A launch profile's variables, set unless the caller has them; `$VAR` expands at launch (the
    config allows nothing else: sqenv.config._profiles)."""
    return [f'{name}=${{{name}-"{value}"}}; export {name}' for name, value in env.items()]


def programs(root: Path) -> list[str]:
    """Names in the environment's bin/ that users run: executables, not activation scripts."""
    found = []
    bindir = root / "bin"
    if not bindir.is_dir():
        return found
    for entry in sorted(bindir.iterdir()):
        name = entry.name
        if name.startswith(_NOT_PROGRAMS) or name.startswith("."):
            continue
        try:
            mode = entry.stat().st_mode if not entry.is_symlink() else entry.lstat().st_mode
        except OSError:
            continue
        if entry.is_symlink() or (stat.S_ISREG(mode) and mode & 0o111):
            found.append(name)
    return found


def write(
    install: Install,
    layers: list[str],
    names: list[str],
    *,
    activate: bool,
    options: dict | None = None,
    config: Config | None = None,
) -> None:
    """Write the launcher atomically, then add missing bin/ entries and drop stale ones.

    The rename of the launcher is what switches an install to these layers:
    programs already running keep theirs, new launches see these."""
    options = options or {}
    config = config or load_config()
    values = header_values(layers, activate=activate, options=options, config=config)
    tmp = install.prefix / f"{TEMP_PREFIX}{secrets.token_hex(4)}.launcher"
    try:
        tmp.write_text(_assemble(values, options, config))
        adopt(install.prefix, tmp, executable=True)
        os.replace(tmp, install.launcher)
    finally:
        tmp.unlink(missing_ok=True)
    make_dir(install.bin, exist_ok=True)
    wanted = set(names)
    for entry in install.bin.iterdir():
        if entry.name not in wanted and entry.is_symlink():
            entry.unlink()
    helper = install.enter.is_file() and helper_starts(values, options, config)
    target = LINK_TO_HELPER if helper else LINK_TO_LAUNCHER
    for name in names:
        link = install.bin / name
        if not link.is_symlink():
            link.symlink_to(target)
