"""`sqenv run PREFIX -- CMD ...` and `sqenv shell PREFIX`: any command inside an install.

Both hand over to the install's launcher with `exec`, so the command gets the
same namespace, engine and environment as the installed programs, and its
exit code and signals are the command's own.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sqenv.errors import UsageError
from sqenv.publish.layout import Install
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "run",
        help="run a command inside an environment",
        description="Run CMD inside the environment at PREFIX (its bin/ first on PATH).",
    )
    p.add_argument("prefix", metavar="PREFIX")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(execute=execute_run)
    s = sub.add_parser(
        "shell",
        help="open a shell inside an environment",
        description="Start $SHELL (or /bin/sh) inside the environment at PREFIX.",
    )
    s.add_argument("prefix", metavar="PREFIX")
    s.set_defaults(execute=execute_shell, command=[])


def handover(prefix: str, command: list[str]) -> int:
    install = Install.open(Path(prefix))
    launcher = str(install.launcher)
    os.execv(launcher, [launcher, *command])
    return 127  # not reached


def execute_run(args: argparse.Namespace, ui: UI) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("no command given", "write `sqenv run PREFIX -- CMD [ARGS...]`")
    return handover(args.prefix, command)


def execute_shell(args: argparse.Namespace, ui: UI) -> int:
    shell = os.environ.get("SHELL") or "/bin/sh"
    return handover(args.prefix, [shell])
