"""MPI in conda environments: the host's library on the fast network, not one from the channel.

A conda MPI (`mpich`, `openmpi`, `impi_rt`, ...) bundles its own `libmpi`,
which on a Cray/Slingshot machine runs over TCP or not at all (LUMI measured
2,381 MB/s against 12,242 MB/s with the host's Cray MPICH). conda-forge
publishes "external" builds of mpich and openmpi (`mpich=*=external_*`) that
hold no library: mpi4py & co. then load the host's `libmpi` at run time,
which `--mpi host` puts first on the library path.

Three places use this module:
- the solve (worker side, `pin_external`): with `--mpi host`, a solution that
  holds an MPI implementation is solved again with every implementation
  constrained to its external build; a channel without one is an error naming
  the package and the choices;
- the build (`inspect`): what the environment will load at run time, recorded
  in the version (`mpi`), and a warning when it bundles a `libmpi` without
  `--mpi host`;
- `sqenv info` and `sqenv doctor PREFIX` (`runtime`, `problems`): which
  library a launch loads on this node, and whether its ABI family (MPICH ABI,
  `libmpi.so.12`, vs Open MPI, `libmpi.so.40`) is the one the packages expect.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from sqenv.errors import BuildError

#: MPI implementations conda channels ship -> the ABI family of their `libmpi`
IMPLEMENTATIONS: dict[str, str] = {
    "mpich": "mpich",
    "openmpi": "openmpi",
    "impi_rt": "mpich",
    "mvapich": "mpich",
    "mvapich2": "mpich",
}
ABI_NAMES = {"mpich": "MPICH ABI (libmpi.so.12)", "openmpi": "Open MPI ABI (libmpi.so.40)"}
_ABI_SHORT = {"mpich": "MPICH ABI", "openmpi": "Open MPI ABI"}
# libmpi.so.N, and Cray's per-compiler builds (libmpi_gnu_123.so.12); not the Fortran/C++ bindings
_SONAME = re.compile(r"libmpi(?:_(?:gnu|cray|intel|amd|aocc|nvidia|pgi)\w*)?\.so\.(\d+)")
_SONAME_ABI = {"12": "mpich", "40": "openmpi", "20": "openmpi"}


def is_external(build: str) -> bool:
    """conda-forge's dummy builds: `external_0`, `h..._external_...`."""
    return "external" in build


def abi_of(path: str) -> str | None:
    """ABI family of a `libmpi` by its soname (the resolved name of a `libmpi.so` link)."""
    names = [os.path.basename(path), os.path.basename(os.path.realpath(path))]
    for name in names:
        m = _SONAME.match(name)
        if m and m.group(1) in _SONAME_ABI:
            return _SONAME_ABI[m.group(1)]
    return None


# ------------------------------------------------------------ the solve (in the rattler worker)
async def pin_external(
    records: list,
    query: Callable[[list[str]], Awaitable[list]],
    resolve: Callable[[list[str]], Awaitable[list]],
    failure: Callable[..., Exception],
) -> list:
    """`records` of a solve again with every MPI implementation on its external build.

    `query(names)` gives the channels' records of those names, `resolve(constraints)`
    solves again with extra constraints, `failure(kind, message, **extra)` makes the
    worker's error."""
    bundled = [r for r in records if r.name.normalized in IMPLEMENTATIONS and not is_external(str(r.build))]
    if not bundled:
        return records
    available = {name: False for name in IMPLEMENTATIONS}
    for group in await query(list(IMPLEMENTATIONS)):
        for r in group:
            if is_external(str(r.build)):
                available[r.name.normalized] = True
    for r in bundled:
        name = r.name.normalized
        if not available[name]:
            users = sorted(
                o.name.normalized for o in records if any(d.split()[0] == name for d in (o.depends or []))
            )  # fmt: skip
            raise failure(
                "mpi-external",
                f"`--mpi host`: the channels have no external build of `{name}`, so its own libmpi "
                "would land in the image",
                name=name,
                needed_by=users,
                choices=[n for n, ok in available.items() if ok],
            )
    return await resolve([f"{name}[build=*external*]" for name in IMPLEMENTATIONS])


def explain(err: Mapping[str, Any]) -> BuildError:
    """The parent's message for the worker's `mpi-external` failure."""
    name, users, choices = err["name"], err.get("needed_by") or [], err.get("choices") or []
    message = err["message"] + (f" (needed by {', '.join(users)})" if users else "")
    hint = ""
    if choices:
        hint = "ask for an MPI the channels have an external build of: " + " or ".join(
            f"`{c}=*=external_*`" for c in choices
        )
        hint += "; or "
    else:
        hint = "use a channel with external MPI builds (conda-forge: `mpich=*=external_*`, `openmpi=*=external_*`); or "
    hint += f"build without `--mpi host` to use `{name}`'s own library"
    return BuildError(message, hint)


