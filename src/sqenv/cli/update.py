"""`sqenv update|history|rollback|compact PREFIX`: change an install, see and switch its versions."""

from __future__ import annotations

import argparse
import contextlib
import json
from datetime import datetime
from pathlib import Path

from sqenv.cli.create import add_index_options
from sqenv.config import load_config
from sqenv.errors import SqenvError, UsageError
from sqenv.inputs import COMPRESSIONS
from sqenv.inputs.index import from_args as index_from_args
from sqenv.inputs.requirements import check_file, check_spec
from sqenv.publish import metadata, versions
from sqenv.publish.layout import Install
from sqenv.ui import UI
from sqenv.update.apply import Change, Options, update
from sqenv.update.compact import compact


def _pack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keep",
        type=int,
        metavar="N",
        help="versions kept from now on, current included (default: config `keep_versions`, 3)",
    )
    p.add_argument("--compression", choices=COMPRESSIONS, help="image compression (default: zstd 3)")
    p.add_argument("--compression-level", type=int, metavar="N", help="compressor level")
    p.add_argument("--build-dir", type=Path, metavar="DIR", help="where to build (default: $SQENV_BUILD_DIR, $TMPDIR)")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="cores for packing (default: all)")  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "update",
        help="add, upgrade or remove packages as a new version",
        description="Change the environment at PREFIX as a new version (a new image layer holding only the "
        "changes). Running programs keep the version they started with; `sqenv rollback` switches back.",
    )
    p.add_argument("prefix", type=Path, metavar="PREFIX")
    p.add_argument("packages", nargs="*", metavar="PKG",
                   help="packages to install or upgrade (conda installs: match specs)")  # fmt: skip
    p.add_argument("-r", "--requirement", action="append", type=Path, default=[], metavar="FILE",
                   help="pip requirements file (repeatable)")  # fmt: skip
    p.add_argument("--remove", action="append", default=[], metavar="PKG", help="package to remove (repeatable)")
    p.add_argument("-f", "--file", type=Path, metavar="YML",
                   help="conda environment.yml to re-solve for (conda installs)")  # fmt: skip
    p.add_argument("--post-install", type=Path, metavar="SCRIPT", help="sh script run inside the environment")
    add_index_options(p)
    _pack_options(p)
    add_output_options(p)
    p.set_defaults(execute=execute_update)

    h = sub.add_parser("history", help="list an install's versions", description="List the versions kept in PREFIX.")
    h.add_argument("prefix", type=Path, metavar="PREFIX")
    h.add_argument("--json", action="store_true", help="print JSON")
    add_output_options(h)
    h.set_defaults(execute=execute_history)

    r = sub.add_parser(
        "rollback",
        help="make new launches use an earlier version",
        description="Switch PREFIX back to the previous version (or version N). Running programs are not affected.",
    )
    r.add_argument("prefix", type=Path, metavar="PREFIX")
    r.add_argument("--to", type=int, metavar="N", help="version number (see `sqenv history`)")
    add_output_options(r)
    r.set_defaults(execute=execute_rollback)

    c = sub.add_parser(
        "compact",
        help="squash an install's layers into one image",
        description="Pack all layers of the current version into one image, as a new version.",
    )
    c.add_argument("prefix", type=Path, metavar="PREFIX")
    _pack_options(c)
    add_output_options(c)
    c.set_defaults(execute=execute_compact)


def _options(args: argparse.Namespace, ui: UI) -> Options:
    """Command line > site/user config > defaults; `keep` only when given somewhere (else the install's own)."""
    if args.keep is not None and args.keep < 1:
        raise UsageError("`--keep` must be at least 1")
    config = load_config()
    keep_set = args.keep is not None or config.setting("keep_versions").source != "default"
    build_dir = config.get("build_dir", args.build_dir, ui)
    return Options(
        keep=config.get("keep_versions", args.keep, ui) if keep_set else None,
        compression=config.get("compression", args.compression, ui),
        compression_level=config.get("compression_level", args.compression_level, ui),
        jobs=config.get("jobs", args.jobs, ui),
        build_dir=Path(build_dir) if build_dir else None,
    )


def _kind(prefix: Path) -> str | None:
    """The install's kind, if it is one (`update` itself reports a prefix that is not)."""
    with contextlib.suppress(SqenvError, OSError, KeyError, TypeError):
        return metadata.load(Install.open(prefix).metadata)["kind"]
    return None


def change_from_args(args: argparse.Namespace) -> Change:
    for path in args.requirement:
        check_file(path)
    # conda installs take match specs (`numpy>=1.26`, `python=3.12`), pip ones requirements
    check = check_spec
    if _kind(args.prefix) == "conda":
        from sqenv.inputs.conda import check_match_spec as check
    for i, pkg in enumerate(args.packages, 1):
        check(pkg, f"package argument {i}")
    for pkg in args.remove:
        check_spec(pkg, "`--remove`")
    if args.post_install and not args.post_install.is_file():
        raise UsageError(f"post-install script `{args.post_install}` does not exist")
    if args.file and not args.file.is_file():
        raise UsageError(f"environment file `{args.file}` does not exist")
    change = Change(
        requirement_files=tuple(p.absolute() for p in args.requirement),
        packages=tuple(args.packages),
        remove=tuple(args.remove),
        environment_file=args.file.absolute() if args.file else None,
        post_install=args.post_install.absolute() if args.post_install else None,
        index=index_from_args(args),
    )
    if not change.inputs() and args.keep is None:
        raise UsageError("nothing to update", "give packages, `-r FILE`, `--remove PKG` or `--post-install SCRIPT`")
    return change


def execute_update(args: argparse.Namespace, ui: UI) -> int:
    update(args.prefix, change_from_args(args), ui, _options(args, ui))
    return 0


def execute_compact(args: argparse.Namespace, ui: UI) -> int:
    compact(args.prefix, ui, _options(args, ui))
    return 0


def execute_rollback(args: argparse.Namespace, ui: UI) -> int:
    versions.rollback(args.prefix, ui, args.to)
    return 0


def summary(version: dict) -> str:
    if version.get("summary"):
        return version["summary"]
    if version.get("change") == "create":
        return f"created with {len(version.get('packages', []))} packages"
    return version.get("change", "")


def _inputs(inputs: dict) -> str:
    words = [f"-r {p}" for p in inputs.get("requirement_files", [])]
    words += inputs.get("packages", [])
    words += [f"--remove {p}" for p in inputs.get("remove", [])]
    words += [f"-f {inputs['environment_file']}"] if inputs.get("environment_file") else []
    words += [f"--post-install {inputs['post_install']}"] if inputs.get("post_install") else []
    return " ".join(str(w) for w in words)


def execute_history(args: argparse.Namespace, ui: UI) -> int:
    install = Install.open(args.prefix)
    records, current = versions.history(install)
    if args.json:
        out = [{**v, "current": v["number"] == current, "summary": summary(v)} for v in records]
        print(json.dumps(out, indent=1))
        return 0
    for v in reversed(records):
        mark = "*" if v["number"] == current else " "
        when = datetime.fromisoformat(v["created"]).strftime("%Y-%m-%d %H:%M")
        layers = len(v["layers"])
        line = f"{mark} {v['number']:>3}  {when}  {v['change']:<8} {summary(v)}"
        print(line + f"  [{layers} layer{'s' if layers > 1 else ''}]")
        if v.get("change") == "update" and v.get("inputs"):
            print(f"{'':>24}inputs: {_inputs(v['inputs'])}")
    print(f"\n* = current (new launches); {len(records)} version(s) kept")
    return 0
