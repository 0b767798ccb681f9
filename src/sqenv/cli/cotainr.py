"""cotainr's commands (`cotainr build`, `cotainr info`), mapped onto `sqenv create` + `sqenv export --sif`.

    cotainr build OUT.sif --base-image=IMG --conda-env=env.yml [--accept-licenses] [--system=NAME]
    cotainr info

`build` solves and installs env.yml into a temporary install (py-rattler, no
Miniforge), exports it as OUT.sif on the base image, and removes the
temporary install. Inside the SIF the environment is also at cotainr's own
path, /opt/conda/envs/conda_container_env (CONDA_PREFIX there), so job
scripts written for cotainr images keep working. `--system NAME` takes the
base image (and bind mount points) from the site config's `[systems.NAME]`
table, as cotainr's systems.json does for lumi-c / lumi-g:

    [systems.lumi-g]
    base_image = "/appl/local/containers/sif-images/lumi-rocm-rocm-6.2.4.sif"
    binds = ["/pfs", "/scratch", "/projappl", "/project", "/flash", "/appl"]

`--accept-licenses` is accepted (sqenv installs no Miniforge, so there is no
license to accept); any other cotainr option is refused with one line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqenv.errors import InputError, SqenvError, UsageError

COTAINR_PREFIX = "/opt/conda/envs/conda_container_env"
_SUPPORTED = "--base-image, --conda-env, --system, --accept-licenses, -v/--verbose, -q/--quiet"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every sqenv error
        raise UsageError(f"{self.prog}: {message}", f"supported: {_SUPPORTED}")


def systems(env: dict[str, str] | None = None) -> dict[str, dict]:
    """`[systems.NAME]` tables of the config files (a later file's table replaces an earlier one's)."""
    from sqenv.config import config_files, read_file

    env = dict(os.environ if env is None else env)
    found: dict[str, dict] = {}
    for _layer, path, required in config_files(env):
        data = read_file(path, required) or {}
        table = data.get("systems", {})
        if not isinstance(table, dict):
            raise InputError(f"{path}: [systems] must hold tables, e.g. [systems.lumi-g]")
        for name, value in table.items():
            if not isinstance(value, dict) or not isinstance(value.get("base_image", ""), str):
                raise InputError(f'{path}: [systems.{name}] needs `base_image = "PATH.sif"`')
            found[name] = value
    return found


def _system(name: str) -> tuple[Path, list[str]]:
    table = systems()
    if name not in table:
        known = ", ".join(sorted(table)) or "none configured"
        raise UsageError(f"unknown system `{name}` (known: {known})",
                         "add a [systems.NAME] table with base_image to the config, or give --base-image")  # fmt: skip
    entry = table[name]
    if not entry.get("base_image"):
        raise InputError(f"[systems.{name}] has no base_image")
    binds = entry.get("binds", [])
    if not isinstance(binds, list) or not all(isinstance(b, str) and b.startswith("/") for b in binds):
        raise InputError(f"[systems.{name}] binds must be a list of absolute paths")
    return Path(os.path.expandvars(entry["base_image"])), binds


def _build(argv: Sequence[str]) -> int:
    from sqenv.builders.workdir import base_dir
    from sqenv.cli import main
    from sqenv.publish.publisher import remove_tree

    p = _Parser(prog="cotainr build", add_help=True)
    p.add_argument("image_path", metavar="OUT.sif")
    p.add_argument("--base-image")
    p.add_argument("--system")
    p.add_argument("--conda-env")
    p.add_argument("--accept-licenses", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    args, unknown = p.parse_known_args(argv)
    if unknown:
        raise UsageError(f"cotainr build: `{unknown[0]}` is not supported by sqenv's cotainr",
                         f"supported: {_SUPPORTED}")  # fmt: skip
    if not args.conda_env:
        raise UsageError("cotainr build: --conda-env=env.yml is required here", "name the conda environment file")
    if args.system and args.base_image:
        raise UsageError("cotainr build: give --base-image or --system, not both")
    binds: list[str] = []
    if args.system:
        base, binds = _system(args.system)
    elif args.base_image:
        base = Path(args.base_image)
    else:
        raise UsageError("cotainr build: a base image is needed", "give --base-image=IMG.sif or --system=NAME")
    from sqenv.export.sif import check_output, choose_base  # bad input first, before any solve

    check_output(Path(args.image_path))
    choose_base(_NoInstall(), base)
    out_flags = (["-v"] if args.verbose else []) + (["-q"] if args.quiet else [])
    tmp = Path(tempfile.mkdtemp(prefix="sqenv-cotainr-", dir=base_dir(None)))
    try:
        prefix = tmp / "env"
        code = main(["create", str(prefix), "-f", args.conda_env, *out_flags])
        if code != 0:
            return code
        export = ["export", str(prefix), "--sif", args.image_path, "--base-image", str(base),
                  "--prefix-inside", COTAINR_PREFIX, *out_flags]  # fmt: skip
        for bind in binds:
            export += ["--mount-point", bind]
        return main(export)
    finally:
        remove_tree(tmp)


class _NoInstall:
    """`choose_base` with an explicit image looks at no install."""

    prefix = Path("/nonexistent")


def _info(argv: Sequence[str]) -> int:
    p = _Parser(prog="cotainr info")
    args, unknown = p.parse_known_args(argv)
    del args
    if unknown:
        raise UsageError(f"cotainr info: `{unknown[0]}` is not supported", "run `cotainr info` alone")
    runtime = shutil.which("apptainer") or shutil.which("singularity")
    print("sqenv's cotainr (conda environments as SIF images; create + export --sif)")
    print(f"  container runtime   {runtime or 'MISSING: load apptainer (or singularity)'}")
    print(f"  unsquashfs          {shutil.which('unsquashfs') or 'MISSING: apt-get install squashfs-tools'}")
    found = systems()
    print("  systems             " + (", ".join(sorted(found)) or "none ([systems.NAME] in the sqenv config)"))
    for name, entry in sorted(found.items()):
        print(f"    {name}: base image {entry.get('base_image')}" + (f", binds {', '.join(entry.get('binds', []))}"
                                                                        if entry.get("binds") else ""))  # fmt: skip
    return 0 if runtime else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The `cotainr` console script."""
    from sqenv.ui import UI

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print("usage: cotainr {build,info} ...  (sqenv's cotainr: `cotainr build OUT.sif --base-image=IMG "
                  "--conda-env=env.yml`)")  # fmt: skip
            return 0 if argv else 2
        if argv[0] == "build":
            return _build(argv[1:])
        if argv[0] == "info":
            return _info(argv[1:])
        raise UsageError(
            f"cotainr: `{argv[0]}` is not supported by sqenv's cotainr", "use `cotainr build` or `cotainr info`"
        )
    except SqenvError as err:
        UI().error(err)
        return err.exit_code
