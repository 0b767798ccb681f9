"""Tools sqenv starts die with it, however sqenv dies.

Every tool runs in its own process group (so Ctrl-C's handler can stop it and
all it started, see `ui.run`). That does not cover SIGKILL of sqenv, where no
handler runs, so two more things:

- the tool itself gets `PR_SET_PDEATHSIG(SIGKILL)` (set between fork and exec,
  kept across exec; `sqenv-enter` execs the real tool, so that is uv or
  mksquashfs itself): it dies the moment sqenv does; a tool run in Apptainer
  gets SIGTERM instead, so that Apptainer unmounts its image;
- a watchdog (`sh`, its own session, so a kill of sqenv's process group or a
  Ctrl-C does not reach it) holds the read end of a pipe only sqenv writes
  to. sqenv tells it each tool's process group as it starts and ends; when
  sqenv is gone the pipe reaches EOF and the watchdog SIGKILLs the groups
  still running: uv's build backends, compilers, the rattler worker (the
  Apptainer ones after a SIGTERM and up to 10 s to go).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess

from sqenv import snippets

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl  # resolved here: the child between fork and exec only calls it
_pipe: int | None = None


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """In the child (preexec_fn): `sig` when sqenv dies (SIGTERM for tools that must clean up:
    Apptainer, sqenv's image servers); exit at once if it already has."""
    _prctl(_PR_SET_PDEATHSIG, sig)
    if parent is not None and os.getppid() != parent:
        os._exit(137)


def _send(line: str) -> None:
    global _pipe
    if _pipe is None:
        read, write = os.pipe()  # both ends close-on-exec: no tool keeps the write end open
        try:
            subprocess.Popen(["/bin/sh", "-c", snippets.text("watchdog.sh")], stdin=read, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        except OSError:
            os.close(write)
            return
        finally:
            os.close(read)
        _pipe = write
    with contextlib.suppress(OSError):
        os.write(_pipe, line.encode())


def watch(pgid: int, graceful: bool = False) -> None:
    """Have the watchdog kill this process group if sqenv dies before `unwatch` (`graceful`:
    SIGTERM and up to 10 s first)."""
    _send(f"{'t' if graceful else '+'} {pgid}\n")


def unwatch(pgid: int) -> None:
    _send(f"- {pgid}\n")
