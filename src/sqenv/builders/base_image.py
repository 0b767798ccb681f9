"""A pip layer on a container's own Python (`sqenv create PREFIX --base-image vendor.sif -r req.txt`).

Vendor images (LUMI's PyTorch/ROCm containers) hold a Python whose packages
match the node's GPU driver; users need "a few more packages" on top. The
layer is a venv with `include-system-site-packages`, built INSIDE the
container (Apptainer, the staging directory bound read-write at the mount
path, uv's own binary bound in), packed as sqenv's image, and bound over the
container at launch (engines/apptainer.sh). The venv's `python` is the
container's, so the container's packages (torch) are seen, not reinstalled.

uv does not count a venv's system site-packages as installed
(astral-sh/uv#7358, #4466): any requirement naming torch would download it
again. So before each install the container's distributions are written into
the venv as metadata-only stubs (a `.dist-info` with METADATA, a RECORD and
INSTALLER `sqenv-base-image`); uv treats them as installed and resolves
against their versions. Stubs are removed before packing. A stub uv
uninstalled means the resolution replaced a container package: an error,
unless the user named that package (the layer's copy then shadows the
container's, on purpose).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from sqenv import snippets
from sqenv.errors import BuildError, InputError
from sqenv.launch import MOUNT_PATH

UV_INSIDE = "/.sqenv-uv"
"""Where uv's binary (the host's, from sqenv's own install) is bound in the container."""
CA_INSIDE = "/.sqenv-ca.pem"
"""Where the host's `$SSL_CERT_FILE` (a site's CA bundle, for a TLS-intercepting proxy) is bound."""
STUB_INSTALLER = "sqenv-base-image"


@dataclass(frozen=True)
class ContainerRun:
    """How build commands run inside the base image: `apptainer exec` with the staging directory
    at the mount path and the host directories the build reads (work dir, uv's cache, cwd, the
    requirement files' directories) at their own paths."""

    exe: str
    image: Path
    binds: tuple[str, ...] = ()
    uv_host: str | None = None
    ca_file: str | None = None

    def argv(self, staging: Path | None = None, cwd: Path | None = None) -> list[str]:
        binds = list(self.binds)
        if staging is not None:
            binds.append(f"{staging}:{MOUNT_PATH}")
        if self.uv_host:
            binds.append(f"{self.uv_host}:{UV_INSIDE}:ro")
        if self.ca_file:
            binds.append(f"{self.ca_file}:{CA_INSIDE}:ro")
        argv = [self.exe, "-s", "exec", "--no-eval"]
        argv += ["--bind", ",".join(binds)] if binds else []
        argv += ["--env", f"SSL_CERT_FILE={CA_INSIDE}"] if self.ca_file else []
        argv += ["--pwd", str(cwd)] if cwd is not None else []
        return [*argv, str(self.image)]


def check_ref(image: Path) -> None:
    """`--base-image-ref`: every launch will run whatever is at that path, so nobody but you and
    root may be able to change it: the file and each directory above it owned by you or root and
    writable by nobody else (a sticky directory, like /tmp, protects what others do not own)."""
    me = os.geteuid()
    path = Path(os.path.realpath(image))
    for part in (path, *path.parents):
        try:
            st = part.stat()
        except OSError as exc:
            raise InputError(f"cannot check `{part}` (`--base-image-ref {image}`): {exc.strerror}") from None
        sticky = part.is_dir() and st.st_mode & 0o1000
        if st.st_uid not in (0, me) or (st.st_mode & 0o022 and not sticky):
            raise InputError(f"`--base-image-ref {image}`: `{part}` can be changed by other users, and every launch "
                             "would run what they put there", "reference an image only you or the site's admins can "
                             "change, or leave out `--base-image-ref` to copy it into the install")  # fmt: skip


def bindable(path: Path | str, what: str) -> str:
    """Apptainer's `--bind` syntax cannot express `,` or `:` in a path."""
    text = str(path)
    if "," in text or ":" in text:
        raise InputError(f"{what} `{text}` has a `,` or `:`, which Apptainer cannot bind",
                         "use a path without them (--build-dir, or move the file)")  # fmt: skip
    return text


def container_run(image: Path, *, workdir: Path, cwd: Path, inputs: Iterable[Path], cache: str | None,
                  uv_host: str | None) -> ContainerRun:  # fmt: skip
    """The `ContainerRun` of one build: the host paths it needs are bound at their own paths, on
    top of what Apptainer binds itself ($HOME, /tmp, /var/tmp); the container's own /opt, /usr
    stay as they are. (The image runs with the user's rights, here as at every launch: choose
    images you trust.)"""
    from sqenv.builders.sif import runtime

    wanted = [workdir, cwd, *(p.parent for p in inputs)]
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        wanted.append(Path(cache))
    binds: list[str] = []
    for path in sorted({Path(os.path.realpath(p)) for p in wanted}, key=lambda p: len(p.parts)):
        if path == Path("/") or any(path.is_relative_to(b) for b in binds):
            continue
        binds.append(bindable(path, "the path"))
    ca = os.environ.get("SSL_CERT_FILE")  # the host's trust for uv's downloads, not the image's
    ca = bindable(os.path.realpath(ca), "$SSL_CERT_FILE") if ca and os.path.isfile(ca) else None
    return ContainerRun(exe=runtime(), image=image, binds=tuple(binds), uv_host=uv_host, ca_file=ca)


