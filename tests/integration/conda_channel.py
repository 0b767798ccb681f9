"""Build a small but REAL local conda channel for the tests.

``build_channel(root)`` writes genuine conda packages (``.tar.bz2`` and
``.conda``) with ``info/index.json``, ``info/paths.json`` (sha256, size,
``prefix_placeholder`` and ``file_mode``), ``info/has_prefix`` and payloads,
then indexes them with ``rattler.index.index_fs`` for ``linux-64`` and
``noarch``. The returned directory can be used as a channel via
``channel.as_uri()`` (``file:///...``).

py-rattler 0.28 has no package *writing* API (``rattler.package_streaming``
only reads/extracts), so the archives are written here with ``tarfile``,
``zipfile`` and zstd. zstd compression uses the ``zstandard`` module when it is
importable; otherwise a tiny pure-Python encoder emits a valid zstd frame made
of raw (uncompressed) blocks, so no extra dependency is needed.

Packages (all placeholders are :data:`PLACEHOLDER`, a 255-char conda-build
style ``_h_env_placehold_...`` prefix):

- ``sqpython 3.11.0`` (linux-64, both ``.tar.bz2`` and ``.conda``): NOT a real
  Python. ``bin/sqhello`` (``#!/bin/sh`` script, text placeholder in
  ``echo "prefix=<PLACEHOLDER>"``) and ``etc/conda/activate.d/sqpython.sh``
  exporting ``SQPYTHON_ACTIVATED=yes``.
- ``sqbin 1.0`` (linux-64, ``.conda``): a C program compiled here with gcc
  whose compiled-in string is ``<PLACEHOLDER>/share/sqbin/data.txt`` (binary
  placeholder); it prints that path then the file's contents. Plus
  ``share/sqbin/data.txt``.
- ``sqlib-a 1.0`` (``.tar.bz2``) and ``sqlib-a 2.0`` (``.conda``), linux-64.
- ``sqlib-b 1.0`` (linux-64, ``.tar.bz2``) depends on ``sqlib-a >=2``.
- ``sqapp 1.0`` (``noarch: generic``, ``.conda``) depends on ``sqlib-b`` and
  ``sqpython``; ``bin/sqapp`` script with a text placeholder.
- ``sqconflict-x 1.0`` (depends ``sqlib-a <2``) and ``sqconflict-y 1.0``
  (depends ``sqlib-a >=2``), linux-64, ``.tar.bz2``.
- ``sqneeds-glibc 1.0`` (linux-64, ``.tar.bz2``) depends on the virtual
  package ``__glibc >=2.17``: solvable only when virtual packages are passed
  to ``rattler.solve`` (it passes none by default).
- An MPI family, shaped like conda-forge's: ``mpi 1.0`` (``noarch``, builds
  ``mpich`` and ``openmpi``, the marker of which implementation is installed);
  ``mpich 4.1.2`` with a bundled build (``h0bundled_100``, preferred: a
  ``lib/libmpi.so.12`` stub) and an external one (``external_0``, no library);
  ``openmpi 4.1.6`` the same with ``lib/libmpi.so.40``; ``impi_rt 2021.10`` with
  only a bundled build (``lib/libmpi.so.12``: no external choice); ``mpi4py 3.1.5``
  depending on ``mpich >=4``.
- Microarchitecture builds, shaped like conda-forge's microarch-level
  feedstock: ``_x86_64-microarch-level`` versions 1..4 (``noarch``), one build
  per archspec name at its level (``2_x86_64_v3``, ``2_zen2``, ...), each
  depending on ``__archspec 1 NAME``; ``sqfast 1.0`` with a generic build
  (``generic_0``) and a preferred ``v3_100`` build that depends on
  ``_x86_64-microarch-level >=3``; ``share/sqfast/BUILD`` says which.

The result is cached in ``root`` under a name derived from a hash of this
file, the compiler version and the zstd backend; it is built in a temporary
directory and renamed into place, so concurrent callers are safe and a
present directory is always complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PACKAGES",
    "PLACEHOLDER",
    "SQBIN_DATA",
    "SQBIN_DATA_RELPATH",
    "build_channel",
]

# conda-build style long placeholder: a build prefix padded with
# "_placehold" up to 255 characters. Any string works for rattler's installer
# (it replaces exactly what paths.json names per file), but a long one leaves
# room for the binary (NUL-padded) replacement of any shorter real prefix.
_PLACEHOLDER_HEAD = "/opt/conda-bld/sqenv_1700000000000/_h_env"
PLACEHOLDER = (_PLACEHOLDER_HEAD + "_placehold" * 30)[:255]
assert len(PLACEHOLDER) == 255

SQBIN_DATA_RELPATH = "share/sqbin/data.txt"
SQBIN_DATA = b"hello from sqbin data\n"

#: package timestamp (ms since epoch) written into every index.json
_TIMESTAMP_MS = 1_700_000_000_000
_MTIME = _TIMESTAMP_MS // 1000
_BUILD = "sq_0"


@dataclass(frozen=True)
class _File:
    path: str
    data: bytes
    mode: int = 0o644
    #: "text" or "binary" when the file contains PLACEHOLDER
    file_mode: str | None = None


@dataclass
class _Package:
    name: str
    version: str
    files: list[_File]
    depends: list[str] = field(default_factory=list)
    noarch: str | None = None
    formats: tuple[str, ...] = (".tar.bz2",)
    build: str = _BUILD
    build_number: int = 0

    @property
    def subdir(self) -> str:
        return "noarch" if self.noarch else "linux-64"

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


#: name -> list of (version, subdir, formats) — handy for tests
PACKAGES: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}


_SQHELLO = f"""#!/bin/sh
# sqhello: test script from the sqpython package
echo "prefix={PLACEHOLDER}"
""".encode()

_SQPYTHON_ACTIVATE = b"""# activation script of the sqpython test package
export SQPYTHON_ACTIVATED=yes
"""

_SQAPP = f"""#!/bin/sh
# sqapp: test script from the noarch sqapp package
SQAPP_PREFIX="{PLACEHOLDER}"
echo "sqapp prefix=$SQAPP_PREFIX"
exec "$SQAPP_PREFIX/bin/sqhello" "$@"
""".encode()

_SQBIN_C = r"""
#include <stdio.h>

