"""Site and user configuration: TOML files with defaults users may change and forced values they may not.

Files, lowest precedence first (a missing file is skipped):

    system     /etc/sqenv/config.toml          (SQENV_SYSTEM_CONFIG overrides the path)
    user       $XDG_CONFIG_HOME/sqenv/config.toml (default ~/.config/sqenv/config.toml)
    SQENV_CONFIG=FILE                           (e.g. set by a site's module)

then the environment variables sqenv already honours (SQENV_BUILD_DIR, ...), then
the command line. Each file may hold `[defaults]` and `[forced]`; a forced value
wins over everything, the command line included (with a warning when it overrides
a value given there). When several files force a key, the system file wins.

    [defaults]
    build_dir = "/scratch/project_465000001/$USER/sqenv-build"
    jobs = 8
    [forced]
    mpi = "host"
    mpi_libraries = ["/opt/cray/pe/mpich/default/ofi/gnu/9.1/lib"]
    bind_paths = ["/scratch/project_465000001", "/project/project_465000001"]

`load_config()` reads everything once; `Config.get(key, cli_value, ui)` gives the
value a module should use.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqenv.engines import CHOICES
from sqenv.errors import InputError
from sqenv.inputs import COMPRESSIONS
from sqenv.ui import NORMAL, QUIET, UI

SYSTEM_CONFIG = "/etc/sqenv/config.toml"
MPI_MODES = ("none", "host")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value

    return check


def _int(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # from an environment variable
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}")
        return value

    return check


def _build_path(value: Any) -> str:
    """A path used at build time: `~` and `$VAR` are expanded when read (see `expand`)."""
    return _text(value)


def expand(value: str, env: Mapping[str, str]) -> str:
    """`~` and `$VAR`/`${VAR}` from `env`; unknown variables stay as written."""
    if value == "~" or value.startswith("~/"):
        value = (env.get("HOME") or os.path.expanduser("~")) + value[1:]
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


def _runtime_path(value: Any) -> str:
    """A path the launcher uses on compute nodes: written into it as is."""
    if not _text(value).startswith("/"):
        raise ValueError("must be an absolute path (it is used on the compute nodes as written)")
    return value


def _paths(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("/") for v in value):
        raise ValueError('must be a list of absolute paths, e.g. ["/opt/cray/pe/lib64"]')
    return list(value)


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError('must be a list of strings, e.g. ["https://mirror.example.org/simple"]')
    return list(value)


def _cpus(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError('must be a table of partition = "cpu", e.g. lumi-c = "zen2"')
    return dict(value)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_VALUE = re.compile(r"([^$`\"\\]|\$[A-Za-z_]\w*|\$\{[A-Za-z_]\w*\})*")
"""Plain text and `$NAME`/`${NAME}`: no other expansion (`${X=...}` would set sqenv's own variables,
`${X?}` stop every launch), no backquote, double quote or backslash."""


def _profiles(value: Any) -> dict[str, dict]:
    """[profiles.NAME] tables: `bind_paths` (host paths the apptainer engine binds) and `env`
    (variables set at launch; `$VAR`/`${VAR}` expand then, e.g. "/tmp/${USER}-miopen")."""
    usage = 'must be tables like [profiles.gpu] with bind_paths = ["/opt/cray"] and env = { NAME = "value" }'
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(usage)
    out: dict[str, dict] = {}
    for name, table in value.items():
        unknown = set(table) - {"bind_paths", "env"}
        if unknown:
            raise ValueError(f"[profiles.{name}]: unknown key {sorted(unknown)[0]!r} ({usage})")
        env = table.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ValueError(f"[profiles.{name}] env {usage}")
        for key, text in env.items():
            if not _ENV_NAME.fullmatch(key) or key.startswith("SQENV_"):
                raise ValueError(f"[profiles.{name}] env: `{key}` is not a variable name sqenv may set")
            if not _ENV_VALUE.fullmatch(text):
                raise ValueError(f"[profiles.{name}] env {key}: only plain text and $VAR/${{VAR}} are allowed")
        out[name] = {"bind_paths": _paths(table.get("bind_paths", [])), "env": dict(env)}
    return out


def _bool(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.strip().lower() in ("1", "true", "yes")  # from an environment variable
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], Any]
    default: Any
    help: str
    env: str | None = None  # an environment variable that overrides the files


KEYS: dict[str, Key] = {
    "build_dir": Key(_build_path, None, "where environments are built (default: $TMPDIR or /tmp)", "SQENV_BUILD_DIR"),
    "compression": Key(_choice(COMPRESSIONS), "zstd", "image compression"),
    "compression_level": Key(_int(0), None, "compressor level (default: zstd 3, gzip 6)"),
    "jobs": Key(_int(1), None, "cores used for packing (default: all)"),
    "engine": Key(_choice(CHOICES), "auto", "how launchers run programs", "SQENV_ENGINE"),
    "mpi": Key(_choice(MPI_MODES), "none", '"host": use the host MPI library at run time'),
    "mpi_libraries": Key(_paths, [], "host MPI library files or directories (mpi = host)"),
    "target_cpu": Key(_text, None, "archspec name of the compute nodes' CPU, e.g. zen2 (default: the build host's)"),
    "cpus": Key(_cpus, {}, 'partition name -> CPU, a [cpus] table: lumi-c = "zen2"'),
    "profiles": Key(
        _profiles, {}, "launch profiles, [profiles.NAME] tables of bind_paths and env (`create --profile`)"
    ),
    "profile": Key(_text, None, "the launch profile installs get by default (`create --profile`)"),
    "bind_paths": Key(_paths, [], "extra host paths the apptainer engine binds"),
    "cache_dir": Key(_build_path, None, "sqenv's cache (default: ~/.cache/sqenv)", "SQENV_CACHE_DIR"),
    "idle_timeout": Key(_int(1), 60, "seconds an unused image stays mounted", "SQENV_IDLE_TIMEOUT"),
    "runtime_dir": Key(_runtime_path, None, "where images are mounted (default: /tmp/sqenv-UID)", "SQENV_RUNTIME_DIR"),
    "stage_dir": Key(_runtime_path, "/tmp", "node-local directory for `sqenv stage`", "SQENV_STAGE_DIR"),
    "keep_versions": Key(_int(1), 3, "versions kept for rollback"),
    # where uv finds pip packages (see sqenv.inputs.index); recorded per install, reused by updates
    "index_url": Key(_text, None, "pip package index (default: PyPI)"),
    "extra_index_urls": Key(_strings, [], "more pip package indexes"),
    "find_links": Key(_strings, [], "directories or pages of wheels/sdists"),
    "no_index": Key(_bool, False, "use no index, only `find_links`"),
    "system_certs": Key(_bool, False, "trust the system's TLS certificates (uv's --system-certs)"),
}


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "default", "system config /etc/...", "environment SQENV_X", "command line", ...
    forced: bool = False


@dataclass(frozen=True)
class Config:
    settings: Mapping[str, Setting]
    files: tuple[tuple[str, str, bool], ...] = ()  # (layer, path, was read)
    file_settings: Mapping[str, Setting] | None = None  # without the environment variables

    def from_files(self) -> Config:
        """The files' values only: what a launcher gets as its defaults (the user's
        environment variables are read again by the launcher at run time)."""
        return Config(self.file_settings or self.settings, self.files)

    def setting(self, key: str) -> Setting:
        try:
            return self.settings[key]
        except KeyError:
            raise KeyError(f"unknown sqenv config key {key!r}") from None

    def get(self, key: str, cli_value: Any = None, ui: UI | None = None) -> Any:
        """The value to use: a forced value, else `cli_value` when given, else the configured one."""
        setting = self.setting(key)
        if setting.forced:
            if cli_value is not None and cli_value != setting.value:
                (ui or UI()).warn(
                    f"{key} = {setting.value!r} is forced by the {setting.source}; ignoring {cli_value!r}"
                )
            return setting.value
        return setting.value if cli_value is None else cli_value

    def source(self, key: str, cli_value: Any = None) -> str:
        setting = self.setting(key)
        return "command line" if cli_value is not None and not setting.forced else setting.source


def config_files(env: Mapping[str, str]) -> list[tuple[str, Path, bool]]:
    """(layer name, path, required) in precedence order."""
    home = env.get("HOME") or os.path.expanduser("~")
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files = [
        ("system config", Path(env.get("SQENV_SYSTEM_CONFIG") or SYSTEM_CONFIG), False),
        ("user config", Path(xdg, "sqenv", "config.toml"), False),
    ]
    if env.get("SQENV_CONFIG"):
        files.append(("SQENV_CONFIG", Path(env["SQENV_CONFIG"]), True))
    return files


def read_file(path: Path, required: bool) -> dict | None:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        if required:
            raise InputError(
                f"the config file `{path}` (SQENV_CONFIG) does not exist", "fix or unset SQENV_CONFIG"
            ) from None
        return None
    except OSError as exc:
        raise InputError(f"cannot read the config file `{path}`: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"the config file `{path}` is not valid TOML: {exc}", "fix its syntax") from None
    unknown = sorted(set(data) - {"defaults", "forced", "systems", "cpus", "profiles"})  # systems: cotainr's presets
    if unknown:
        raise InputError(
            f"{path}: unknown section [{unknown[0]}]",
            "config files hold [defaults], [forced], [cpus], [profiles.NAME] and [systems.NAME]",
        )
    return data


def check_value(key: str, value: Any, where: str, env: Mapping[str, str]) -> Any:
    if key not in KEYS:
        raise InputError(f"{where}: unknown key `{key}`", "known keys: " + ", ".join(KEYS))
    try:
        value = KEYS[key].check(value)
    except ValueError as exc:
        raise InputError(f"{where}: `{key}` {exc} (got {value!r})") from None
    return expand(value, env) if KEYS[key].check is _build_path else value


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read the config files and environment variables (not the command line)."""
    env = os.environ if env is None else env
    settings = {key: Setting(spec.default, "default") for key, spec in KEYS.items()}
    forced: dict[str, Setting] = {}
    files = []
    for layer, path, required in config_files(env):
        data = read_file(path, required)
        files.append((layer, str(path), data is not None))
        if data is None:
            continue
        for table in ("cpus", "profiles"):  # the files' tables add up, a later file's names win
            if table in data:
                found = check_value(table, data[table], f"{path} [{table}]", env)
                settings[table] = Setting({**settings[table].value, **found}, f"{layer} {path}")
        for section in ("defaults", "forced"):
            table = data.get(section, {})
            if not isinstance(table, dict):
                raise InputError(f"{path}: [{section}] must be a table")
            for key, value in table.items():
                value = check_value(key, value, f"{path} [{section}]", env)
                if section == "defaults":
                    settings[key] = Setting(value, f"{layer} {path}")
                elif key not in forced:  # the first (lowest, i.e. the system) file to force a key wins
                    forced[key] = Setting(value, f"{layer} {path}", forced=True)
    file_settings = {**settings, **forced}
    for key, spec in KEYS.items():
        if spec.env and env.get(spec.env):
            settings[key] = Setting(
                check_value(key, env[spec.env], f"environment variable {spec.env}", env), f"environment {spec.env}"
            )
    settings.update(forced)
    return Config(settings=settings, files=tuple(files), file_settings=file_settings)


