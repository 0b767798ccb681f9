"""The CPU a conda environment was solved for: recorded in the lock, checked at launch.

With `--target-cpu NAME` (or the config's `target_cpu`) the solve used
`__archspec=1=NAME` and every launch checks the node has that CPU's x86-64
level. Without it the solve used the build host's CPU, which is recorded too;
launches then check only what the packages need: the level of an installed
`_x86_64-microarch-level` package (conda-forge's microarchitecture builds), so
an environment without such builds runs anywhere, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqenv.inputs.cpu import check_level

MICROARCH_PACKAGE = "_x86_64-microarch-level"


@dataclass(frozen=True)
class Target:
    lock: dict = field(default_factory=dict)  # target_cpu, target_cpu_from
    level: str | None = None  # what launches check (`sqenv-enter -C LEVEL`)


def target_record(explicit: str | None, virtual: list[str], packages: list[dict]) -> Target:
    """`virtual`: the solve's virtual packages (`__archspec=1=zen3`); empty for a lock rebuild."""
    microarch = next((p for p in packages if p["name"] == MICROARCH_PACKAGE), None)
    needed = f"x86-64-v{microarch['version']}" if microarch and microarch["version"] in ("2", "3", "4") else None
    if explicit:
        return Target({"target_cpu": explicit, "target_cpu_from": "--target-cpu"}, check_level(explicit) or needed)
    host = next((v.split("=")[2] for v in virtual if v.startswith("__archspec=") and v.count("=") == 2), None)
    lock = {"target_cpu": host, "target_cpu_from": "build host"} if host else {}
    return Target(lock, needed)
