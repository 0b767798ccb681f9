"""Running the tools sqenv drives (uv, mksquashfs, users' scripts): one function, `run`.

It keeps a tool's output in a log file, shows its progress in the current phase
(`sqenv.tools.progress`), streams it by verbosity, stops it with everything it
started when sqenv is interrupted or dies (`sqenv.tools.procs`) and, when it
fails, raises an error whose headline is the cause (`sqenv.tools.diagnose`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from sqenv.errors import SqenvError, ToolMissing
from sqenv.tools import procs
from sqenv.tools.diagnose import Diagnosis, classify_generic, details
from sqenv.ui import DEBUG, UI, VERBOSE


class Progress(Protocol):
    """Reads a tool's output lines and says how far it got."""

    def feed(self, line: str) -> bool:
        """Take one line; True when it is only a progress frame (kept out of the log)."""
        ...

    def status(self) -> str: ...

    def summary(self) -> str: ...


def run(
    ui: UI,
    argv: Sequence[str],
    *,
    log: Path,
    error: type[SqenvError],
    what: str,
    hint: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    classify: Callable[[str, int], Diagnosis] | None = None,
    progress: Progress | None = None,
    stream: str | None = None,
    graceful: bool = False,
) -> str:
    """Run a tool; return its output. On failure raise `error` with the cause as its headline.

    `classify(output, exit status)` says why it failed (default: killed/out of memory, else its exit
    code); `progress` reads its lines for the live display; `stream`: show its lines as they come,
    prefixed with this word (users' scripts); `graceful`: if sqenv dies, the tool gets SIGTERM and
    time to clean up before SIGKILL (Apptainer, sqenv.tools.procs)."""
    ui.debug("$ " + " ".join(argv))
    out: list[str] = []
    try:
        # Its own process group, so an interrupt can stop the tool and
        # everything it started before the build directory is removed.
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            text=True,
            errors="replace",
            process_group=0,
            preexec_fn=functools.partial(
                procs.die_with_parent, os.getpid(), signal.SIGTERM if graceful else signal.SIGKILL
            ),
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"`{argv[0]}` is not installed", "run `sqenv doctor`") from exc
    procs.watch(proc.pid, graceful)  # killed with its group if sqenv dies (sqenv.tools.procs)
    try:
        with log.open("a") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            assert proc.stdout is not None
            for line in proc.stdout:
                _take(ui, line, fh, out, progress, stream)
            code = proc.wait()
    except OSError as exc:  # the log's own file system (sqenv's cache directory) is full
        stop(proc)
        if exc.errno != errno.ENOSPC:
            raise
        hint = "free space there, or set SQENV_CACHE_DIR to a directory on another file system"
        raise error(f"ran out of space writing sqenv's log `{log}`", hint) from None
    except BaseException:
        stop(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        procs.unwatch(proc.pid)
    text = "".join(out)
    if progress is not None and ui.current is not None:
        ui.current.summary = progress.summary()
    if code != 0:
        if code < 0 and code in (-2, -15):
            raise KeyboardInterrupt
        diag = (classify or (lambda o, c: classify_generic(o, c, what)))(text, code)
        chosen = hint if diag.kind == "failed" and hint else diag.hint
        raise error(diag.headline, chosen, details(diag.explanation, log))
    return text


STOP_GRACE = 10.0
"""Seconds an interrupted tool gets to clean up after SIGTERM (Apptainer unmounts its image, whose
FUSE server lives in another process group) before its group is SIGKILLed."""


def stop(proc: subprocess.Popen) -> None:
    """Stop an interrupted tool and its process group: SIGTERM, a grace period until the whole
    group is gone (the tool may exit first and its helpers still be cleaning up), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member that changed its uid: still there
        return True
    return True


def _take(ui: UI, line: str, fh, out: list[str], progress: Progress | None, stream: str | None) -> None:
    """One line of a tool's output: to the log, the progress display and (by verbosity) the screen."""
    if progress is not None and progress.feed(line):
        if ui.current is not None:
            ui.current.status = progress.status()
        return
    fh.write(line)
    out.append(line)
    if progress is not None and ui.current is not None:
        ui.current.status = progress.status()
    if stream is not None:
        ui.stream(stream, line.rstrip("\n"))
    elif ui.level >= DEBUG or (ui.level >= VERBOSE and not line.startswith(("DEBUG ", "TRACE "))):
        sys.stderr.write(line)