# ---------------------------------------------------------------- for `sqenv create`
BUILD_OPTIONS = ("build_dir", "compression", "compression_level", "jobs", "mpi", "target_cpu")


def resolve_build_options(
    given: Mapping[str, Any], config: Config | None = None, ui: UI | None = None
) -> tuple[dict[str, Any], Config]:
    """`sqenv create`'s build options (and `mpi`) from the config: a value given on the command
    line (`given`, None when absent) wins over the configured defaults, a forced value over both
    (with a warning). Returns the values and the config they came from."""
    config = config or load_config()
    ui = ui or UI(level=QUIET if given.get("quiet") else NORMAL)
    values: dict[str, Any] = {}
    for key in BUILD_OPTIONS:
        value = given.get(key)
        value = config.get(key, None if value is None else str(value) if key == "build_dir" else value, ui)
        values[key] = Path(value) if key == "build_dir" and value is not None else value
    return values, config


# ---------------------------------------------------------------- for the launcher
def host_mpi_dirs(config: Config, env: Mapping[str, str] | None = None) -> list[str]:
    """Directories holding the host MPI libraries: the configured ones, else found on this node.

    Found: the Cray programming environment's CRAY_LD_LIBRARY_PATH (cray-mpich
    module loaded), else the directory of `libmpi.so*` known to `ldconfig`
    (symlinks resolved). A library in the system's default directories (Debian's
    OpenMPI) needs no path and gives none: prepending /usr/lib/... would shadow
    the environment's own libraries.
    """
    env = os.environ if env is None else env
    dirs: list[str] = []
    for entry in config.get("mpi_libraries"):
        directory = entry if not os.path.isfile(entry) else os.path.dirname(entry)
        if directory not in dirs:
            dirs.append(directory)
    if dirs:
        return dirs
    if env.get("CRAY_LD_LIBRARY_PATH"):
        return [d for d in dict.fromkeys(env["CRAY_LD_LIBRARY_PATH"].split(":")) if d]
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    system = False
    for line in out.splitlines():
        name, _, target = line.strip().partition(" => ")
        if name.startswith("libmpi.so") and target:
            directory = os.path.dirname(os.path.realpath(target))
            if re.fullmatch(r"/(usr/)?lib(64)?(/[^/]+-linux-gnu[^/]*)?", directory):
                system = True  # found by the loader anyway; prepending it would shadow the env's own libraries
            elif directory not in dirs:
                dirs.append(directory)
    if not dirs and not system:
        raise InputError(
            "`mpi = host` but no host MPI library was found",
            "load the site's MPI module first, or list its library directories in `mpi_libraries` (sqenv config)",
        )
    return dirs


