"""`--target-cpu NAME`: build for the compute nodes' CPU, not the login node's.

Names are archspec's (`zen2`, `zen3`, `x86_64_v3`, ...), the build string of
the solver's `__archspec` virtual package: conda-forge's microarchitecture
builds (`_x86_64-microarch-level` 1..4) depend on it, so the solve picks the
builds made for that CPU. The site config may name its partitions' CPUs
(`[cpus]` table: `lumi-c = "zen2"`), so users pick by partition name.

At launch, the `sqenv-enter` helper checks the node's CPU has the target's
x86-64 level (`-C x86-64-v3`: the level conda-forge compiles such builds
for, `-march=x86-64-vN`), so a node without those instructions says so in one
line instead of `Illegal instruction`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

from sqenv.errors import UsageError

#: archspec names -> x86-64 microarchitecture level (psABI: v2 SSE4.2/POPCNT, v3 AVX2/FMA/BMI2, v4 AVX-512)
X86_64_LEVELS: dict[str, int] = {
    "x86_64": 1, "nocona": 1, "core2": 1, "k10": 1,
    "x86_64_v2": 2, "nehalem": 2, "westmere": 2, "sandybridge": 2, "ivybridge": 2,
    "bulldozer": 2, "piledriver": 2, "steamroller": 2,
    "x86_64_v3": 3, "haswell": 3, "broadwell": 3, "skylake": 3, "cannonlake": 3, "excavator": 3,
    "zen": 3, "zen2": 3, "zen3": 3, "mic_knl": 3,
    "x86_64_v4": 4, "skylake_avx512": 4, "cascadelake": 4, "icelake": 4, "sapphirerapids": 4,
    "zen4": 4, "zen5": 4,
}  # fmt: skip
#: archspec names of other families: recorded and given to the solver, not checked at launch
OTHER: dict[str, str] = {
    "aarch64": "aarch64", "armv8.1a": "aarch64", "armv8.2a": "aarch64", "neoverse_n1": "aarch64",
    "neoverse_v1": "aarch64", "neoverse_v2": "aarch64", "a64fx": "aarch64", "thunderx2": "aarch64",
    "ppc64le": "ppc64le", "power8le": "ppc64le", "power9le": "ppc64le", "power10le": "ppc64le",
}  # fmt: skip


#: archspec names whose GCC `-march` name differs (others: `_` -> `-`, e.g. `x86_64_v3` -> `x86-64-v3`)
_GCC = {
    "x86_64": "x86-64", "zen": "znver1", "zen2": "znver2", "zen3": "znver3", "zen4": "znver4", "zen5": "znver5",
    "bulldozer": "bdver1", "piledriver": "bdver2", "steamroller": "bdver3", "excavator": "bdver4",
    "k10": "amdfam10", "mic_knl": "knl", "icelake": "icelake-server",
}  # fmt: skip


def compiler_flag(name: str) -> str:
    """The GCC/Clang flag that compiles for `name` (`--optimize-sdists`): `-march=znver3`,
    `-march=x86-64-v3`; on aarch64 and ppc64le `-mcpu=` (GCC's spelling there)."""
    if name in X86_64_LEVELS:
        return f"-march={_GCC.get(name, name.replace('_', '-'))}"
    other = {"aarch64": "-march=armv8-a", "ppc64le": "-mcpu=power8", "thunderx2": "-mcpu=thunderx2t99"}
    if name in other:
        return other[name]
    if name.startswith("armv8."):  # armv8.2a -> -march=armv8.2-a
        return f"-march={name[:-1]}-{name[-1]}"
    return f"-mcpu={name.replace('_', '-').removesuffix('le')}"  # neoverse-v1, a64fx, power9


def family(name: str) -> str:
    return "x86_64" if name in X86_64_LEVELS else OTHER.get(name, "?")


def resolve(name: str | None, partitions: Mapping[str, str], machine: str | None = None) -> str | None:
    """The archspec name for `--target-cpu` / config `target_cpu` (a partition name of the
    site config's `[cpus]` table is replaced by its CPU); None: the build host's."""
    if name is None:
        return None
    cpu = partitions.get(name, name)
    if cpu not in X86_64_LEVELS and cpu not in OTHER:
        known = ", ".join(["x86_64", "x86_64_v2", "x86_64_v3", "x86_64_v4", "zen2", "zen3", "zen4", "haswell",
                           "skylake_avx512", "neoverse_v1"])  # fmt: skip
        where = f" or a partition of the site config ({', '.join(sorted(partitions))})" if partitions else ""
        raise UsageError(f"unknown target CPU `{name}`", f"use an archspec name ({known}, ...){where}")
    machine = machine or platform.machine()
    if family(cpu) != machine:
        raise UsageError(
            f"target CPU `{cpu}` is a {family(cpu)} CPU, but this machine builds for {machine}",
            "build on a machine of the compute nodes' architecture, or drop `--target-cpu`",
        )
    return cpu


def check_level(name: str | None) -> str | None:
    """What the launch checks (`sqenv-enter -C LEVEL`): `x86-64-v2`..`v4`; None for
    baseline x86-64 and other families."""
    level = X86_64_LEVELS.get(name or "")
    return f"x86-64-v{level}" if level and level >= 2 else None
