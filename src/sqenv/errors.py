"""Errors users can act on.

Every failure a user can cause or fix is a `SqenvError` carrying one line that
says what is wrong and, optionally, a hint that says what to do. The CLI turns
them into a message and an exit code in one place (`sqenv.cli.main`); nothing
else prints tracebacks.
"""

from __future__ import annotations


class SqenvError(Exception):
    """A failure with a user-facing message, an optional hint and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details


class UsageError(SqenvError):
    """Bad command-line input."""

    exit_code = 2


class InputError(SqenvError):
    """A requirements, environment or lock file that cannot be used."""

    exit_code = 2


class PrefixError(SqenvError):
    """The install prefix is not usable (exists, not writable, not an install)."""

    exit_code = 3


class ToolMissing(SqenvError):
    """A system tool sqenv needs is not installed."""

    exit_code = 4


class BuildError(SqenvError):
    """Resolving, installing or post-install scripts failed."""

    exit_code = 5


class PackError(SqenvError):
    """Making the image failed."""

    exit_code = 6


class Interrupted(SqenvError):
    """Ctrl-C or SIGTERM: everything started was undone."""

    exit_code = 130
