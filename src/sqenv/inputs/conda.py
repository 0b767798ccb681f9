"""Conda inputs: environment.yml, explicit files, locks and match specs, checked before any build.

Everything that can be checked without the network is checked here, so bad
input fails at once with the file, line and column named: YAML syntax, the
shape of the file, match specs (rattler's own parser), `variables` names,
`pip:` lines and the `-r` files they include, the platform of an explicit file.
What only the channels can tell (a package that does not exist, a set that
cannot be solved) is reported by the builder (`sqenv.builders.conda.create`).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from sqenv.errors import InputError, PrefixError, UsageError
from sqenv.inputs import BuildSpec, CondaInputs, PipInputs
from sqenv.inputs.requirements import check_file, check_spec, read_input

if TYPE_CHECKING:
    from sqenv.inputs.request import CreateRequest

DEFAULT_ALIAS = "https://conda.anaconda.org"
DEFAULT_CHANNELS = ("conda-forge",)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MACHINES = {"x86_64": "linux-64", "aarch64": "linux-aarch64", "ppc64le": "linux-ppc64le", "s390x": "linux-s390x"}


def host_platform() -> str:
    """The conda platform this machine builds for (the image runs on the same kind of node)."""
    machine = platform.machine()
    if machine not in _MACHINES:
        raise InputError(f"conda environments are not supported on `{machine}` machines")
    return _MACHINES[machine]


def pkgs_dir(requested: Path | None) -> Path:
    """The package cache: --pkgs-dir > SQENV_PKGS_DIR > ~/.cache/sqenv/pkgs (SQENV_CACHE_DIR moves it)."""
    from sqenv.config import cache_dir

    chosen = requested or os.environ.get("SQENV_PKGS_DIR")
    return Path(chosen).expanduser().absolute() if chosen else cache_dir() / "pkgs"


def channel_url(channel: str, alias: str = DEFAULT_ALIAS) -> str:
    """A channel as rattler takes it: names under the alias, URLs as they are, directories as file:// URLs."""
    if "://" in channel:
        return channel.rstrip("/")
    path = Path(channel).expanduser()
    if channel.startswith(("/", "./", "../", "~")) or channel in (".", "..") or path.is_dir():
        if not (path / "noarch").is_dir():
            raise InputError(
                f"channel directory `{channel}` is not a conda channel (no `noarch/` subdirectory)",
                "index it first (e.g. `rattler-index fs DIR`), or check the path",
            )
        return path.resolve().as_uri()
    return f"{alias.rstrip('/')}/{channel.strip('/')}"


def channel_name(url: str, alias: str = DEFAULT_ALIAS) -> str:
    """The short form of a channel URL for display and export (`conda-forge`), else the URL."""
    url = url.rstrip("/")
    prefix = alias.rstrip("/") + "/"
    return url[len(prefix) :] if url.startswith(prefix) else url


def check_match_spec(text: str, where: str) -> None:
    """rattler's own parser (pure parsing: safe in this process, unlike rattler's async calls)."""
    from rattler import MatchSpec

    try:
        MatchSpec(text)
    except Exception as exc:
        raise InputError(
            f"{where}: `{text}` is not a valid conda match spec ({exc})",
            "write it as `name`, `name=1.2`, `name>=1.2,<2` or `name=1.2=build`",
        ) from None


def _read(path: Path, what: str) -> str:
    return read_input(path, what)


# ------------------------------------------------------------ environment.yml
@dataclass
class EnvironmentFile:
    channels: list[str] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)
    pip: list[str] = field(default_factory=list)
    variables: list[tuple[str, str]] = field(default_factory=list)


