"""`sqenv create PREFIX ...`: a new install from pip, conda or lock inputs."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from sqenv.engines import CHOICES
from sqenv.inputs import COMPRESSIONS
from sqenv.inputs.index import from_args
from sqenv.inputs.request import CreateRequest, plan
from sqenv.pipeline import create
from sqenv.ui import UI


def add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--post-install", type=Path, metavar="SCRIPT", help="sh script run inside the environment after install"
    )
    p.add_argument(
        "--pre-install", type=Path, metavar="SCRIPT", help="sh script run inside the (empty) environment before install"
    )
    p.add_argument(
        "--environ", type=Path, metavar="FILE", help="sh file sourced in the environment before every program starts"
    )
    p.add_argument("--compression", choices=COMPRESSIONS, help="image compression (default: zstd level 3)")
    p.add_argument("--compression-level", type=int, metavar="N", help="compressor level")
    p.add_argument(
        "--build-dir", type=Path, metavar="DIR", help="where to build (default: $SQENV_BUILD_DIR or $TMPDIR)"
    )
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="cores for packing (default: all)")


def add_index_options(p: argparse.ArgumentParser) -> None:
    """Where uv finds pip packages (also the `pip:` part of conda environments); config keys of the same names."""
    g = p.add_argument_group("package index (pip packages; recorded, reused by `sqenv update`)")
    g.add_argument("--index-url", metavar="URL", help="package index instead of PyPI (config: index_url)")
    g.add_argument("--extra-index-url", action="append", default=[], metavar="URL",
                   help="another index, searched too (repeatable; config: extra_index_urls)")  # fmt: skip
    g.add_argument("--find-links", action="append", default=[], metavar="DIR_OR_URL",
                   help="a directory or page of wheels and sdists (repeatable; config: find_links)")  # fmt: skip
    g.add_argument("--no-index", action="store_true", help="no index at all, only --find-links (config: no_index)")
    g.add_argument("--system-certs", "--native-tls", dest="system_certs", action="store_true",
                   help="trust the system's TLS certificates, e.g. a site's own CA (config: system_certs)")  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "create",
        help="build an environment into PREFIX",
        description="Build an environment (pip, conda or lock) into one image plus launchers in PREFIX.",
    )
    p.add_argument("prefix", type=Path, metavar="PREFIX")
    p.add_argument("packages", nargs="*", metavar="PKG", help="packages (pip) or match specs (with -c/-f: conda)")
    p.add_argument(
        "-r",
        "--requirement",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="pip requirements file (repeatable)",
    )
    p.add_argument("--python", metavar="PY", help="base interpreter for pip envs (default: first python3 on PATH)")
    p.add_argument("--system-site-packages", action="store_true", help="let the env see the base Python's packages")
    p.add_argument("--compile-tests", action="store_true", help="byte-compile the packages' test suites too")
    p.add_argument("-f", "--file", type=Path, metavar="YML", help="conda environment.yml or explicit file")
    p.add_argument("-c", "--channel", action="append", default=[], metavar="CHANNEL", help="conda channel (repeatable)")
    p.add_argument("--from", dest="lock_from", type=Path, metavar="PREFIX_OR_LOCK", help="rebuild exactly from a lock")
    p.add_argument(
        "--channel-alias",
        metavar="URL",
        help="where channel names point (default: $SQENV_CHANNEL_ALIAS or https://conda.anaconda.org)",
    )
    p.add_argument("--offline", action="store_true", help="conda: use only the package cache and local channels")
    p.add_argument(
        "--pkgs-dir",
        type=Path,
        metavar="DIR",
        help="conda package cache (default: $SQENV_PKGS_DIR or ~/.cache/sqenv/pkgs)",
    )
    p.add_argument(
        "--mpi",
        choices=("none", "host"),
        help="host: use the host's MPI library at run time; conda MPIs get their external builds "
        "(config: mpi, mpi_libraries)",
    )
    p.add_argument(
        "--target-cpu",
        metavar="NAME",
        help="the compute nodes' CPU (archspec: zen2, zen3, x86_64_v3, ...) or a partition of the site config's "
        "[cpus]; conda solves pick builds for it, launches check it (config: target_cpu; default: this host's)",
    )
    p.add_argument(
        "--optimize-sdists",
        action="store_true",
        help="pip packages uv builds from source get CFLAGS/CXXFLAGS -march=<the --target-cpu> (default: such "
        "builds are generic, with a warning naming them)",
    )
    p.add_argument(
        "--engine",
        choices=CHOICES,
        help="how launchers run programs (default: config `engine`, else auto: embedded where it can, else apptainer)",
    )
    p.add_argument(
        "--base-image",
        type=Path,
        metavar="SIF",
        help="pip: build a layer on this container's own Python (`--python` then names a path inside it; its "
        "packages are used, not reinstalled) and run it there; conda: the OS image the apptainer engine runs the "
        "environment in. Copied (or hard-linked) into PREFIX as container.sif",
    )
    p.add_argument(
        "--base-image-ref",
        action="store_true",
        help="launch with the --base-image where it is (a site's path, e.g. /appl/local/containers/...) instead "
        "of a copy in PREFIX",
    )
    p.add_argument(
        "--profile",
        metavar="NAME",
        help="a launch profile of the site config ([profiles.NAME]: binds and variables a GPU job needs, "
        "e.g. gpu); config: profile",
    )
    p.add_argument("--force", action="store_true", help="replace PREFIX if it exists")
    add_build_options(p)
    add_index_options(p)
    add_output_options(p)
    p.set_defaults(execute=execute)


def request_from_args(args: argparse.Namespace) -> CreateRequest:
    """The parsed command line as a request (`sqenv.inputs.request`): nothing else is done here."""
    return CreateRequest(
        prefix=args.prefix,
        packages=tuple(args.packages),
        requirement_files=tuple(args.requirement),
        python=args.python,
        system_site_packages=args.system_site_packages,
        compile_tests=args.compile_tests,
        file=args.file,
        channels=tuple(args.channel),
        lock_from=args.lock_from,
        channel_alias=args.channel_alias,
        offline=args.offline,
        pkgs_dir=args.pkgs_dir,
        mpi=args.mpi,
        target_cpu=args.target_cpu,
        optimize_sdists=args.optimize_sdists,
        engine=args.engine,
        base_image=args.base_image,
        base_image_ref=args.base_image_ref,
        profile=args.profile,
        post_install=args.post_install,
        pre_install=args.pre_install,
        environ=args.environ,
        compression=args.compression,
        compression_level=args.compression_level,
        build_dir=args.build_dir,
        jobs=args.jobs,
        force=args.force,
        index=from_args(args),
        quiet=bool(getattr(args, "quiet", False)),
    )


def use_it(prefix: Path) -> str:
    """How to use a new install, as lines that still work when pasted (paths quoted for sh)."""
    bindir = shlex.quote(f"{prefix}/bin")
    return f'\nUse it with:  export PATH={bindir}:"$PATH"\n         or:  . {bindir}/activate'


def execute(args: argparse.Namespace, ui: UI) -> int:
    spec = plan(request_from_args(args))
    create(spec, ui)
    ui.info(use_it(spec.prefix))
    return 0
