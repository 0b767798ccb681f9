"""`sqenv create PREFIX ...`: a new install from pip, conda or lock inputs."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from pathlib import Path

from sqenv.config import BUILD_OPTIONS, Config, resolve_build_options
from sqenv.engines import CHOICES
from sqenv.errors import UsageError
from sqenv.inputs import COMPRESSIONS, BuildSpec, PipInputs
from sqenv.inputs.cpu import resolve as resolve_cpu
from sqenv.inputs.index import from_args
from sqenv.inputs.index import resolve as resolve_index
from sqenv.inputs.requirements import check_file, check_spec
from sqenv.pipeline import create
from sqenv.ui import NORMAL, QUIET, UI


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


def pip_spec(args: argparse.Namespace) -> BuildSpec:
    for path in args.requirement:
        check_file(path)
    for i, pkg in enumerate(args.packages, 1):
        check_spec(pkg, f"package argument {i}")
    return BuildSpec(
        prefix=args.prefix.absolute(),
        kind="pip",
        pip=PipInputs(
            requirement_files=tuple(p.absolute() for p in args.requirement),
            packages=tuple(args.packages),
            python=args.python,
            system_site_packages=args.system_site_packages,
        ),
        post_install=args.post_install.absolute() if args.post_install else None,
        pre_install=args.pre_install.absolute() if args.pre_install else None,
        environ_file=args.environ.absolute() if args.environ else None,
        compression=args.compression or "zstd",
        mpi=args.mpi,
        target_cpu=getattr(args, "target_cpu", None),
        optimize_sdists=getattr(args, "optimize_sdists", False),
        engine=getattr(args, "engine", None),
        base_image=args.base_image.absolute() if getattr(args, "base_image", None) else None,
        base_image_ref=getattr(args, "base_image_ref", False),
        profile=getattr(args, "profile", None),
        compression_level=args.compression_level,
        jobs=args.jobs,
        force=args.force,
        build_dir=args.build_dir,
    )


def apply_build_config(args: argparse.Namespace) -> Config:
    """Fill the parsed build options (and `mpi`) from the site/user config (see
    `sqenv.config.resolve_build_options`); returns that config."""
    values, config = resolve_build_options({k: getattr(args, k, None) for k in (*BUILD_OPTIONS, "quiet")})
    for key, value in values.items():
        setattr(args, key, value)
    return config


def check_profile(name: str | None, config: Config) -> str | None:
    """A launch profile the config defines (`[profiles.NAME]`)."""
    known = config.get("profiles")
    if name is not None and name not in known:
        listed = ", ".join(sorted(known)) or "none is defined"
        raise UsageError(f"no launch profile `{name}` in the sqenv config ({listed})",
                         "see `sqenv config`; a site defines them as [profiles.NAME]")  # fmt: skip
    return name


def spec_from_args(args: argparse.Namespace) -> BuildSpec:
    config = apply_build_config(args)  # site/user config for build options; forced values win, with a warning
    args.target_cpu = resolve_cpu(args.target_cpu, config.get("cpus"))
    if getattr(args, "optimize_sdists", False) and not args.target_cpu:
        raise UsageError("`--optimize-sdists` needs the CPU to build for",
                         "add `--target-cpu NAME` (e.g. zen3), or set `target_cpu` in the config")  # fmt: skip
    args.profile = check_profile(config.get("profile", getattr(args, "profile", None)), config)
    index = resolve_index(from_args(args), config, UI(level=QUIET if getattr(args, "quiet", False) else NORMAL))
    if index.no_index and not index.find_links:
        raise UsageError("`--no-index` leaves uv nowhere to find packages", "add `--find-links DIR`")
    conda = args.file or args.channel or args.lock_from
    if conda:
        from sqenv.inputs.conda import conda_spec

        return replace(conda_spec(args), index=index)
    if getattr(args, "base_image", None) is not None:
        from sqenv.builders.sif import check_image

        check_image(args.base_image, "the base image")
    if not args.requirement and not args.packages:
        raise UsageError("nothing to install", "give packages, `-r requirements.txt`, or `-f environment.yml`")
    if args.post_install and not args.post_install.is_file():
        raise UsageError(f"post-install script `{args.post_install}` does not exist")
    return replace(pip_spec(args), index=index)


def use_it(prefix: Path) -> str:
    """How to use a new install, as lines that still work when pasted (paths quoted for sh)."""
    bindir = shlex.quote(f"{prefix}/bin")
    return f'\nUse it with:  export PATH={bindir}:"$PATH"\n         or:  . {bindir}/activate'


def execute(args: argparse.Namespace, ui: UI) -> int:
    spec = spec_from_args(args)
    create(spec, ui)
    ui.info(use_it(spec.prefix))
    return 0
