"""What the user sees: progress and messages on stderr, data on stdout.

On a terminal each phase shows a live line: a spinner, what the tool reports
(packages resolved/downloaded/installed, the pack's percentage) and the elapsed
time, refreshed several times a second; otherwise one plain line per phase, so
batch logs stay readable. Users' scripts are streamed (prefixed) at normal
verbosity; `-v` streams the tools' own output, `-vv` also sqenv's internal
command lines and uv's debug lines; `-q` keeps only errors. Tools run through
`run()`, which keeps their output in a log file and, when they fail, raises an
error whose headline is the cause (`sqenv.diagnose`). Text from users and tools
(paths, script output) is never read as rich markup.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.text import Text

from sqenv import procs
from sqenv.diagnose import Diagnosis, classify_generic, details
from sqenv.errors import SqenvError, ToolMissing

QUIET, NORMAL, VERBOSE, DEBUG = 0, 1, 2, 3


class Progress(Protocol):
    """Reads a tool's output lines and says how far it got."""

    def feed(self, line: str) -> bool:
        """Take one line; True when it is only a progress frame (kept out of the log)."""
        ...

    def status(self) -> str: ...

    def summary(self) -> str: ...


@dataclass
class Phase:
    """One step on the screen: its title, the latest status of its tool and when it started."""

    title: str
    start: float = field(default_factory=time.monotonic)
    status: str = ""
    summary: str = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __rich__(self) -> Text:
        # re-rendered on every refresh of the live display, so the elapsed time keeps moving
        line = Text(self.title + " ...")
        if self.status:
            line.append("  " + self.status, style="cyan")
        line.append(f"  {self.elapsed():.0f} s", style="dim")
        return line


@dataclass
class UI:
    """Verbosity-aware output to stderr."""

    level: int = NORMAL
    console: Console | None = None
    current: Phase | None = None

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

    def debug(self, message: str) -> None:
        """sqenv's own internals (command lines): only at `-vv`."""
        if self.level >= DEBUG:
            self.console.print(message, markup=False, style="dim")

    def stream(self, prefix: str, line: str) -> None:
        """A line of a user's script as it runs (normal verbosity and above)."""
        if self.level >= NORMAL:
            self.console.print(Text(f"  {prefix} │ ", style="dim") + Text(line), markup=False, highlight=False)

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
    def phase(self, title: str) -> Iterator[Phase]:
        """Show a phase while it runs (live on a terminal) and, at its end, what it did and how long it took."""
        step = Phase(title)
        outer, self.current = self.current, step
        try:
            if self.fancy:
                with self.console.status(step, refresh_per_second=8):
                    yield step
            else:
                if self.level >= NORMAL:
                    self.console.print(f"{title} ...", markup=False)
                yield step
        finally:
            self.current = outer
        if self.level >= NORMAL:
            done = Text("✓ ", style="green") + Text(title)
            done.append(f" ({step.summary}; {step.elapsed():.1f} s)" if step.summary else f" ({step.elapsed():.1f} s)")
            self.console.print(done, markup=False, highlight=False)


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
) -> str:
    """Run a tool; return its output. On failure raise `error` with the cause as its headline.

    `classify(output, exit status)` says why it failed (default: killed/out of memory, else its exit
    code); `progress` reads its lines for the live display; `stream`: show its lines as they come,
    prefixed with this word (users' scripts)."""
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
            preexec_fn=functools.partial(procs.die_with_parent, os.getpid()),
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"`{argv[0]}` is not installed", "run `sqenv doctor`") from exc
    procs.watch(proc.pid)  # killed with its group if sqenv dies (sqenv.procs)
    try:
        with log.open("a") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            assert proc.stdout is not None
            for line in proc.stdout:
                _take(ui, line, fh, out, progress, stream)
            code = proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
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
