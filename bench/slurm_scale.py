"""Launch overhead at scale: 128 tasks on one node through sqenv's launcher vs the plain interpreter.

    python bench/slurm_scale.py [--prefix PREFIX] [--tasks 128] [--rounds 5] [--user NAME]

Times `srun -n TASKS --overcommit PREFIX/bin/python -c pass` against
`srun -n TASKS --overcommit /usr/bin/python3 -c pass` (warm: the image is mounted
by a first, untimed run; rounds interleaved; median), and one launch without
srun (median of 20). Without --prefix a small env (six) is built in /var/tmp.
Needs a running Slurm (tests/infra/slurm.sh start).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "/usr/bin/python3"


def as_user(argv: list[str], user: str | None) -> list[str]:
    if not user:
        return argv
    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--", *argv]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, help="an existing sqenv install (default: build one)")
    parser.add_argument("--tasks", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--user", help="run the tasks as this (non-root) user")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SQENV_IDLE_TIMEOUT"] = "120"  # stays mounted (warm) for the whole benchmark
    tmp = None
    prefix = args.prefix
    if prefix is None:
        tmp = Path(tempfile.mkdtemp(prefix="sqenv-bench-", dir="/var/tmp"))
        tmp.chmod(0o755)
        prefix = tmp / "env"
        print(f"building {prefix} ...", file=sys.stderr)
        build = [sys.executable, "-m", "sqenv", "create", str(prefix), "six", "--python", BASE, "-q"]
        subprocess.run(build, check=True)
    try:
        srun = ["srun", "-n", str(args.tasks), "--overcommit"]
        wrapped = as_user([*srun, f"{prefix}/bin/python", "-c", "pass"], args.user)
        plain = as_user([*srun, BASE, "-c", "pass"], args.user)
        timed(wrapped, env)  # mount (cold), untimed
        timed(plain, env)
        sq, py = [], []
        for _ in range(args.rounds):
            sq.append(timed(wrapped, env))
            py.append(timed(plain, env))
        one_sq = [timed(as_user([f"{prefix}/bin/python", "-c", "pass"], args.user), env) for _ in range(20)]
        one_py = [timed(as_user([BASE, "-c", "pass"], args.user), env) for _ in range(20)]
        m_sq, m_py = statistics.median(sq), statistics.median(py)
        print(f"srun -n {args.tasks} --overcommit, median of {args.rounds} (warm):")
        print(f"  sqenv launcher  {m_sq:6.2f} s   ({', '.join(f'{t:.2f}' for t in sq)})")
        print(f"  {BASE} {m_py:6.2f} s   ({', '.join(f'{t:.2f}' for t in py)})")
        print(
            f"  overhead        {m_sq - m_py:+6.2f} s in all = {(m_sq - m_py) / args.tasks * 1000:+.1f} ms per task "
            f"(on {os.cpu_count()} CPUs)"
        )
        s1, p1 = statistics.median(one_sq), statistics.median(one_py)
        print(
            f"one launch without srun, median of 20: sqenv {s1 * 1000:.1f} ms, plain {p1 * 1000:.1f} ms, "
            f"overhead {(s1 - p1) * 1000:+.1f} ms"
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
