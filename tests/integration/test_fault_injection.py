"""SIGKILL at every rename/unlink of publish (strace inject) and at seeded random moments of
create, create --force and update: PREFIX always runs the old or the new version, and after the
next command no hidden sibling, lock file, build tree or process of the run remains.

All as the ordinary test user, on small envs (`six`, Debian's Python). The random kills are seeded
(SQENV_FAULT_SEED, default 9) so a failure can be replayed; the delays are drawn up to the length
of an unkilled run, measured first (a bound for the draw, not an assertion).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import BASE_PYTHON, SQENV, User, need, ok, run

SYSCALLS = ("rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir")


@pytest.fixture
def area(user: User) -> Path:
    """A directory of the test user's, unique to this test: the prefix's parent, cwd and build dir."""
    path = Path("/var/tmp") / f"sqenv-fault-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(mode=0o755)
    os.chown(path, user.uid, user.gid)
    for sub in ("build", "cwd"):
        (path / sub).mkdir()
        os.chown(path / sub, user.uid, user.gid)
    yield path
    run(["rm", "-rf", str(path)], user=user)


def create_argv(prefix: Path, *pkgs: str, force: bool = False) -> list[str]:
    extra = ["--force"] if force else []
    return [*SQENV, "create", str(prefix), *pkgs, "--python", BASE_PYTHON, "--build-dir",
            str(prefix.parent / "build"), "-q", *extra]  # fmt: skip


def works(prefix: Path, user: User) -> bool:
    proc = run([str(prefix / "bin" / "python"), "-c", "import six; print(six.__name__)"], user=user)
    return proc.returncode == 0 and proc.stdout.strip() == "six"


def leftovers(prefix: Path) -> list[str]:
    """Hidden siblings, lock, journal; build trees; processes whose cwd is the run's cwd."""
    found = [n for n in os.listdir(prefix.parent) if n.startswith(f".{prefix.name}.sqenv-")]
    found += [f"build/{n}" for n in os.listdir(prefix.parent / "build")]
    cwd = str(prefix.parent / "cwd")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == cwd:
                found.append(f"process {pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()[:80]!r}")
        except OSError:
            continue
    return found


def test_kill_at_each_rename_and_unlink_of_publish(area: Path, user: User) -> None:
    """create --force over an install, killed at each rename/unlink that touches PREFIX or its siblings."""
    need("strace")
    prefix = area / "env"
    ok(run(create_argv(prefix, "six"), user=user, cwd=area / "cwd"))
    log = area / "strace.log"
    trace = ["strace", "-y", "-o", str(log), "-e", f"trace={','.join(SYSCALLS)}"]
    ok(run([*trace, *create_argv(prefix, "six", force=True)], user=user, cwd=area / "cwd"))
    # the calls of the publish step: those naming PREFIX, its hidden siblings, lock or journal
    counts: dict[str, int] = {}
    points = []
    for line in log.read_text().splitlines():
        m = re.match(r"(\w+)\(", line)
        if not m or m.group(1) not in SYSCALLS:
            continue
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        if f"/.{prefix.name}.sqenv-" in line or f'{prefix}"' in line or f"{prefix}>" in line:
            points.append((m.group(1), counts[m.group(1)]))
    assert any(name == "renameat2" for name, _ in points), log.read_text()[-2000:]
    renames = [p for p in points if p[0].startswith("rename")]
    unlinks = [p for p in points if not p[0].startswith("rename")]
    spread = unlinks[:: max(1, len(unlinks) // 3)] + unlinks[-1:]
    for mode in ("exchange", "journal"):
        env = {"SQENV_TEST_NO_RENAME_EXCHANGE": "1"} if mode == "journal" else {}
        # the journal path (no RENAME_EXCHANGE): its renames; strace counts each syscall separately
        chosen = (
            renames + spread
            if mode == "exchange"
            else [p for p in renames if p[0] != "renameat2"]
            + [("rename", renames[-1][1] + 1 if renames[-1][0] == "rename" else 1)]
        )
        for name, when in dict.fromkeys(chosen):
            inject = [
                "strace",
                "-o",
                "/dev/null",
                "-e",
                f"trace={name}",
                "-e",
                f"inject={name}:signal=SIGKILL:when={when}",
            ]
            proc = run([*inject, *create_argv(prefix, "six", force=True)], user=user, env=env, cwd=area / "cwd")
            what = f"{mode}: SIGKILL at {name} #{when} (exit {proc.returncode})"
            if mode == "exchange":
                assert works(prefix, user), what  # at every instant: the old or the new install
            ok(run(create_argv(prefix, "six", force=True), user=user, cwd=area / "cwd"))  # the next command
            assert works(prefix, user), what
            assert leftovers(prefix) == [], what


def test_kill_at_random_moments(area: Path, user: User) -> None:
    """>= 20 seeded SIGKILLs (of sqenv alone, or of its process group) during create, create --force and update."""
    need("mksquashfs")
    rng = random.Random(int(os.environ.get("SQENV_FAULT_SEED", "9")))
    prefix = area / "env"
    cwd = area / "cwd"
    start = time.monotonic()
    ok(run(create_argv(prefix, "six"), user=user, cwd=cwd))
    span = time.monotonic() - start
    has_idna = False
    for i in range(21):
        kind = ("create", "create --force", "update")[i % 3]
        if kind == "create":
            run(["rm", "-rf", str(prefix)], user=user)
            argv = create_argv(prefix, "six")
        elif kind == "create --force":
            argv = create_argv(prefix, "six", force=True)
        else:
            change = ["--remove", "idna"] if has_idna else ["idna"]
            argv = [*SQENV, "update", str(prefix), *change, "--build-dir", str(area / "build"), "-q"]
        proc = subprocess.Popen(user.wrap(argv), env=user.env(), cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        time.sleep(rng.uniform(0, span))
        group = i % 2 == 1
        try:
            # setpriv execs sqenv: this pid is sqenv's, and its session/group id too
            os.killpg(proc.pid, signal.SIGKILL) if group else os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = proc.wait()
        what = f"#{i} {kind}, SIGKILL of the {'group' if group else 'process'} (exit {code})"
        if kind != "create" or prefix.exists():
            assert works(prefix, user), what
        # the next command of the prefix: it sweeps what the killed one left
        ok(run(create_argv(prefix, "six", force=True), user=user, cwd=cwd))
        has_idna = False
        assert works(prefix, user), what
        assert leftovers(prefix) == [], what