# ------------------------------------------------------------ the build
def bundled_libraries(root: Path) -> list[str]:
    """`lib/libmpi*.so*` of the environment (relative paths), real files and links alike."""
    lib = root / "lib"
    if not lib.is_dir():
        return []
    return sorted(f"lib/{p.name}" for p in lib.iterdir() if _SONAME.match(p.name) or p.name.startswith("libmpi.so"))


def inspect(root: Path, packages: list[dict], mode: str | None, warn: Callable[[str], None]) -> dict | None:
    """What MPI the environment loads at run time (the version's `mpi` record), warning
    when it bundles one without `--mpi host`; None when it holds no MPI at all."""
    impls = [p for p in packages if p["name"] in IMPLEMENTATIONS]
    libraries = bundled_libraries(root)
    if not impls and not libraries:
        return None
    impl = impls[0] if impls else None
    abi = IMPLEMENTATIONS[impl["name"]] if impl else next(filter(None, map(abi_of, libraries)), None)
    record: dict[str, Any] = {"mode": "host" if mode == "host" else "bundled", "abi": abi}
    if impl:
        record.update(implementation=impl["name"], version=impl["version"], build=impl["build"])
    if libraries:
        record["libraries"] = libraries
    if libraries and mode != "host":
        what = f" from {impl['name']} {impl['version']} ({impl['build']})" if impl else ""
        warn(
            f"this environment bundles its own MPI library, {', '.join(libraries)}{what}, which may not use the "
            "machine's fast network (LUMI: 2,381 MB/s vs 12,242 with the host's MPI); create it with `--mpi host` "
            "to use the host's MPI library"
        )
    return record


# ------------------------------------------------------------ run time: info and doctor
def host_libraries(dirs: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """`libmpi` files a launch would find on this node, in the loader's order: the install's
    host MPI directories (`mpi = host`), $LD_LIBRARY_PATH, then `ldconfig`'s cache."""
    env = os.environ if env is None else env
    found: list[str] = []
    search = [*dirs, *(d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d)]
    for directory in dict.fromkeys(search):
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        found += [os.path.join(directory, n) for n in names if _SONAME.fullmatch(n)]
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        name, _, target = line.strip().partition(" => ")
        if _SONAME.fullmatch(name.split()[0] if name else "") and target:
            found.append(target)
    return list(dict.fromkeys(found))


def runtime(record: Mapping[str, Any] | None, prefix: Path, dirs: list[str]) -> dict | None:
    """Which `libmpi` launches of this install load here: {mode, path, abi, expected}."""
    if not record:
        return None
    expected = record.get("abi")
    if record.get("mode") != "host":
        lib = (record.get("libraries") or [None])[0]
        return {"mode": "bundled", "path": str(prefix / lib) if lib else None, "abi": expected, "expected": expected}
    candidates = host_libraries(dirs)
    path = next((c for c in candidates if abi_of(c) == expected), candidates[0] if candidates else None)
    return {"mode": "host", "path": path, "abi": abi_of(path) if path else None, "expected": expected}


def describe(found: Mapping[str, Any]) -> str:
    """One line for `sqenv info`."""
    abi = _ABI_SHORT.get(found.get("abi") or "", "unknown ABI")
    if found["mode"] == "bundled":
        return f"bundled: {found['path']} ({abi})"
    if not found.get("path"):
        return "host: no libmpi found on this node (load the site's MPI module)"
    return f"host: {found['path']} ({abi})"


def problems(found: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(what is wrong, fix) for `sqenv doctor PREFIX`."""
    if not found or found["mode"] != "host":
        return []
    expected = ABI_NAMES.get(found.get("expected") or "", "an MPI")
    if not found.get("path"):
        return [(f"no host MPI library found (the environment needs the {expected})",
                 "load the site's MPI module (LUMI: `module load cray-mpich`) or set `mpi_libraries` in the "
                 "sqenv config")]  # fmt: skip
    if found.get("expected") and found.get("abi") != found["expected"]:
        got = ABI_NAMES.get(found.get("abi") or "", "an unknown ABI")
        what = f"the host MPI library {found['path']} has the {got}; the environment's packages need the {expected}"
        fix = ("load an MPI of that family (MPICH ABI: Cray MPICH, MPICH, Intel MPI; or Open MPI), or rebuild with "
               "the other implementation's external build (`mpich=*=external_*` / `openmpi=*=external_*`)")  # fmt: skip
        return [(what, fix)]
    return []
