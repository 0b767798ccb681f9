"""What an install needs from the node it runs on: its MPI library and its CPU.

`sqenv info` shows it, `sqenv doctor PREFIX` checks it on the node. Both read
the install's version record (`mpi`, the lock's `target_cpu`) and its
launcher header (the host MPI directories and CPU level launches really use).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from sqenv.builders.conda import mpi
from sqenv.publish import header


def _header(prefix: Path) -> header.LauncherHeader:
    try:
        return header.read(prefix / "launcher")
    except OSError:
        return header.LauncherHeader()


def summary(prefix: Path, version: dict) -> dict[str, Any]:
    """{"mpi": {mode, path, abi, expected} or None, "target_cpu", "target_cpu_from", "cpu_check"}."""
    head = _header(prefix)
    dirs = [d for d in (head.get("SQENV_LD_PREPEND") or "").split(":") if d]
    lock = version.get("lock") or {}
    target = lock.get("target_cpu") or version.get("target_cpu")
    return {
        "mpi": mpi.runtime(version.get("mpi"), prefix, dirs),
        "target_cpu": target,
        "target_cpu_from": lock.get("target_cpu_from") or version.get("target_cpu_from"),
        "cpu_check": head.get("SQENV_CPU_LEVEL") or None,
    }


def lines(found: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows for `sqenv info`."""
    rows = []
    if found.get("mpi"):
        rows.append(("mpi", mpi.describe(found["mpi"])))
    if found.get("target_cpu"):
        check = f", launches check {found['cpu_check']}" if found.get("cpu_check") else ""
        rows.append(("target cpu", f"{found['target_cpu']} ({found.get('target_cpu_from') or 'recorded'}{check})"))
    return rows


def problems(prefix: Path, version: dict) -> list[tuple[str, str]]:
    """(what is wrong, fix) for `sqenv doctor PREFIX`: the host MPI it needs."""
    return mpi.problems(summary(prefix, version)["mpi"])


def doctor(prefix: Path) -> list[tuple[bool, str, str, str | None]]:
    """`sqenv doctor PREFIX`'s checks of this node for the install: (ok, what, text, fix).
    The MPI: the host library found, its ABI family matching. The CPU: the launch's own
    check (`sqenv-enter --check-cpu LEVEL`, by the install's helper)."""
    from sqenv.publish import metadata

    version = metadata.current(metadata.load(prefix / "sqenv.json"))
    found = summary(prefix, version)
    out: list[tuple[bool, str, str, str | None]] = [(False, "mpi", w, f) for w, f in mpi.problems(found["mpi"])]
    if found["mpi"] and not out:
        out.append((True, "mpi", mpi.describe(found["mpi"]), None))
    if found["cpu_check"]:
        proc = subprocess.run([str(prefix / "sqenv-enter"), "--check-cpu", found["cpu_check"]],
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            out.append((False, "cpu", proc.stderr.strip().removeprefix("sqenv: "), None))
        else:
            out.append((True, "cpu", f"this CPU has {found['cpu_check']} (target {found['target_cpu']})", None))
    return out