/* The placeholder is replaced in BINARY mode at install time: the C string
   becomes "<new prefix>/share/sqbin/data.txt" padded with NULs so that the
   file size (and every offset in the ELF file) stays the same. */
static const char data_path[] = "@PLACEHOLDER@/@DATA@";

int main(void)
{
    char buf[4096];
    size_t n;
    FILE *f;

    puts(data_path);
    fflush(stdout);
    f = fopen(data_path, "rb");
    if (f == NULL) {
        perror("sqbin: cannot open data file");
        return 2;
    }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
}
"""


def _packages(sqbin_binary: bytes) -> list[_Package]:
    return [
        _Package(
            "sqpython",
            "3.11.0",
            [
                _File("bin/sqhello", _SQHELLO, 0o755, "text"),
                _File("etc/conda/activate.d/sqpython.sh", _SQPYTHON_ACTIVATE),
            ],
            formats=(".tar.bz2", ".conda"),
        ),
        _Package(
            "sqbin",
            "1.0",
            [
                _File("bin/sqbin", sqbin_binary, 0o755, "binary"),
                _File(SQBIN_DATA_RELPATH, SQBIN_DATA),
            ],
            formats=(".conda",),
        ),
        _Package("sqlib-a", "1.0", [_File("share/sqlib-a/VERSION", b"1.0\n")]),
        _Package(
            "sqlib-a",
            "2.0",
            [_File("share/sqlib-a/VERSION", b"2.0\n")],
            formats=(".conda",),
        ),
        _Package(
            "sqlib-b",
            "1.0",
            [_File("share/sqlib-b/VERSION", b"1.0\n")],
            depends=["sqlib-a >=2"],
        ),
        _Package(
            "sqapp",
            "1.0",
            [_File("bin/sqapp", _SQAPP, 0o755, "text")],
            depends=["sqlib-b", "sqpython"],
            noarch="generic",
            formats=(".conda",),
        ),
        _Package(
            "sqconflict-x",
            "1.0",
            [_File("share/sqconflict-x/README", b"x\n")],
            depends=["sqlib-a <2"],
        ),
        _Package(
            "sqconflict-y",
            "1.0",
            [_File("share/sqconflict-y/README", b"y\n")],
            depends=["sqlib-a >=2"],
        ),
        _Package(
            "sqneeds-glibc",
            "1.0",
            [_File("share/sqneeds-glibc/README", b"needs __glibc >=2.17\n")],
            depends=["__glibc >=2.17"],
        ),
        *_mpi_packages(),
        *_microarch_packages(),
    ]


#: `_x86_64-microarch-level` builds: archspec name -> x86-64 level (as conda-forge's feedstock)
MICROARCH_LEVELS = {"x86_64": 1, "x86_64_v2": 2, "x86_64_v3": 3, "haswell": 3, "zen2": 3, "zen3": 3,
                    "x86_64_v4": 4, "skylake_avx512": 4, "zen4": 4}  # fmt: skip

_LIBMPI_STUB = b"\x7fELF stub of a bundled MPI library (sqenv test channel)\n"


def _mpi_packages() -> list[_Package]:
    """mpich/openmpi with bundled and external builds, impi_rt bundled only, mpi4py on mpich."""
    out = [_Package("mpi", "1.0", [], noarch="generic", build=impl) for impl in ("mpich", "openmpi")]
    for name, version, lib in (("mpich", "4.1.2", "libmpi.so.12"), ("openmpi", "4.1.6", "libmpi.so.40")):
        depends = [f"mpi 1.0 {name}"]
        out.append(_Package(name, version, [_File(f"lib/{lib}", _LIBMPI_STUB, 0o755)], depends=depends,
                            build="h0bundled_100", build_number=100))  # fmt: skip
        out.append(_Package(name, version, [], depends=depends, build="external_0"))
    out.append(_Package("impi_rt", "2021.10", [_File("lib/libmpi.so.12", _LIBMPI_STUB, 0o755)], build="h0bundled_0"))
    out.append(_Package("mpi4py", "3.1.5", [_File("share/mpi4py/README", b"mpi4py stub\n")], depends=["mpich >=4"]))
    return out


def _microarch_packages() -> list[_Package]:
    out = []
    for name, level in MICROARCH_LEVELS.items():
        out.append(_Package("_x86_64-microarch-level", str(level), [], depends=[f"__archspec 1 {name}"],
                            noarch="generic", build=f"2_{name}", build_number=2))  # fmt: skip
    out.append(_Package("sqfast", "1.0", [_File("share/sqfast/BUILD", b"generic\n")], build="generic_0"))
    out.append(_Package("sqfast", "1.0", [_File("share/sqfast/BUILD", b"v3\n")],
                        depends=["_x86_64-microarch-level >=3"], build="v3_100", build_number=100))  # fmt: skip
    return out


for _p in _packages(b""):
    PACKAGES.setdefault(_p.name, []).append((_p.version, _p.subdir, _p.formats))
del _p


# --------------------------------------------------------------------------
# zstd
# --------------------------------------------------------------------------


def _zstd_backend() -> str:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return "raw"
    return "zstandard"


def _zstd_raw_frame(data: bytes) -> bytes:
    """A valid zstd frame holding ``data`` in raw (stored) blocks.

    Frame header: magic, descriptor 0x00 (no content size, no checksum, not
    single-segment), window descriptor 0x38 (window 128 KiB). Each block has a
    3-byte little-endian header: bit 0 = last block, bits 1-2 = type (0 raw),
    bits 3.. = size (<= 128 KiB).
    """
    out = bytearray(struct.pack("<I", 0xFD2FB528))
    out += bytes([0x00, 0x38])
    block = 128 * 1024
    chunks = [data[i : i + block] for i in range(0, len(data), block)] or [b""]
    for i, chunk in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        header = last | (0 << 1) | (len(chunk) << 3)
        out += header.to_bytes(3, "little")
        out += chunk
    return bytes(out)


def _zstd(data: bytes) -> bytes:
    if _zstd_backend() == "zstandard":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return _zstd_raw_frame(data)


# --------------------------------------------------------------------------
# package writing
# --------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _info_files(pkg: _Package) -> list[_File]:
    index: dict[str, object] = {
        "name": pkg.name,
        "version": pkg.version,
        "build": pkg.build,
        "build_number": pkg.build_number,
        "depends": list(pkg.depends),
        "license": "MIT",
        "subdir": pkg.subdir,
        "timestamp": _TIMESTAMP_MS,
    }
    if pkg.noarch:
        index["noarch"] = pkg.noarch
    else:
        index["arch"] = "x86_64"
        index["platform"] = "linux"

    paths = []
    has_prefix = []
    for f in sorted(pkg.files, key=lambda f: f.path):
        entry: dict[str, object] = {
            "_path": f.path,
            "path_type": "hardlink",
            "sha256": _sha256(f.data),
            "size_in_bytes": len(f.data),
        }
        if f.file_mode:
            if PLACEHOLDER.encode() not in f.data:
                raise AssertionError(f"{f.path}: placeholder not found in payload")
            entry["file_mode"] = f.file_mode
            entry["prefix_placeholder"] = PLACEHOLDER
            has_prefix.append(f"{PLACEHOLDER} {f.file_mode} {f.path}\n")
        paths.append(entry)

    info = [
        _File("info/index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()),
        _File(
            "info/paths.json",
            (json.dumps({"paths": paths, "paths_version": 1}, indent=2, sort_keys=True) + "\n").encode(),
        ),
        _File("info/files", "".join(f.path + "\n" for f in sorted(pkg.files, key=lambda f: f.path)).encode()),
        _File(
            "info/about.json",
            (
                json.dumps({"summary": f"sqenv test package {pkg.name}", "license": "MIT"}, sort_keys=True) + "\n"
            ).encode(),
        ),
    ]
    if has_prefix:
        info.append(_File("info/has_prefix", "".join(has_prefix).encode()))
    return info


def _tar_bytes(files: list[_File]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_to_tar(tar, files)
    return buf.getvalue()


def _add_to_tar(tar: tarfile.TarFile, files: list[_File]) -> None:
    for f in files:
        ti = tarfile.TarInfo(f.path)
        ti.size = len(f.data)
        ti.mode = f.mode
        ti.mtime = _MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        tar.addfile(ti, io.BytesIO(f.data))


def _write_tar_bz2(pkg: _Package, dest: Path) -> None:
    files = _info_files(pkg) + sorted(pkg.files, key=lambda f: f.path)
    with open(dest, "wb") as raw, tarfile.open(fileobj=raw, mode="w:bz2", format=tarfile.PAX_FORMAT) as tar:
        _add_to_tar(tar, files)


def _write_conda(pkg: _Package, dest: Path) -> None:
    """``.conda`` v2: an uncompressed zip of metadata.json, pkg-*.tar.zst and
    info-*.tar.zst (info last, as conda-package-handling writes it)."""
    members = [
        ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
        (f"pkg-{pkg.stem}.tar.zst", _zstd(_tar_bytes(sorted(pkg.files, key=lambda f: f.path)))),
        (f"info-{pkg.stem}.tar.zst", _zstd(_tar_bytes(_info_files(pkg)))),
    ]
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zi = zipfile.ZipInfo(name, date_time=(2023, 11, 14, 22, 13, 20))
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, data)


# --------------------------------------------------------------------------
# sqbin
# --------------------------------------------------------------------------


def _compiler() -> str:
    for cc in (os.environ.get("CC"), "gcc", "cc"):
        if cc and shutil.which(cc):
            return cc
    raise RuntimeError("tests/conda_channel.py needs a C compiler (gcc) to build the sqbin test package")


def _compiler_id(cc: str) -> str:
    out = subprocess.run([cc, "--version"], check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else cc


def _build_sqbin(cc: str, workdir: Path) -> bytes:
    src = _SQBIN_C.replace("@PLACEHOLDER@", PLACEHOLDER).replace("@DATA@", SQBIN_DATA_RELPATH)
    (workdir / "sqbin.c").write_text(src)
    subprocess.run(
        [cc, "-O1", "-o", "sqbin", "sqbin.c"],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    data = (workdir / "sqbin").read_bytes()
    needle = (PLACEHOLDER + "/" + SQBIN_DATA_RELPATH).encode() + b"\0"
    if data.count(PLACEHOLDER.encode()) != 1 or needle not in data:
        raise AssertionError("compiled sqbin does not hold exactly one placeholder C string")
    return data


# --------------------------------------------------------------------------
# channel
# --------------------------------------------------------------------------

# py-rattler 0.28 trap: a process that exits right after an index_fs (also,
# less often, solve/install) call can die at interpreter shutdown with
# SIGSEGV or "Fatal Python error: PyGILState_Release" (tokio threads dropping
# Python objects while the interpreter finalizes; ~20% after two index_fs
# calls here). Indexing therefore runs in a child process that leaves with
# os._exit() once the repodata is written.
_INDEX_SCRIPT = r"""
import asyncio, os, sys, traceback
try:
    from rattler.index import index_fs
    from rattler.platform import Subdir
    for subdir in ("linux-64", "noarch"):
        # target_platform="linux-64" alone does NOT index noarch when the
        # noarch dir exists (despite the docstring): index both explicitly.
        asyncio.run(index_fs(sys.argv[1], target_platform=Subdir(subdir),
                             write_zst=False, write_shards=False, force=True))
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def _index(channel: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _INDEX_SCRIPT, str(channel)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"indexing {channel} failed (rc={proc.returncode}):\n{proc.stderr}")
    for subdir in ("linux-64", "noarch"):
        if not (channel / subdir / "repodata.json").is_file():
            raise RuntimeError(f"index_fs did not write {subdir}/repodata.json:\n{proc.stderr}")
    shutil.rmtree(channel / ".tmp", ignore_errors=True)  # index_fs leaves an empty .tmp/


