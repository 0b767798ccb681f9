"""`sqenv doctor [PREFIX]`: prints the checks of `sqenv.launch.checks` (this node's tools and
permissions, the engine launchers use here and why) and an install's image checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqenv.launch.checks import CHECKS, engine_choice
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this node's tools and permissions",
        description="Check this node's tools and permissions, and say which engine launchers use here and why.",
    )
    p.add_argument("prefix", nargs="?", type=Path, metavar="PREFIX", help="an install to check the launch of")
    add_output_options(p)
    p.set_defaults(execute=execute)


def execute(args: argparse.Namespace, ui: UI) -> int:
    from sqenv.publish.layout import Install

    prefix = Install.open(args.prefix).prefix if args.prefix else None
    choice = engine_choice(prefix)
    other_engine = choice.engine in ("apptainer", "singularity")
    failed = 0
    for check in CHECKS:
        problem = check.test()
        # Where launchers use apptainer, the embedded engine's needs are not problems.
        optional = "optional" in check.needed_for or (other_engine and check.needed_for == "run (embedded)")
        if problem is None:
            print(f"ok    {check.name}")
        else:
            failed += 0 if optional else 1
            print(f"{'warn' if optional else 'FAIL'}  {check.name}: {problem} (needed to {check.needed_for})")
            print(f"      fix: {check.fix}")
    where = f"{prefix}/bin/*" if prefix else "launchers"
    if choice.engine == "none":
        failed += 1
        print(f"\nFAIL  engine: no engine can run {where} here: {choice.why}")
        print("      fix: see the checks above; or set SQENV_ENGINE to one of auto, embedded, apptainer, singularity")
    else:
        print(f"\nengine: {where} use `{choice.engine}` here: {choice.why}")
    for problem in choice.problems:
        failed += 1
        print(f"FAIL  {choice.engine} engine: {problem}")
    if prefix is not None:
        from sqenv.publish.integrity import image_problems

        image_failures = image_problems(Install.open(prefix))
        for problem in image_failures:
            failed += 1
            print(f"FAIL  image: {problem.what}")
            print(f"      fix: {problem.fix}")
        if not image_failures:
            print("ok    images: present, checksums match")
        from sqenv.publish.hpc import doctor as hpc_doctor

        for good, what, text, fix in hpc_doctor(prefix):  # the install's MPI and CPU on this node
            failed += 0 if good else 1
            print(f"{'ok  ' if good else 'FAIL'}  {what}: {text}")
            if fix:
                print(f"      fix: {fix}")
    if failed:
        print(f"\n{failed} problem(s) found.")
        return 1
    print("\nAll checks passed.")
    return 0
