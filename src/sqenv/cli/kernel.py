"""`sqenv kernel install PREFIX ...`, `sqenv kernel remove NAME`: Jupyter kernels (`sqenv.integrations.kernel`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqenv.integrations import kernel
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "kernel",
        help="make an install a Jupyter kernel (install, remove)",
        description="Write or remove a Jupyter kernelspec that runs the environment's Python through its launcher.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    i = actions.add_parser(
        "install",
        help="write a kernelspec for PREFIX",
        description="Write a kernelspec for PREFIX (which needs ipykernel) for yourself, or into a Jupyter in DIR.",
    )
    i.add_argument("prefix", type=Path, metavar="PREFIX")
    i.add_argument("--name", metavar="N", help="kernel name (default: sqenv-<prefix's name>)")
    i.add_argument("--display-name", metavar="D", help="name shown in Jupyter (default: Python (<name>, sqenv))")
    _where(i)
    add_output_options(i)
    i.set_defaults(execute=execute_install)
    r = actions.add_parser("remove", help="remove a kernelspec sqenv wrote", description="Remove a kernelspec "
                           "written by `sqenv kernel install`.")  # fmt: skip
    r.add_argument("name", metavar="NAME")
    _where(r)
    add_output_options(r)
    r.set_defaults(execute=execute_remove)


def _where(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--user", action="store_true",
                       help="your own kernels (default; $JUPYTER_DATA_DIR or ~/.local/share/jupyter)")  # fmt: skip
    group.add_argument("--sys-prefix", type=Path, metavar="DIR",
                       help="the kernels of a Jupyter installed in DIR (DIR/share/jupyter/kernels)")  # fmt: skip


def execute_install(args: argparse.Namespace, ui: UI) -> int:
    target = kernel.install(args.prefix, name=args.name, display_name=args.display_name, sys_prefix=args.sys_prefix)
    ui.info(f"Installed the kernel `{target.name}` in {target}")
    return 0


def execute_remove(args: argparse.Namespace, ui: UI) -> int:
    target = kernel.remove(args.name, sys_prefix=args.sys_prefix)
    ui.info(f"Removed the kernel `{args.name}` ({target})")
    return 0
