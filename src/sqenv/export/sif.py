"""`sqenv export PREFIX --sif OUT.sif [--base-image OS.sif]`: one self-contained Apptainer image.

Built as an ordinary user with the real `apptainer build`, from a sandbox
directory (no definition file, so no root and no fakeroot):

1. the base OS: `apptainer build --sandbox` of the base image (`--base-image`,
   else the install's own `container.sif`, else `$SQENV_APPTAINER_IMAGE`);
2. the environment: the install's current image unpacked (`unsquashfs`, never
   re-solved or reinstalled) at the path it was built for, `/mnt/sqenv`, and
   PREFIX made a symlink to it, so the paths the environment names (shebangs,
   conda prefixes) and the ones users know both work;
3. `/.singularity.d/env/90-sqenv.sh`: what a launcher does before every
   program, for `apptainer exec|shell|run` — the environment's `bin` first on
   PATH, and for conda environments (or `--environ` files) the install's own
   activation script (`CONDA_PREFIX`, the yml's variables, `activate.d`);
   the runscript runs the environment's `python` with the arguments;
4. labels (`apptainer inspect`) naming the prefix, kind, packages and lock;
5. `apptainer build` with zstd, then the SBOM and the lock added as SIF
   objects (`apptainer sif add`), then renamed onto OUT.

Inside, programs run from PREFIX when the container sees its own PREFIX, else
from /mnt/sqenv: Apptainer binds the host's $HOME, /tmp and /var/tmp (and a
site's bind paths) over the image's directories, which hides a PREFIX under
them. `sys.executable` and `CONDA_PREFIX` say whichever path is used.

The host needs Apptainer ≥ 1.1 (or SingularityCE ≥ 3.10) usable by the user
and `unsquashfs`; the sandbox is made in the build directory (as large as
the unpacked OS plus environment) and removed afterwards, as is any partial
OUT. A pip environment links to its base Python (e.g. /usr/bin/python3.11):
the base image must have that Python at that path, which is checked first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from sqenv import __version__, snippets
from sqenv.errors import BuildError, InputError, PrefixError, ToolMissing, UsageError
from sqenv.export import provenance, sifreader
from sqenv.launch import IMAGE_MARKER, MOUNT_PATH
from sqenv.publish import metadata
from sqenv.publish.layout import Install
from sqenv.ui import UI

ENV_SCRIPT = ".singularity.d/env/90-sqenv.sh"
RUNSCRIPT = ".singularity.d/runscript"
LABELS = ".singularity.d/labels.json"
COMPRESSION = "-comp zstd -Xcompression-level 3"


def runtime() -> str:
    for name in ("apptainer", "singularity"):
        path = shutil.which(name)
        if path:
            return path
    raise ToolMissing(
        "exporting a SIF needs `apptainer` (or `singularity`), and neither is on PATH",
        "load the site's apptainer module, or install Apptainer (≥ 1.1)",
    )


def choose_base(install: Install, given: Path | None) -> Path:
    """--base-image, else PREFIX/container.sif, else $SQENV_APPTAINER_IMAGE; checked to be a SIF."""
    if given is not None:
        base, what = given, "--base-image"
    elif (install.prefix / "container.sif").is_file():
        base, what = install.prefix / "container.sif", "the install's container.sif"
    elif os.environ.get("SQENV_APPTAINER_IMAGE"):
        base, what = Path(os.environ["SQENV_APPTAINER_IMAGE"]), "SQENV_APPTAINER_IMAGE"
    else:
        raise UsageError(
            "no base image for the SIF: give `--base-image OS.sif`",
            "use a SIF of the operating system the environment should run on (or set SQENV_APPTAINER_IMAGE)",
        )
    if not base.is_file():
        raise InputError(f"the base image `{base}` ({what}) is not a file")
    if not os.access(base, os.R_OK):
        raise InputError(f"the base image `{base}` is not readable by you")
    if not sifreader.is_sif(base):
        raise InputError(
            f"the base image `{base}` is not a SIF file",
            "convert it first, e.g. `apptainer build os.sif docker://debian:12`",
        )
    return base.absolute()


def check_output(out: Path) -> Path:
    out = out.absolute()
    if out.is_dir():
        raise UsageError(f"`{out}` is a directory", "name the SIF file to write, e.g. `--sif env.sif`")
    if not out.parent.is_dir():
        raise PrefixError(f"cannot write `{out}`: the directory `{out.parent}` does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise PrefixError(f"cannot write `{out}`: `{out.parent}` is not writable by you",
                          "pick a directory of yours for `--sif`")  # fmt: skip
    if out.exists() and not os.access(out, os.W_OK):
        raise PrefixError(f"cannot write `{out}`: the file exists and is not writable by you")
    return out


def _exec(exe: str, base: Path, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([exe, "-s", "exec", str(base), *argv], capture_output=True, text=True, cwd="/",
                              timeout=600, stdin=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} timed out") from None


def check_python(exe: str, base: Path, python: dict | None) -> None:
    """A pip environment's bin/python links to its base interpreter: the base image must have the same one."""
    if not python or not python.get("executable") or python.get("manager") == "conda":
        return
    path, version = python["executable"], ".".join(str(python.get("version", "")).split(".")[:2])
    proc = _exec(exe, base, snippets.sh("sif-python.sh", path), "checking the base image's Python")
    found = proc.stdout.strip() if proc.returncode == 0 else ""
    if found != version:
        seen = f"Python {found}" if found else "no such Python"
        raise InputError(
            f"this pip environment runs on Python {version} at `{path}`; the base image `{base.name}` has {seen} there",
            f"use a base image with Python {version} at `{path}` (an image of the system the environment was made on)",
        )


