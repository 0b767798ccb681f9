"""Tykky's commands (`pip-containerize`, `conda-containerize`, `wrap-container`,
`wrap-install`), translated to sqenv's so LUMI and CSC users keep their habits.

Flags that have no meaning here (`--mamba`, `--uv`, `--slim`, `--nocache`) are
accepted and reported at `-v`, never silently changing the result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sqenv.cli import Parser, main
from sqenv.errors import UsageError

_IGNORED = ("--mamba", "--uv", "--slim", "--nocache")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--post-install", metavar="FILE")
    p.add_argument("--pre-install", metavar="FILE")
    p.add_argument("--environ", metavar="FILE")
    p.add_argument("-w", "--wrapper-paths", metavar="PATHS")
    p.add_argument("-r", "--requirement", action="append", default=[], metavar="FILE")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    for flag in _IGNORED:
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pyver", help=argparse.SUPPRESS)


def _tail(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for req in args.requirement:
        out += ["-r", req]
    if args.post_install:
        out += ["--post-install", args.post_install]
    if args.pre_install:
        out += ["--pre-install", args.pre_install]
    if args.environ:
        out += ["--environ", args.environ]
    if args.verbose:
        out.append("-v")
        for flag in _IGNORED:
            if getattr(args, flag[2:].replace("-", "_"), False):
                print(f"sqenv: `{flag}` has no effect here (sqenv always uses uv and rattler)", file=sys.stderr)
    if args.quiet:
        out.append("-q")
    if args.wrapper_paths:
        raise UsageError(
            "`-w/--wrapper-paths` is not supported by sqenv's Tykky compatibility yet",
            "drop the option; sqenv puts launchers for every program of the environment in PREFIX/bin",
        )
    return out


def _containerize(prog: str, kind: str) -> Callable[[Sequence[str] | None], list[str]]:
    def translate(argv: Sequence[str] | None) -> list[str]:
        parser = Parser(prog=prog, description=f"Tykky-compatible front end of sqenv ({kind} environments).")
        sub = parser.add_subparsers(dest="action", required=True, parser_class=Parser)
        new = sub.add_parser("new", help="create a new installation")
        new.add_argument("--prefix", required=True)
        new.add_argument("input", help="requirements.txt" if kind == "pip" else "environment.yml or explicit file")
        if kind == "pip":
            new.add_argument("--system-site-packages", action="store_true")
        _common(new)
        upd = sub.add_parser("update", help="update an existing installation")
        upd.add_argument("dir")
        _common(upd)
        args = parser.parse_args(argv)
        if args.action == "new":
            out = ["create", args.prefix]
            out += ["-r", args.input] if kind == "pip" else ["-f", args.input]
            if getattr(args, "system_site_packages", False):
                out.append("--system-site-packages")
            return out + _tail(args)
        return ["update", args.dir, *_tail(args)]

    return translate


def _wrap(prog: str) -> Callable[[Sequence[str] | None], list[str]]:
    def translate(argv: Sequence[str] | None) -> list[str]:
        parser = Parser(prog=prog, description="Tykky-compatible front end of `sqenv wrap`.")
        parser.add_argument("-w", "--wrapper-paths", required=True)
        parser.add_argument("--prefix", required=True)
        parser.add_argument("source")
        parser.add_argument("-v", "--verbose", action="store_true")
        parser.add_argument("-q", "--quiet", action="store_true")
        args = parser.parse_args(argv)
        out = ["wrap", args.source, "--prefix", args.prefix, "-w", args.wrapper_paths]
        return out + (["-v"] if args.verbose else []) + (["-q"] if args.quiet else [])

    return translate


def _entry(translate: Callable[[Sequence[str] | None], list[str]]) -> Callable[[], int]:
    def run(argv: Sequence[str] | None = None) -> int:
        from sqenv.cli import UI

        try:
            sqenv_argv = translate(sys.argv[1:] if argv is None else argv)
        except UsageError as err:
            UI().error(err)
            return err.exit_code
        return main(sqenv_argv)

    return run


pip_containerize = _entry(_containerize("pip-containerize", "pip"))
conda_containerize = _entry(_containerize("conda-containerize", "conda"))
wrap_container = _entry(_wrap("wrap-container"))
wrap_install = _entry(_wrap("wrap-install"))