def launcher_values(config: Config, mpi: str | None = None, ui: UI | None = None) -> dict[str, str]:
    """Plain values for the launcher header (`launchers.render(extra=...)`)."""
    config = config.from_files()
    mode = config.get("mpi", mpi, ui)
    prepend = ":".join(host_mpi_dirs(config)) if mode == "host" else ""
    binds = list(config.get("bind_paths"))
    if mode == "host":
        binds += [p for p in config.get("mpi_libraries") or prepend.split(":") if p not in binds]
    return {
        "SQENV_DEFAULT_ENGINE": config.get("engine"),
        "SQENV_LD_PREPEND": prepend,
        "SQENV_BIND_PATHS": ":".join(binds),
    }


def launcher_lines(config: Config) -> list[str]:
    """Header lines for the runtime settings: an environment variable of the user wins
    over the configured default, not over a forced value."""
    config = config.from_files()
    lines = []
    for key, var, env in (
        ("idle_timeout", "SQENV_IDLE", "SQENV_IDLE_TIMEOUT"),
        ("runtime_dir", "SQENV_RUNTIME", "SQENV_RUNTIME_DIR"),
        ("stage_dir", "SQENV_STAGE", "SQENV_STAGE_DIR"),
    ):
        setting = config.setting(key)
        value = "" if setting.value is None else str(setting.value)
        quoted = shlex.quote(value) if value else ""
        lines.append(f"{var}={quoted}" if setting.forced else f"{var}=${{{env}:-{quoted}}}")
    if config.setting("engine").forced:
        lines.append(f"SQENV_ENGINE={shlex.quote(config.get('engine'))}")
    return lines


def cache_dir() -> Path:
    """sqenv's cache: config `cache_dir` (or SQENV_CACHE_DIR), else ~/.cache/sqenv."""
    configured = load_config().get("cache_dir")
    base = configured or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sqenv")
    return Path(os.path.expanduser(base))