def _activation(tree: Path) -> str:
    """The install's own activation script, as an env script: sourced, no exec, environ at its fixed path."""
    script = tree / ".sqenv" / "activate.sh"
    if not script.is_file():
        return ""
    body = script.read_text()
    body = body.replace('"${0%/*}/environ.sh"', f"{MOUNT_PATH}/.sqenv/environ.sh")
    lines = [line for line in body.splitlines() if line.strip() != 'exec "$@"']
    return "\n".join(lines) + "\n"


def env_script(prefix: Path, tree: Path) -> str:
    q = shlex.quote(str(prefix))
    return (
        "# sqenv: this environment, set up as its launchers do (see sqenv/export/sif.py)\n"
        f"if [ -f {q}/{IMAGE_MARKER} ]; then SQENV_PREFIX={q}; else SQENV_PREFIX={MOUNT_PATH}; fi\n"
        "export SQENV_PREFIX\n"
        'case ":$PATH:" in *":$SQENV_PREFIX/bin:"*) ;; *) PATH=$SQENV_PREFIX/bin${PATH:+:$PATH} ;; esac\n'
        "export PATH\n" + _activation(tree)
    )


def labels(inside: Path, data: dict, version: dict, lock_text: str, base: Path) -> dict[str, str]:
    python = version.get("python") or {}
    return {
        "org.sqenv.version": __version__,
        "org.sqenv.prefix": str(inside),
        "org.sqenv.kind": data["kind"],
        "org.sqenv.environment-version": str(version["number"]),
        "org.sqenv.packages": str(len(version.get("packages", []))),
        **({"org.sqenv.python": str(python["version"])} if python.get("version") else {}),
        "org.sqenv.mount-path": MOUNT_PATH,
        "org.sqenv.lock": f"{MOUNT_PATH}/{provenance.LOCK_PATH}",
        "org.sqenv.lock.sha256": hashlib.sha256(lock_text.encode()).hexdigest(),
        "org.sqenv.sbom": f"{MOUNT_PATH}/{provenance.SBOM_PATH}",
        "org.sqenv.base-image": base.name,
    }


