"""The local test conda channel works end to end with py-rattler.

Builds the channel of ``tests/conda_channel.py``, solves and installs from it
with ``alternative_target_prefix="/mnt/sqenv"`` and checks the prefix
placeholder replacement (text and binary), the dependency resolution, the
conflict report and virtual packages.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import rattler
import rattler.package_streaming
from rattler.exceptions import SolverError

try:
    import conda_channel
except ImportError:  # tests/ imported as a package
    from tests import conda_channel

MOUNT = "/mnt/sqenv"
PLATFORMS = ["linux-64", "noarch"]


def _solve(channel: Path, specs: list[str], **kwargs) -> list:
    return asyncio.run(rattler.solve([channel.as_uri()], specs, platforms=PLATFORMS, **kwargs))


def _install(records: list, staging: Path, cache: Path) -> None:
    asyncio.run(
        rattler.install(
            records,
            staging,
            cache_dir=cache,
            alternative_target_prefix=MOUNT,
            show_progress=False,
        )
    )


def _package_member(archive: Path, member: str) -> bytes:
    """Read one file out of a .tar.bz2 package with the standard library."""
    with tarfile.open(archive, "r:bz2") as tar:
        f = tar.extractfile(member)
        assert f is not None
        return f.read()


@pytest.fixture(scope="module")
def channel(tmp_path_factory) -> Path:
    return conda_channel.build_channel(tmp_path_factory.mktemp("chan"))


@pytest.fixture(scope="module")
def installed(channel, tmp_path_factory):
    base = tmp_path_factory.mktemp("env")
    records = _solve(channel, ["sqapp", "sqbin"])
    staging = base / "staging"
    _install(records, staging, base / "pkgs")
    return records, staging


# --------------------------------------------------------------------------
# the channel itself
# --------------------------------------------------------------------------


def test_build_is_fast_and_idempotent(tmp_path):
    t0 = time.monotonic()
    first = conda_channel.build_channel(tmp_path)
    elapsed = time.monotonic() - t0
    assert elapsed < 15, elapsed
    stamp = (first / "linux-64" / "repodata.json").stat().st_mtime_ns
    t0 = time.monotonic()
    again = conda_channel.build_channel(tmp_path)
    assert again == first
    assert time.monotonic() - t0 < 1
    assert (first / "linux-64" / "repodata.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp dirs left behind
    assert first.as_uri().startswith("file:///")


def test_channel_layout_and_formats(channel):
    linux = json.loads((channel / "linux-64" / "repodata.json").read_text())
    noarch = json.loads((channel / "noarch" / "repodata.json").read_text())
    tar_bz2 = set(linux["packages"])
    conda = set(linux["packages.conda"])
    assert "sqpython-3.11.0-sq_0.tar.bz2" in tar_bz2
    assert "sqpython-3.11.0-sq_0.conda" in conda
    assert {"sqlib-a-1.0-sq_0.tar.bz2", "sqlib-b-1.0-sq_0.tar.bz2", "sqconflict-x-1.0-sq_0.tar.bz2"} <= tar_bz2
    assert {"sqbin-1.0-sq_0.conda", "sqlib-a-2.0-sq_0.conda"} <= conda
    assert noarch["packages.conda"]["sqapp-1.0-sq_0.conda"]["noarch"] == "generic"
    for name, rec in {**linux["packages"], **linux["packages.conda"], **noarch["packages.conda"]}.items():
        sub = "noarch" if name.startswith("sqapp") else "linux-64"
        data = (channel / sub / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rec["sha256"]
        assert len(data) == rec["size"]

    pkg = channel / "linux-64" / "sqbin-1.0-sq_0.conda"
    with zipfile.ZipFile(pkg) as zf:
        assert zf.namelist() == ["metadata.json", "pkg-sqbin-1.0-sq_0.tar.zst", "info-sqbin-1.0-sq_0.tar.zst"]
        assert json.loads(zf.read("metadata.json")) == {"conda_pkg_format_version": 2}
        for name in zf.namelist()[1:]:
            assert zf.read(name)[:4] == b"\x28\xb5\x2f\xfd"  # zstd magic


def test_paths_json_and_has_prefix(channel):
    ph = conda_channel.PLACEHOLDER
    assert len(ph) == 255
    tb = channel / "linux-64" / "sqpython-3.11.0-sq_0.tar.bz2"
    paths = json.loads(_package_member(tb, "info/paths.json"))
    assert paths["paths_version"] == 1
    entries = {e["_path"]: e for e in paths["paths"]}
    hello = entries["bin/sqhello"]
    assert hello["file_mode"] == "text"
    assert hello["prefix_placeholder"] == ph
    payload = _package_member(tb, "bin/sqhello")
    assert hello["sha256"] == hashlib.sha256(payload).hexdigest()
    assert hello["size_in_bytes"] == len(payload)
    assert "prefix_placeholder" not in entries["etc/conda/activate.d/sqpython.sh"]
    assert _package_member(tb, "info/has_prefix").decode() == f"{ph} text bin/sqhello\n"

    # rattler parses what we wrote (also the .conda variant)
    pj = rattler.PathsJson.from_package_archive(channel / "linux-64" / "sqbin-1.0-sq_0.conda")
    by_path = {str(e.relative_path): e for e in pj.paths}
    sqbin = by_path["bin/sqbin"]
    assert sqbin.prefix_placeholder.placeholder == ph
    assert sqbin.prefix_placeholder.file_mode.binary
    ij = rattler.IndexJson.from_package_archive(channel / "noarch" / "sqapp-1.0-sq_0.conda")
    assert ij.subdir == "noarch"
    assert sorted(ij.depends) == ["sqlib-b", "sqpython"]


def test_raw_zstd_fallback_is_readable_by_rattler(tmp_path, monkeypatch):
    monkeypatch.setattr(conda_channel, "_zstd_backend", lambda: "raw")
    data = bytes(range(256)) * 1200  # > one 128 KiB block
    pkg = conda_channel._Package("sqraw", "1.0", [conda_channel._File("share/raw.bin", data)], formats=(".conda",))
    dest = tmp_path / "sqraw-1.0-sq_0.conda"
    conda_channel._write_conda(pkg, dest)
    out = tmp_path / "out"
    rattler.package_streaming.extract(dest, out)
    assert (out / "share" / "raw.bin").read_bytes() == data
    assert json.loads((out / "info" / "index.json").read_text())["name"] == "sqraw"


# --------------------------------------------------------------------------
# solve + install
# --------------------------------------------------------------------------


def test_dependency_chain(installed, channel):
    records, staging = installed
    got = {r.name.normalized: r for r in records}
    assert set(got) == {"sqapp", "sqbin", "sqlib-b", "sqlib-a", "sqpython"}
    assert str(got["sqlib-a"].version) == "2.0"
    assert got["sqapp"].subdir == "noarch"
    # the same package in both formats: rattler picks the .conda one
    assert got["sqpython"].file_name == "sqpython-3.11.0-sq_0.conda"
    for r in records:
        assert r.url.startswith(channel.as_uri())
        local = channel / r.subdir / r.file_name
        assert r.sha256.hex() == hashlib.sha256(local.read_bytes()).hexdigest()
    assert (staging / "share" / "sqlib-a" / "VERSION").read_text() == "2.0\n"
    assert sorted(p.name for p in (staging / "conda-meta").glob("*.json")) == sorted(
        f"{r.name.normalized}-{r.version}-{r.build}.json" for r in records
    )


def test_text_placeholder_replaced(installed):
    _, staging = installed
    hello = (staging / "bin" / "sqhello").read_text()
    assert f'prefix={MOUNT}"' in hello
    assert conda_channel.PLACEHOLDER not in hello
    assert "placehold" not in hello
    assert str(staging) not in hello
    app = (staging / "bin" / "sqapp").read_text()
    assert f'SQAPP_PREFIX="{MOUNT}"' in app
    assert (staging / "bin" / "sqapp").stat().st_mode & 0o111
    out = subprocess.run([staging / "bin" / "sqhello"], capture_output=True, text=True, check=True).stdout
    assert out == f"prefix={MOUNT}\n"
    act = (staging / "etc" / "conda" / "activate.d" / "sqpython.sh").read_text()
    assert "export SQPYTHON_ACTIVATED=yes" in act


def test_binary_placeholder_nul_padded(installed, channel, tmp_path):
    _, staging = installed
    original = tmp_path / "orig"
    rattler.package_streaming.extract(channel / "linux-64" / "sqbin-1.0-sq_0.conda", original)
    before = (original / "bin" / "sqbin").read_bytes()
    after = (staging / "bin" / "sqbin").read_bytes()
    assert len(after) == len(before)

    ph = conda_channel.PLACEHOLDER.encode()
    suffix = ("/" + conda_channel.SQBIN_DATA_RELPATH).encode()
    offset = before.index(ph + suffix + b"\0")
    old_cstring_len = len(ph + suffix)
    new_cstring = (MOUNT + "/" + conda_channel.SQBIN_DATA_RELPATH).encode()
    expected = new_cstring + b"\0" * (old_cstring_len - len(new_cstring) + 1)
    assert after[offset : offset + old_cstring_len + 1] == expected
    # everything outside the string is untouched
    assert after[:offset] == before[:offset]
    assert after[offset + old_cstring_len + 1 :] == before[offset + old_cstring_len + 1 :]
    assert ph not in after

    # the program sees the replaced, properly terminated string
    res = subprocess.run([staging / "bin" / "sqbin"], capture_output=True, text=True)
    assert res.stdout.splitlines()[0] == f"{MOUNT}/{conda_channel.SQBIN_DATA_RELPATH}"


def test_sqbin_reads_data_through_mount(installed):
    """With the staging dir seen at /mnt/sqenv the binary finds its data."""
    _, staging = installed
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bwrap not installed")
    cmd = [bwrap, "--dev-bind", "/", "/", "--tmpfs", "/mnt", "--bind", str(staging), MOUNT, f"{MOUNT}/bin/sqbin"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and "bwrap" in res.stderr:
        pytest.skip(f"bwrap unusable here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{MOUNT}/{conda_channel.SQBIN_DATA_RELPATH}\n" + conda_channel.SQBIN_DATA.decode()


def test_conflict_is_reported(channel):
    with pytest.raises(SolverError) as exc:
        _solve(channel, ["sqconflict-x", "sqconflict-y"])
    msg = str(exc.value)
    assert "sqlib-a" in msg
    assert "sqconflict-x" in msg and "sqconflict-y" in msg


def test_virtual_packages(channel):
    # rattler.solve uses NO virtual packages unless given
    with pytest.raises(SolverError, match="__glibc"):
        _solve(channel, ["sqneeds-glibc"])

    def glibc(version: str):
        return rattler.GenericVirtualPackage(
            rattler.PackageName("__glibc"), rattler.Version(version), rattler.BuildString("0")
        )

    with pytest.raises(SolverError, match="__glibc"):
        _solve(channel, ["sqneeds-glibc"], virtual_packages=[glibc("2.12")])
    assert [r.name.normalized for r in _solve(channel, ["sqneeds-glibc"], virtual_packages=[glibc("2.17")])] == [
        "sqneeds-glibc"
    ]
    overrides = rattler.VirtualPackageOverrides(libc=rattler.Override.string("2.17"))
    detected = rattler.VirtualPackage.detect(overrides)
    assert "__glibc=2.17=0" in [str(v.into_generic()) for v in detected]
    assert _solve(channel, ["sqneeds-glibc"], virtual_packages=detected)