def _load_yaml(path: Path, text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(
            f"`{path}` is not valid YAML{where}: {problem}",
            "check the indentation and the `- ` list markers around that line",
        ) from None


def _pip_line(line: str, base: Path, where: str) -> str:
    """One `pip:` entry as a requirements-file line; `-r`/`-c` files and local paths made absolute."""
    line = line.strip()
    option, _, value = line.replace("=", " ", 1).partition(" ") if line.startswith("-") else ("", "", "")
    if option in ("-r", "--requirement", "-c", "--constraint"):
        target = (base / value.strip()).resolve()
        check_file(target)
        return f"{option} {target}"
    if option in ("-e", "--editable") and value.strip().startswith((".", "/")):
        return f"{option} {(base / value.strip()).resolve()}"
    if option:
        return line
    if line.startswith(("./", "../")):
        return str((base / line).resolve())
    check_spec(line, where)
    return line


def read_environment_file(path: Path) -> EnvironmentFile:
    """Parse an environment.yml (`name` and `prefix` are ignored: PREFIX says where)."""
    data = _load_yaml(path, _read(path, "environment file"))
    if not isinstance(data, dict):
        raise InputError(f"`{path}` is not an environment file (expected keys `channels`, `dependencies`)")
    env = EnvironmentFile()
    channels = data.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise InputError(f"`{path}`: `channels` must be a list of channel names or URLs")
    env.channels = list(channels)
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise InputError(f"`{path}`: `dependencies` must be a list")
    for i, dep in enumerate(deps, 1):
        where = f"{path}: dependency {i}"
        if isinstance(dep, dict) and set(dep) == {"pip"}:
            if not isinstance(dep["pip"], list):
                raise InputError(f"{where}: `pip:` must be a list of requirements")
            for j, line in enumerate(dep["pip"], 1):
                if not isinstance(line, str):
                    raise InputError(f"{where}: `pip:` entry {j} ({line!r}) is not a requirement string")
                env.pip.append(_pip_line(line, path.parent, f"{path}: pip entry {j}"))
        elif isinstance(dep, (str, int, float)) and not isinstance(dep, bool):
            check_match_spec(str(dep), where)
            env.specs.append(str(dep))
        else:
            raise InputError(f"{where} ({dep!r}) is neither a match spec nor a `pip:` list")
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise InputError(f"`{path}`: `variables` must be a mapping of NAME: value")
    for name, value in variables.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(f"`{path}`: `{name}` is not a valid environment variable name")
        if value is None or isinstance(value, (dict, list)):
            raise InputError(f"`{path}`: variable `{name}` must have a plain value")
        env.variables.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
    return env


# ------------------------------------------------------------ explicit and lock files
def file_kind(path: Path) -> str:
    """`explicit` (@EXPLICIT), `lock` (a rattler/pixi lock) or `yml`."""
    text = _read(path, "file")
    lines = [line.strip() for line in text.splitlines()]
    if "@EXPLICIT" in lines:
        return "explicit"
    keys = {line.split(":", 1)[0] for line in lines if line and not line[0].isspace() and ":" in line}
    if "version" in keys and ({"environments", "package"} & keys):
        return "lock"
    return "yml"


def read_explicit(path: Path, host: str) -> list[tuple[str, str | None]]:
    """The (url, hash) pairs of an explicit file, checked for this machine's platform."""
    entries: list[tuple[str, str | None]] = []
    explicit = False
    for number, raw in enumerate(_read(path, "explicit file").splitlines(), 1):
        line = raw.strip()
        header = re.match(r"#\s*platform:\s*(\S+)", line)
        if header and header.group(1) not in (host, "noarch"):
            raise InputError(
                f"`{path}` is an explicit file for {header.group(1)}; this machine builds {host}",
                f"export the environment for {host} (`conda list --explicit` on such a machine, "
                f"or `conda-lock -p {host}`), or build from the environment.yml instead",
            )
        if not line or line.startswith("#"):
            continue
        if line == "@EXPLICIT":
            explicit = True
            continue
        if not explicit or "://" not in line:
            raise InputError(f"{path}:{number}: `{line}` is not a package URL", "explicit files list one URL a line")
        url, _, digest = line.partition("#")
        subdir = url.rsplit("/", 2)[-2] if url.count("/") >= 2 else ""
        if subdir not in (host, "noarch"):
            raise InputError(
                f"{path}:{number}: `{url.rsplit('/', 1)[-1]}` is a package for {subdir}; this machine builds {host}",
                "use an explicit file made for this platform",
            )
        entries.append((url, digest or None))
    if not entries:
        raise InputError(f"`{path}` lists no packages")
    return entries


def lock_from_prefix(prefix: Path) -> tuple[str, dict, dict]:
    """(kind, current version record, inputs) of an existing install, for `--from PREFIX`."""
    from sqenv.publish import metadata
    from sqenv.publish.layout import Install

    data = metadata.load(Install.open(prefix).metadata)
    version = metadata.current(data)
    if data["kind"] == "conda" and not version.get("lock"):
        raise PrefixError(f"`{prefix}` has no conda lock in its metadata", "rebuild it from its environment file")
    if data["kind"] not in ("conda", "pip"):
        raise UsageError(f"`--from` cannot rebuild a {data['kind']} install")
    return data["kind"], version, version.get("inputs") or {}


# ------------------------------------------------------------ the spec
def _pins(version: dict) -> tuple[str, ...]:
    return tuple(f"{p['name']}=={p['version']}" for p in version.get("packages", []) if p.get("manager") == "pip")


def _from_spec(request: CreateRequest, common: dict, conda: dict) -> BuildSpec:
    """`--from PREFIX_OR_LOCK`: the exact set again, no solving."""
    if request.file or request.packages or request.channels or request.requirement_files:
        raise UsageError(
            "`--from` rebuilds exactly what the lock says and takes no other packages, channels or files",
            "drop `-f`, `-c`, `-r` and the package arguments, or drop `--from`",
        )
    source: Path = request.lock_from
    if source.is_dir():
        kind, version, inputs = lock_from_prefix(source)
        if kind == "pip":
            python = request.python or (version.get("python") or {}).get("executable")
            made_on = (version.get("python") or {}).get("version")
            base = version.get("base_image") or {}
            if base and common["base_image"] is None:  # a layer: again on the image it was made on
                common = {**common, "base_image": Path(base["path"]), "base_image_ref": bool(base.get("referenced"))}
            pip = PipInputs(packages=_pins(version), python=python, python_version=made_on,
                            compile_tests=request.compile_tests)  # fmt: skip
            return BuildSpec(kind="pip", pip=pip, **common)
        old = inputs.get("conda") or {}
        variables = tuple((str(k), str(v)) for k, v in old.get("variables", []))
        lock = version["lock"]
        return BuildSpec(
            kind="conda",
            conda=CondaInputs(
                lock_from=source.absolute(),
                channels=tuple(lock.get("channels", ())),
                pip_requirements=_pins(version),
                variables=variables,
                **conda,
            ),
            **common,
        )
    kind = file_kind(source)
    if kind == "explicit":
        read_explicit(source, host_platform())
    elif kind != "lock":
        raise InputError(
            f"`{source}` is neither an install, an explicit file (@EXPLICIT) nor a lock file",
            "give `--from` an install prefix, a `sqenv export --format explicit` file or a pixi/rattler lock",
        )
    return BuildSpec(kind="conda", conda=CondaInputs(lock_from=source.absolute(), **conda), **common)


def conda_spec(request: CreateRequest) -> BuildSpec:
    """The plan of a conda build from `sqenv create`'s request (`inputs.request.plan`)."""
    if request.python or request.system_site_packages:
        raise UsageError(
            "`--python` and `--system-site-packages` are for pip environments",
            "a conda environment brings its own Python: add `python=3.12` (say) to the packages",
        )
    if request.compile_tests:
        raise UsageError("`--compile-tests` is for pip environments (conda packages bring their byte code)",
                         "drop `--compile-tests`")  # fmt: skip
    from sqenv.inputs.request import common as request_common  # (request imports this module lazily too)

    common = request_common(request)
    alias = request.channel_alias or os.environ.get("SQENV_CHANNEL_ALIAS") or DEFAULT_ALIAS
    conda = {
        "channel_alias": alias,
        "offline": request.offline,
        "cache_dir": pkgs_dir(request.pkgs_dir),
    }
    if request.lock_from:
        return _from_spec(request, common, conda)
    for path in request.requirement_files:
        check_file(path)
    specs: list[str] = []
    channels: list[str] = []
    pip: list[str] = []
    variables: list[tuple[str, str]] = []
    environment_file = explicit_file = None
    if request.file:
        kind = file_kind(request.file)
        if kind == "explicit":
            read_explicit(request.file, host_platform())
            explicit_file = request.file.absolute()
        elif kind == "lock":
            raise UsageError(f"`{request.file}` is a lock file", f"rebuild from it with `--from {request.file}`")
        else:
            env = read_environment_file(request.file)
            environment_file = request.file.absolute()
            specs, channels, pip, variables = env.specs, env.channels, env.pip, env.variables
    if explicit_file and request.packages:
        raise UsageError("an explicit file lists the whole environment: give no other packages with it")
    for i, spec in enumerate(request.packages, 1):
        check_match_spec(spec, f"package argument {i}")
    specs += request.packages
    channels = list(request.channels) + [c for c in channels if c not in request.channels]
    channels = [c for c in channels if c != "nodefaults"]
    if "defaults" in channels:
        raise InputError(
            "the `defaults` channel (Anaconda's repository, under Anaconda's terms of service) is not used by sqenv",
            "replace it with `conda-forge` (or a mirror's URL) in the channels",
        )
    if not specs and not explicit_file:
        raise UsageError("nothing to install", "give match specs, or an environment file with `dependencies`")
    urls = tuple(channel_url(c, alias) for c in (channels or DEFAULT_CHANNELS))
    return BuildSpec(
        kind="conda",
        conda=CondaInputs(
            environment_file=environment_file,
            explicit_file=explicit_file,
            specs=tuple(specs),
            channels=urls,
            pip_requirements=tuple(pip),
            pip_requirement_files=tuple(p.absolute() for p in request.requirement_files),
            variables=tuple(variables),
            **conda,
        ),
        **common,
    )
