"""What the user sees: progress and messages on stderr, data on stdout.

On a terminal each phase shows a live line: a spinner, what the tool reports
(packages resolved/downloaded/installed, the pack's percentage) and the elapsed
time, refreshed several times a second; otherwise one plain line per phase, so
batch logs stay readable. Users' scripts are streamed (prefixed) at normal
verbosity; `-v` streams the tools' own output, `-vv` also sqenv's internal
command lines and uv's debug lines; `-q` keeps only errors. Tools run through
`run()`, which keeps their output in a log file and, when they fail, raises an
error whose headline is the cause (`sqenv.tools.diagnose`). Text from users and tools
(paths, script output) is never read as rich markup.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

from sqenv.errors import SqenvError

QUIET, NORMAL, VERBOSE, DEBUG = 0, 1, 2, 3


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