def _run(argv: list[str], what: str, *, env: dict | None = None, cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join("  | " + line for line in (proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise BuildError(f"{what} failed (exit code {proc.returncode})", None, tail)


def _ensure_provenance(tree: Path, data: dict, version: dict) -> str:
    """The lock text inside the tree; written from the metadata for images made before sqenv had it."""
    lock = tree / provenance.LOCK_PATH
    if not lock.is_file():
        from sqenv.pack.reproducible import epoch

        packages = list(version.get("packages", []))
        doc = provenance.lock_document(kind=data["kind"], mount_path=MOUNT_PATH, python=version.get("python"),
                                       packages=packages, conda_lock=version.get("lock"),
                                       index=(version.get("inputs") or {}).get("index") or {})  # fmt: skip
        provenance.write_into(tree, doc, "sqenv-environment", epoch())
    return lock.read_text()


def export(prefix: Path, out: Path, base_image: Path | None, ui: UI, build_dir: Path | None = None, *,
           inside: str | None = None, mount_points: list[str] | None = None) -> Path:  # fmt: skip
    """Write OUT.sif for the install at PREFIX (see the module's doc). Nothing is left behind on failure.

    `inside`: the path the environment has in the SIF besides /mnt/sqenv (default PREFIX; cotainr's
    front end gives its own); `mount_points`: directories to make for a system's bind paths."""
    install = Install.open(prefix)
    data = metadata.load(install.metadata)
    version = metadata.current(data)
    if data["kind"] == "wrap" and not version.get("layers"):
        raise UsageError(f"`{install.prefix}` wraps a container: that container is already its SIF",
                         f"use `{install.prefix}/container.sif` itself")  # fmt: skip
    if len(version["layers"]) != 1:
        raise PrefixError(f"`{install.prefix}` has {len(version['layers'])} image layers; a SIF needs one",
                          f"merge them first with `sqenv compact {install.prefix}`")  # fmt: skip
    if data.get("mount_path", MOUNT_PATH) != MOUNT_PATH:
        raise UsageError(f"`{install.prefix}` is shown at its original path (`wrap --mask`); export supports "
                         f"installs at {MOUNT_PATH}")  # fmt: skip
    out = check_output(out)
    exe = runtime()
    if shutil.which("unsquashfs") is None:
        raise ToolMissing("exporting a SIF needs `unsquashfs`", "Debian: `apt-get install squashfs-tools`")
    base = choose_base(install, base_image)
    layer = install.prefix / version["layers"][0]
    if not layer.is_file():
        raise PrefixError(f"the image `{layer}` of this install is missing", "rebuild it with `sqenv create --force`")
    with ui.phase(f"Checking the base image {base.name}"):
        check_python(exe, base, version.get("python"))
    from sqenv.builders.workdir import workdir

    with workdir(build_dir) as work:
        _build(install, data, version, base, layer, out, exe, work, ui, Path(inside or install.prefix),
               mount_points or [])  # fmt: skip
    ui.info(f"Exported {install.prefix} to {out} ({out.stat().st_size / 1e6:,.0f} MB, base {base.name})")
    return out


def _build(install: Install, data: dict, version: dict, base: Path, layer: Path, out: Path, exe: str, work: Path,
           ui: UI, inside: Path, mount_points: list[str]) -> None:  # fmt: skip
    root = work / "root"
    env = {**os.environ, "APPTAINER_TMPDIR": str(work), "SINGULARITY_TMPDIR": str(work),
           "APPTAINER_CACHEDIR": str(work / "cache"), "SINGULARITY_CACHEDIR": str(work / "cache")}  # fmt: skip
    with ui.phase(f"Unpacking the base image {base.name}"):
        _run([exe, "-s", "build", "--sandbox", str(root), str(base)], f"unpacking `{base}`", env=env, cwd=work)
    tree = root / MOUNT_PATH.lstrip("/")
    if tree.exists() or tree.is_symlink():
        raise InputError(f"the base image `{base.name}` already has `{MOUNT_PATH}`", "use a plain OS image")
    tree.parent.mkdir(parents=True, exist_ok=True)
    with ui.phase(f"Unpacking the environment ({layer.name})"):
        _run(["unsquashfs", "-n", "-q", "-d", str(tree), str(layer)], f"unpacking `{layer}`", cwd=work)
    link = root / str(inside).lstrip("/")
    if link.exists() or link.is_symlink():
        raise InputError(f"the base image `{base.name}` already has `{inside}`",
                         "export an install whose prefix is not a path of the operating system")  # fmt: skip
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(MOUNT_PATH)
    lock_text = _ensure_provenance(tree, data, version)
    for point in mount_points:
        (root / point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / ENV_SCRIPT).write_text(env_script(inside, tree))
    (root / RUNSCRIPT).write_text(snippets.text("sif-run.sh"))
    (root / RUNSCRIPT).chmod(0o755)
    label_file = root / LABELS
    try:
        existing = json.loads(label_file.read_text()) if label_file.is_file() else {}
    except ValueError:
        existing = {}
    existing.update(labels(inside, data, version, lock_text, base))
    if mount_points:
        existing["org.sqenv.binds"] = ",".join(mount_points)
    label_file.write_text(json.dumps(existing, indent=1) + "\n")
    sif = work / "out.sif"
    with ui.phase("Building the SIF (zstd)"):
        _run([exe, "-s", "build", "--mksquashfs-args", COMPRESSION, str(sif), str(root)], "`apptainer build`",
             env=env, cwd=work)  # fmt: skip
        sbom = ["--datatype", "9", "--sbomformat", "cyclonedx-json", "--filename", sifreader.SBOM_OBJECT]
        _run([exe, "sif", "add", *sbom, str(sif), str(tree / provenance.SBOM_PATH)], "adding the SBOM", env=env)
        _run([exe, "sif", "add", "--datatype", "6", "--filename", sifreader.LOCK_OBJECT, str(sif),
              str(tree / provenance.LOCK_PATH)], "adding the lock", env=env)  # fmt: skip
    _place(sif, out)


def _place(sif: Path, out: Path) -> None:
    """Copy next to OUT under a hidden name, then rename: OUT is the old file or the whole new one."""
    part = out.with_name(f".{out.name}.sqenv-part{os.getpid()}")
    try:
        shutil.copyfile(sif, part)
        os.chmod(part, 0o755 & ~_umask())
        os.replace(part, out)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise PrefixError(f"cannot write `{out}`: {exc.strerror}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