_PY_INFO = (
    "import json, os, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3],"
    " 'implementation': sys.implementation.name, 'executable': os.path.realpath(sys.executable),"
    " 'prefix': sys.prefix}))"
)


def find_python(run: ContainerRun, requested: str | None) -> tuple[str, dict]:
    """The container's Python (default: `python3` on the image's PATH), checked by running it."""
    name = requested or "python3"
    if requested and not requested.startswith("/"):
        raise InputError(f"`--python {requested}` must be an absolute path inside the base image",
                         "e.g. `--python /opt/conda/bin/python3`, or leave it out for the image's python3")  # fmt: skip
    # -s: the user's own ~/.local packages are not the image's (nor are they in the layer)
    argv = [*run.argv(cwd=Path("/")), "/bin/sh", "-c", 'exec "$0" -s -c "$1"', name, _PY_INFO]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildError(f"looking for Python in `{run.image}` timed out") from None
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        where = f"at `{name}`" if requested else "(`python3` on its PATH)"
        tail = "\n".join("  | " + line for line in proc.stderr.strip().splitlines()[-5:])
        if "container creation failed" in proc.stderr:  # Apptainer's own, before any Python ran
            raise BuildError(f"{Path(run.exe).name} could not start `{run.image.name}`",
                             "see its FATAL line: the build binds the staging directory and sqenv's"
                             " own uv into the container, so Apptainer must see both", tail) from None  # fmt: skip
        raise InputError(f"the base image `{run.image.name}` has no working Python {where}",
                         "name the container's interpreter with `--python /path/inside/the/image`",
                         tail or None) from None  # fmt: skip
    if info.get("implementation") not in ("cpython", "pypy"):
        raise InputError(f"`{name}` in `{run.image.name}` is not a CPython or PyPy interpreter")
    info["requested"] = name
    return info["executable"], info


# ------------------------------------------------------------------------------ the base's packages


def base_packages(run: ContainerRun, python: str) -> list[tuple[str, str]]:
    """(name, version) of every distribution the container's Python sees."""
    argv = [*run.argv(cwd=Path("/")), python, "-s", "-c", snippets.text("base_image_dists.py")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    try:
        pairs = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = "\n".join("  | " + x for x in proc.stderr.strip().splitlines()[-5:])
        raise BuildError(f"cannot list the packages of `{run.image.name}` with {python}", details=tail) from None
    return [(str(n), str(v)) for n, v in pairs]


_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")  # PEP 508
_VERSION = re.compile(r"[A-Za-z0-9+!_-]+(\.[A-Za-z0-9+!_-]+)*")  # no `/`, no `..`


def drop_stubs(stubs: dict[str, Path]) -> None:
    """Remove what is left of the stubs (a failed install)."""
    for stub in stubs.values():
        shutil.rmtree(stub, ignore_errors=True)


def _stub_dir(site: Path, name: str, version: str) -> Path:
    return site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"


def write_stubs(site: Path, packages: list[tuple[str, str]]) -> dict[str, Path]:
    """Metadata-only stand-ins of the base's distributions in the venv (see the module's doc);
    none for a name the venv has itself (the pip `--seed` put there)."""
    own = {canonicalize_name(d.name.split("-")[0]) for d in site.glob("*.dist-info")}
    stubs: dict[str, Path] = {}
    for name, version in packages:
        key = canonicalize_name(name)
        if key in own or key in stubs or not (_NAME.fullmatch(name) and _VERSION.fullmatch(version)):
            continue  # (a name or version no installer accepts would not be a path in site-packages)
        stub = _stub_dir(site, name, version)
        stub.mkdir()
        (stub / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (stub / "INSTALLER").write_text(STUB_INSTALLER + "\n")
        (stub / "RECORD").write_text("".join(f"{stub.name}/{f},,\n" for f in ("METADATA", "INSTALLER", "RECORD")))
        stubs[key] = stub
    return stubs


def remove_stubs(site: Path, stubs: dict[str, Path], named: set[str], versions: dict[str, str]) -> None:
    """Remove the stubs uv kept; a stub it uninstalled is a replaced base package: an error
    unless the user named it."""
    replaced = sorted(key for key, stub in stubs.items() if not stub.exists() and key not in named)
    for stub in stubs.values():
        if stub.exists():
            shutil.rmtree(stub)
    if replaced:
        shown = ", ".join(f"{k} {versions.get(k, '?')}" for k in replaced)
        hint = (
            f"pin the packages that need them to versions that work with the image's, or name `{replaced[0]}` "
            "in your requirements to install another one into the layer on purpose"
        )
        raise BuildError(f"your requirements need other versions of what the base image has: {shown}", hint)


def named_packages(packages: Iterable[str], requirement_files: Iterable[Path]) -> set[str]:
    """Canonical names the user asked for by name (in arguments and requirement files)."""
    lines = list(packages)
    for path in requirement_files:
        try:
            lines += path.read_text().splitlines()
        except OSError:
            continue
    names = set()
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    return names


def adopt_scripts(ctx, base_python: str) -> list[str]:
    """The image's console scripts for its own Python, in the layer's bin/ with the layer's Python
    (snippets/base_image_scripts.py); their names."""
    layer_python = f"{ctx.mount_path}/bin/python"
    argv = [
        layer_python,
        "-c",
        snippets.text("base_image_scripts.py"),
        base_python,
        f"{ctx.mount_path}/bin",
        layer_python,
    ]
    out = ctx.run(argv, what="adopting the base image's scripts")
    return out.split()