def _cache_key(cc: str) -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(_compiler_id(cc).encode())
    h.update(_zstd_backend().encode())
    try:
        import rattler

        h.update(str(rattler.__version__).encode())
    except Exception:  # pragma: no cover - rattler missing is reported later
        pass
    return h.hexdigest()[:16]


def build_channel(root: Path) -> Path:
    """Build (or reuse) the test channel under ``root``; return its directory.

    Use ``build_channel(root).as_uri()`` as the channel URL.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cc = _compiler()
    final = root / f"sqchannel-{_cache_key(cc)}"
    if final.is_dir():
        return final

    tmp = Path(tempfile.mkdtemp(prefix=".sqchannel-tmp-", dir=root))
    try:
        work = tmp / "work"
        work.mkdir()
        channel = tmp / "channel"
        for subdir in ("linux-64", "noarch"):
            (channel / subdir).mkdir(parents=True)
        sqbin = _build_sqbin(cc, work)
        for pkg in _packages(sqbin):
            for fmt in pkg.formats:
                dest = channel / pkg.subdir / (pkg.stem + fmt)
                if fmt == ".conda":
                    _write_conda(pkg, dest)
                else:
                    _write_tar_bz2(pkg, dest)
        _index(channel)
        try:
            os.rename(channel, final)
        except OSError:
            if not final.is_dir():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
