"""`sqenv stage PREFIX [--remove]`: copy the image to node-local storage on every node of the job."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqenv.config import load_config
from sqenv.slurm.stage import stage, unstage
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "stage",
        help="copy an install's image to every node of the current Slurm job",
        description="Inside a Slurm allocation, copy PREFIX's image once to node-local storage on every node "
        "of the job (sbcast, else srun + cp), verified by sha256; launchers in the job then mount that copy. "
        "Run it before the srun that starts many ranks.",
    )
    p.add_argument("prefix", type=Path, metavar="PREFIX")
    p.add_argument(
        "--stage-dir",
        metavar="DIR",
        help="node-local directory (default: config `stage_dir`, $SQENV_STAGE_DIR or /tmp)",
    )
    p.add_argument("--method", choices=("auto", "sbcast", "srun"), default="auto", help="how to copy (default: auto)")
    p.add_argument("--remove", action="store_true", help="remove this job's staged copies of PREFIX instead")
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    stage_dir = load_config().get("stage_dir", args.stage_dir, ui)
    if args.remove:
        directory = unstage(args.prefix, ui, stage_dir=stage_dir)
        ui.info(f"Removed the staged copies in {directory} on every node")
        return 0
    method = "srun cp" if args.method == "srun" else args.method
    done = stage(args.prefix, ui, stage_dir=stage_dir, method=method)
    files = ", ".join(layer.file for layer in done.layers)
    ui.info(f"Staged {files} to {done.directory} on {done.nodes} node(s) with {done.method}, sha256 verified")
    return 0
