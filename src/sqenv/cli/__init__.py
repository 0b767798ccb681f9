"""Command line: thin modules over the library, one per subcommand.

`main` is the one place where errors become messages and exit codes.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import re
import signal
from collections.abc import Sequence

from sqenv import __version__
from sqenv.cli import config, create, doctor, export, info, kernel, module, run, stage, update, wrap
from sqenv.errors import BuildError, Interrupted, SqenvError, UsageError
from sqenv.ui import DEBUG, NORMAL, QUIET, UI, VERBOSE

COMMANDS = (create, run, info, doctor, update, export, stage, config, wrap, kernel, module)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors go through our one error path, with a "did you mean"."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.search(r"argument (\S+): invalid choice: '?([^' ]*)'? \(choose from (.*)\)", message)
        if m:
            what, given = m.group(1), m.group(2)
            choices = [c.strip(" '\"") for c in m.group(3).split(",")]
            close = difflib.get_close_matches(given, choices, n=1, cutoff=0.5)
            if what == "COMMAND":
                hint = f"did you mean `{self.prog} {close[0]}`?" if close else f"see `{self.prog} --help`"
                raise UsageError(f"`{given}` is not a sqenv command", hint)
            hint = f"did you mean `{close[0]}`?" if close else f"choose from {', '.join(choices)}"
            raise UsageError(f"{what}: `{given}` is not one of {', '.join(choices)}", hint)
        raise UsageError(message, f"see `{self.prog} --help`")


def unknown_options(parser: argparse.ArgumentParser, command: str, extra: Sequence[str]) -> UsageError:
    """`unrecognized arguments`, with the closest option of that subcommand where one is close."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    options = [o for o in sub._option_string_actions if o.startswith("--")]
    for word in extra:
        close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1, cutoff=0.6)
        if word.startswith("-") and close:
            return UsageError(f"`sqenv {command}` has no option `{word}`", f"did you mean `{close[0]}`?")
    return UsageError(f"unrecognized arguments: {' '.join(extra)}", f"see `sqenv {command} --help`")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="show the tools' own output (-vv: also sqenv's internal commands)")  # fmt: skip
    group.add_argument("-q", "--quiet", action="store_true", help="show errors only")


def build_parser() -> Parser:
    parser = Parser(prog="sqenv", description="Python environments as one image plus launchers, for HPC.")
    parser.add_argument("--version", action="version", version=f"sqenv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parsers(sub, add_output_options)
    return parser


def make_ui(args: argparse.Namespace) -> UI:
    verbose = int(getattr(args, "verbose", 0) or 0)
    level = (DEBUG if verbose > 1 else VERBOSE) if verbose else QUIET if getattr(args, "quiet", False) else NORMAL
    return UI(level=level)


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def dispatch(parser: Parser, argv: Sequence[str] | None) -> int:
    ui = UI()
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        args, extra = parser.parse_known_args(argv)
        # argparse cannot put positionals after options into a `*` list
        # (`create P -r req.txt numpy`); packages may come anywhere.
        if extra and isinstance(getattr(args, "packages", None), list) and not any(e.startswith("-") for e in extra):
            args.packages += extra
        elif extra:
            raise unknown_options(parser, args.command, extra)
        ui = make_ui(args)
        return int(args.execute(args, ui) or 0)
    except KeyboardInterrupt:
        err = Interrupted("interrupted; nothing was changed, temporary files were removed")
        ui.error(err)
        return err.exit_code
    except SqenvError as err:
        ui.error(err)
        return err.exit_code
    except BrokenPipeError:
        return 1
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            err: SqenvError = BuildError(
                f"ran out of space writing `{exc.filename or 'a file'}`",
                "free space, or build elsewhere with `--build-dir DIR` or SQENV_BUILD_DIR",
            )
            ui.error(err)
            return err.exit_code
        if os.environ.get("SQENV_TRACEBACK"):
            raise
        ui.error(SqenvError(f"internal error: {exc!r}", f"this is a bug in sqenv; please report it with {crash_log()}"))
        return 70


def crash_log() -> str:
    """Write the traceback of the exception being handled to a file; return its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="sqenv-crash-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        traceback.print_exc(file=fh)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)
