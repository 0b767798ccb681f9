"""`sqenv stage PREFIX [--remove | --print-path]`: copy the image, and the programs that start it,
to node-local storage on every node of the job."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqenv.config import load_config
from sqenv.errors import UsageError
from sqenv.slurm.stage import StageError, stage, unstage
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "stage",
        help="copy an install's image to every node of the current Slurm job",
        description="Inside a Slurm allocation, copy PREFIX's image once to node-local storage on every node "
        "of the job (sbcast, else srun + cp), verified by sha256; launchers in the job then mount that copy. "
        "It also copies the install's programs (launcher, sqenv-enter, bin/) to the same place on every node: "
        "put that bin first on PATH, e.g. `export PATH=$(sqenv stage --print-path PREFIX):$PATH`, and the "
        "ranks start without opening files on the shared file system. Run it before the srun that starts "
        "many ranks.",
    )
    p.add_argument("prefix", type=Path, metavar="PREFIX")
    p.add_argument(
        "--stage-dir",
        metavar="DIR",
        help="node-local directory (default: config `stage_dir`, $SQENV_STAGE_DIR or /tmp)",
    )
    p.add_argument("--method", choices=("auto", "sbcast", "srun"), default="auto", help="how to copy (default: auto)")
    p.add_argument("--remove", action="store_true", help="remove this job's staged copies of PREFIX instead")
    p.add_argument(
        "--print-path",
        action="store_true",
        help="stage, then print only the node-local bin directory of PREFIX's programs on stdout (for PATH)",
    )
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    stage_dir = load_config().get("stage_dir", args.stage_dir, ui)
    if args.remove and args.print_path:
        raise UsageError("--remove and --print-path exclude each other", "use one of them")
    if args.remove:
        directory = unstage(args.prefix, ui, stage_dir=stage_dir)
        ui.info(f"Removed the staged copies in {directory} on every node")
        return 0
    method = "srun cp" if args.method == "srun" else args.method
    done = stage(args.prefix, ui, stage_dir=stage_dir, method=method)
    files = ", ".join(layer.file for layer in done.layers)
    ui.info(f"Staged {files} to {done.directory} on {done.nodes} node(s) with {done.method}, sha256 verified")
    if done.bin is None:
        if args.print_path:
            raise StageError(
                f"staged the image, but not the programs of {args.prefix}: its launcher predates staged programs",
                "recreate the install with this sqenv (`sqenv create --force ...`), or put PREFIX/bin on PATH",
            )
        return 0
    ui.info(f"Programs: {done.bin} (the same on every node; put it first on PATH: export PATH={done.bin}:$PATH)")
    if args.print_path:
        print(done.bin, flush=True)
    return 0
