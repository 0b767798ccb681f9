"""What the user sees: progress and messages on stderr, data on stdout.

On a terminal each phase shows a rich spinner; otherwise one plain line per
phase, so batch logs stay readable. `-v` streams the tools' own output, `-q`
keeps only errors. Tools run through `run()`, which keeps their output in a
log file and, when they fail, shows the last lines that explain why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sqenv.errors import SqenvError, ToolMissing

QUIET, NORMAL, VERBOSE = 0, 1, 2


@dataclass
class UI:
    """Verbosity-aware output to stderr."""

    level: int = NORMAL
    console: Console | None = None

    def __post_init__(self) -> None:
        if self.console is None:
            self.console = Console(stderr=True, highlight=False, soft_wrap=True, no_color="NO_COLOR" in os.environ)

    @property
    def fancy(self) -> bool:
        return self.level == NORMAL and self.console.is_terminal

    def info(self, message: str) -> None:
        if self.level >= NORMAL:
            self.console.print(message, markup=False)

    def detail(self, message: str) -> None:
        if self.level >= VERBOSE:
            self.console.print(message, markup=False, style="dim")

    def warn(self, message: str) -> None:
        if self.level >= NORMAL:
            self.console.print(f"warning: {message}", markup=False, style="yellow")

    def error(self, err: SqenvError) -> None:
        self.console.print(f"error: {err.message}", markup=False, style="bold red")
        if err.details:
            self.console.print(err.details, markup=False)
        if err.hint:
            self.console.print(f"\nhint: {err.hint}", markup=False)

    @contextlib.contextmanager
    def phase(self, title: str) -> Iterator[None]:
        """Show a phase while it runs and how long it took."""
        start = time.monotonic()
        shown = escape(title)  # paths and script names are not markup (`[/x]` would crash rich)
        if self.fancy:
            with self.console.status(shown + " ..."):
                yield
        else:
            if self.level >= NORMAL:
                self.console.print(f"{title} ...", markup=False)
            yield
        if self.level >= NORMAL:
            self.console.print(f"[green]✓[/] {shown} ({time.monotonic() - start:.1f} s)")


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
    tail: int = 15,
) -> str:
    """Run a tool; return its output. On failure raise `error` with the log's tail."""
    ui.detail("$ " + " ".join(argv))
    lines: deque[str] = deque(maxlen=tail)
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
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"`{argv[0]}` is not installed", "run `sqenv doctor`") from exc
    try:
        with log.open("a") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                out.append(line)
                lines.append(line.rstrip("\n"))
                if ui.level >= VERBOSE:
                    sys.stderr.write(line)
            code = proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    text = "".join(out)
    if code != 0:
        if code < 0 and code in (-2, -15):
            raise KeyboardInterrupt
        details = "\n".join("  | " + line for line in lines)
        raise error(f"{what} failed (exit code {code}); full log: {log}", hint, details)
    return text
