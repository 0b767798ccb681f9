"""Conda environments end to end, through the real CLI and the launchers.

Channels: the local test channel of `conda_channel.py` (as `file://`, as a
directory path, and served over HTTP from 127.0.0.1 for the alias, cache and
`--offline` tests), plus a small extra channel made here: `python` (a venv
over Debian's /usr/bin/python3, packaged as a conda package, so uv has a real
interpreter to install the `pip:` part into) and `sqneeds-cuda` (`__cuda >=12`).
No remote conda channel is reachable here; the pip-on-top test needs PyPI and
is marked `slow`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from support import BASE_PYTHON, launchers, need, ok, run, sqenv

try:
    import conda_channel
except ImportError:  # tests/ imported as a package
    from tests import conda_channel

MOUNT = "/mnt/sqenv"
EVERYTHING = {"sqapp", "sqbin", "sqlib-a", "sqlib-b", "sqpython"}


# --------------------------------------------------------------------------- channels
def _python_package(channel: Path) -> None:
    """`python` 3.11.x: bin/python -> /usr/bin/python3 plus pyvenv.cfg, i.e. a venv at the mount path."""
    version = subprocess.run([BASE_PYTHON, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    cfg = f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {version}\n".encode()
    index = {"name": "python", "version": version, "build": "venv_0", "build_number": 0, "depends": [],
             "license": "PSF", "subdir": "linux-64", "arch": "x86_64", "platform": "linux",
             "timestamp": 1_700_000_000_000}  # fmt: skip
    paths = [
        {"_path": "bin/python", "path_type": "softlink", "size_in_bytes": 0},
        {"_path": "pyvenv.cfg", "path_type": "hardlink", "sha256": hashlib.sha256(cfg).hexdigest(),
         "size_in_bytes": len(cfg)},
    ]  # fmt: skip
    members = {
        "info/index.json": json.dumps(index).encode(),
        "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}).encode(),
        "info/files": b"bin/python\npyvenv.cfg\n",
        "pyvenv.cfg": cfg,
    }
    with tarfile.open(channel / "linux-64" / f"python-{version}-venv_0.tar.bz2", "w:bz2") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("bin/python")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, BASE_PYTHON, 1_700_000_000
        tar.addfile(link)


def _extra_channel(root: Path) -> Path:
    channel = root / "extra"
    if channel.is_dir():
        return channel
    for subdir in ("linux-64", "noarch"):
        (channel / subdir).mkdir(parents=True)
    _python_package(channel)
    cuda = conda_channel._Package("sqneeds-cuda", "1.0", [conda_channel._File("share/sqneeds-cuda/README", b"gpu\n")],
                                  depends=["__cuda >=12"])  # fmt: skip
    conda_channel._write_tar_bz2(cuda, channel / "linux-64" / f"{cuda.stem}.tar.bz2")
    conda_channel._index(channel)
    return channel


@pytest.fixture(scope="session")
def conda_root():
    """World-readable (the test user builds from these channels too), removed at the end."""
    need("mksquashfs")
    root = Path("/var/tmp") / f"sqenv-conda-tests-{os.getpid()}"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def channel(conda_root: Path) -> Path:
    return conda_channel.build_channel(conda_root / "channels")


@pytest.fixture(scope="session")
def extra(conda_root: Path) -> Path:
    return _extra_channel(conda_root)


@pytest.fixture(scope="session")
def pkgs(conda_root: Path) -> Path:
    return conda_root / "pkgs"


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@contextlib.contextmanager
def serve(directory: Path):
    """An HTTP server on 127.0.0.1 for `directory`; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# --------------------------------------------------------------------------- helpers
NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def create(prefix: Path, *args, pkgs: Path | None, build: Path | None = None, **kw):
    extra = ["--pkgs-dir", pkgs] if pkgs else []
    extra += ["--build-dir", build] if build else []
    env = {**NO_PROXY, **kw.pop("env", {})}
    return sqenv("create", prefix, *args, *extra, env=env, **kw)


def shas(prefix: Path) -> dict[str, str]:
    data = json.loads((prefix / "sqenv.json").read_text())
    return {p["file_name"]: p["sha256"] for p in data["versions"][-1]["lock"]["packages"]}


def channel_shas(channel: Path) -> dict[str, str]:
    files = [p for p in channel.glob("*/*.*") if "repodata" not in p.name]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_nothing_left(prefix: Path, build: Path) -> None:
    assert not prefix.exists()
    assert not [p.name for p in prefix.parent.iterdir() if p.name.startswith(f".{prefix.name}.sqenv-")]
    assert not list(build.iterdir()), list(build.iterdir())


def check_env(prefix: Path, variables: str = "") -> None:
    """Through the launchers: placeholders point at the mount path; activation happened."""
    assert ok(run([prefix / "bin" / "sqhello"])).stdout == f"prefix={MOUNT}\n"
    out = ok(run([prefix / "bin" / "sqbin"])).stdout
    assert out == f"{MOUNT}/{conda_channel.SQBIN_DATA_RELPATH}\n" + conda_channel.SQBIN_DATA.decode()
    out = ok(sqenv("run", prefix, "--", "sh", "-c", 'echo "$SQPYTHON_ACTIVATED|$CONDA_PREFIX|$MYVAR|$CONDA_SHLVL"'))
    assert out.stdout == f"yes|{prefix}|{variables}|1\n"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    path = tmp_path / "build"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def yml_env(channel: Path, pkgs: Path, tmp_path_factory) -> Path:
    """sqapp + sqbin from an environment.yml with variables; shared by the read-only tests."""
    base = tmp_path_factory.mktemp("yml")
    yml = base / "environment.yml"
    yml.write_text(f"name: ignored\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - sqapp\n  - sqbin >=1\n"
                   "variables:\n  MYVAR: it's 'quoted' $HOME\n")  # fmt: skip
    prefix = base / "env"
    ok(create(prefix, "-f", yml, pkgs=pkgs))
    return prefix


# --------------------------------------------------------------------------- inputs
def test_environment_yml(yml_env: Path, channel: Path) -> None:
    check_env(yml_env, "it's 'quoted' $HOME")
    assert ok(run([yml_env / "bin" / "sqapp"])).stdout == f"sqapp prefix={MOUNT}\nprefix={MOUNT}\n"
    assert launchers(yml_env) == ["sqapp", "sqbin", "sqhello"]
    info = json.loads(ok(sqenv("info", yml_env, "--json")).stdout)
    assert info["kind"] == "conda"
    got = {p["name"]: p for p in info["packages"]}
    assert set(got) == EVERYTHING
    assert got["sqlib-a"]["version"] == "2.0"
    assert {(p["manager"], p["build"], p["channel"]) for p in got.values()} == {("conda", "sq_0", channel.as_uri())}
    table = ok(sqenv("info", yml_env)).stdout
    assert "sqbin" in table and "sq_0" in table
    # the lock: every file with the channel's own sha256
    assert shas(yml_env).items() <= channel_shas(channel).items()
    assert len(shas(yml_env)) == 5


def test_activation_script_and_image_contents(yml_env: Path) -> None:
    script = "cat /mnt/sqenv/.sqenv/activate.sh; echo ---; ls -a /mnt/sqenv; cat /mnt/sqenv/conda-meta/*.json"
    out = ok(sqenv("run", yml_env, "--", "sh", "-c", script)).stdout
    activate, listing, meta = out.split("---\n", 1)[0], *out.split("---\n", 1)[1].split("\n{", 1)
    assert "CACHEDIR.TAG" not in listing  # rattler's cache marker is not part of the environment
    assert "extracted_package_dir" not in meta and "/pkgs/" not in meta  # no host cache paths
    assert '. "$CONDA_PREFIX"/etc/conda/activate.d/sqpython.sh' in activate
    assert "export MYVAR=" in activate
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-s", "sh", "-"], input=activate, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
    # the program runs with the env's bin first on PATH and conda's variables
    env = ok(sqenv("run", yml_env, "--", "sh", "-c", 'echo "$PATH|$CONDA_DEFAULT_ENV|$CONDA_PROMPT_MODIFIER"')).stdout
    assert env.startswith(f"{yml_env}/bin:")
    assert env.endswith(f"|{yml_env}|({yml_env.name}) \n")


def test_specs_on_the_command_line(channel: Path, pkgs: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "cli"
    ok(create(prefix, "-c", channel.as_uri(), "sqapp", "sqbin", pkgs=pkgs))
    check_env(prefix)
    # a channel given as a directory path becomes a file:// URL
    prefix2 = tmp_path / "dir"
    ok(create(prefix2, "-c", channel, "sqlib-a<2", pkgs=pkgs))
    assert list(shas(prefix2)) == ["sqlib-a-1.0-sq_0.tar.bz2"]


def test_explicit_file(yml_env: Path, channel: Path, pkgs: Path, tmp_path: Path) -> None:
    explicit = tmp_path / "explicit.txt"
    lines = [f"{channel.as_uri()}/linux-64/sqbin-1.0-sq_0.conda", f"{channel.as_uri()}/noarch/sqapp-1.0-sq_0.conda"]
    lines += [f"{channel.as_uri()}/linux-64/{n}#{s}" for n, s in shas(yml_env).items() if n.startswith("sq" + "lib")]
    lines += [f"{channel.as_uri()}/linux-64/sqpython-3.11.0-sq_0.tar.bz2"]  # the .tar.bz2 twin, this time
    explicit.write_text("# platform: linux-64\n@EXPLICIT\n" + "\n".join(lines) + "\n")
    prefix = tmp_path / "explicit"
    ok(create(prefix, "-f", explicit, pkgs=pkgs))
    assert "sqpython-3.11.0-sq_0.tar.bz2" in shas(prefix)
    assert shas(prefix).items() <= channel_shas(channel).items()
    check_env(prefix)


def test_export_and_rebuild_identical(yml_env: Path, channel: Path, pkgs: Path, tmp_path: Path) -> None:
    explicit = ok(sqenv("export", yml_env, "--format", "explicit")).stdout
    assert explicit.splitlines()[1:3] == ["# platform: linux-64", "@EXPLICIT"]
    assert sorted(line.split("#")[1] for line in explicit.splitlines()[3:]) == sorted(shas(yml_env).values())
    yml = ok(sqenv("export", yml_env, "--format", "yml")).stdout
    assert "- sqlib-a=2.0=sq_0" in yml and channel.as_uri() in yml and "MYVAR:" in yml
    assert ok(sqenv("export", yml_env, "--format", "requirements")).stdout == ""

    # --from PREFIX: the same files, no solving, the variables kept
    again = tmp_path / "again"
    proc = ok(create(again, "--from", yml_env, pkgs=pkgs))
    assert "Solving" not in proc.stderr
    assert shas(again) == shas(yml_env)
    check_env(again, "it's 'quoted' $HOME")
    # --from an explicit file (from `sqenv export`)
    (tmp_path / "explicit.txt").write_text(explicit)
    from_explicit = tmp_path / "from-explicit"
    ok(create(from_explicit, "--from", tmp_path / "explicit.txt", pkgs=pkgs))
    assert shas(from_explicit) == shas(yml_env)
    # --from a rattler/pixi lock file
    lock = tmp_path / "pixi.lock"
    _write_rattler_lock(yml_env, lock)
    from_lock = tmp_path / "from-lock"
    ok(create(from_lock, "--from", lock, pkgs=pkgs))
    assert shas(from_lock) == shas(yml_env)
    # -o FILE, and the exported yml builds the same set by solving
    ok(sqenv("export", yml_env, "--format", "yml", "-o", tmp_path / "env.yml"))
    solved = tmp_path / "solved"
    ok(create(solved, "-f", tmp_path / "env.yml", pkgs=pkgs))
    assert shas(solved) == shas(yml_env)


def _write_rattler_lock(prefix: Path, dest: Path) -> None:
    """A lock file written by rattler itself (`LockFile.to_path`), in a child process (rattler's exit trap)."""
    data = json.loads((prefix / "sqenv.json").read_text())["versions"][-1]["lock"]
    script = (
        "import json, os, sys\n"
        "from sqenv.builders.conda.worker import record\n"
        "from rattler import LockChannel, LockFile, LockPlatform\n"
        "lock = json.loads(open(sys.argv[1]).read())\n"
        "plat = LockPlatform(lock['platform'])\n"
        "lf = LockFile([plat])\n"
        "lf.set_channels('default', [LockChannel(c) for c in lock['channels']])\n"
        "for e in lock['packages']:\n"
        "    lf.add_conda_package('default', plat, record(e))\n"
        "lf.to_path(sys.argv[2])\n"
        "sys.stdout.flush(); os._exit(0)\n"
    )
    src = dest.with_suffix(".json")
    src.write_text(json.dumps(data))
    ok(run([sys.executable, "-c", script, src, dest]))
    assert "version:" in dest.read_text()


def test_offline_and_channel_alias(channel: Path, tmp_path: Path) -> None:
    """An HTTP channel by name under `--channel-alias`; then `--offline` from the caches alone."""
    served = tmp_path / "www"
    served.mkdir()
    shutil.copytree(channel, served / "sqtest")
    pkgs = tmp_path / "pkgs"
    with serve(served) as url:
        online = tmp_path / "online"
        ok(create(online, "--channel-alias", url, "-c", "sqtest", "sqapp", "sqbin", pkgs=pkgs))
        data = json.loads((online / "sqenv.json").read_text())["versions"][-1]
        assert {p["channel"] for p in data["packages"]} == {"sqtest"}
        assert {p["url"].rsplit("/", 3)[0] for p in data["packages"]} == {url}
    check_env(online)
    # the server is gone: --offline still builds from the repodata and package caches
    offline = tmp_path / "offline"
    ok(create(offline, "--channel-alias", url, "-c", "sqtest", "sqapp", "sqbin", "--offline", pkgs=pkgs))
    assert shas(offline) == shas(online)
    check_env(offline)
    rebuilt = tmp_path / "rebuilt"
    ok(create(rebuilt, "--from", online, "--offline", pkgs=pkgs))
    assert shas(rebuilt) == shas(online)
    # without the cache, --offline says what is missing
    build = tmp_path / "build"
    build.mkdir()
    proc = create(tmp_path / "nocache", "--from", online, "--offline", pkgs=tmp_path / "empty", build=build)
    assert proc.returncode == 5
    assert "is not in the package cache" in proc.stderr and "`--offline` forbids downloading" in proc.stderr
    assert_nothing_left(tmp_path / "nocache", build)
    # local channels need no cache
    ok(create(tmp_path / "local", "-c", channel.as_uri(), "sqlib-b", "--offline", pkgs=tmp_path / "empty2"))


def test_virtual_packages_and_overrides(channel: Path, extra: Path, pkgs: Path, tmp_path: Path, build: Path) -> None:
    ok(create(tmp_path / "glibc", "-c", channel.as_uri(), "sqneeds-glibc", pkgs=pkgs))
    # a GPU environment built on a machine without GPU: CONDA_OVERRIDE_CUDA
    gpu = tmp_path / "gpu"
    proc = create(gpu, "-c", extra.as_uri(), "sqneeds-cuda", pkgs=pkgs, build=build, env={"CONDA_OVERRIDE_CUDA": ""})
    assert proc.returncode == 5 and "__cuda" in proc.stderr and "CONDA_OVERRIDE_CUDA" in proc.stderr
    assert_nothing_left(gpu, build)
    ok(create(gpu, "-c", extra.as_uri(), "sqneeds-cuda", pkgs=pkgs, env={"CONDA_OVERRIDE_CUDA": "12.4"}))
    old = create(tmp_path / "old", "-c", channel.as_uri(), "sqneeds-glibc", pkgs=pkgs, build=build,
                 env={"CONDA_OVERRIDE_GLIBC": "2.12"})  # fmt: skip
    assert old.returncode == 5 and "CONDA_OVERRIDE_GLIBC" in old.stderr


# --------------------------------------------------------------------------- bad input
def _bad_channel(channel: Path, root: Path) -> Path:
    """A copy of the channel whose sqlib-b file was replaced after indexing."""
    bad = root / "badchan"
    shutil.copytree(channel, bad)
    target = bad / "linux-64" / "sqlib-b-1.0-sq_0.tar.bz2"
    target.write_bytes((bad / "linux-64" / "sqlib-a-1.0-sq_0.tar.bz2").read_bytes())
    return bad


BAD = {
    "malformed yml": (
        ["-f", "{yml}"], "channels: [x\ndependencies:\n  - sqapp\n", 2, "is not valid YAML at line 2, column 13"),
    "missing package": (["-c", "{chan}", "sqlibb"], None, 5, "package `sqlibb` does not exist"),
    "no such version": (["-c", "{chan}", "sqapp>=5"], None, 5, "no version of `sqapp` matches `>=5`"),
    "unsolvable": (["-c", "{chan}", "sqconflict-x", "sqconflict-y"], None, 5, "cannot be installed together"),
    "unreachable channel": (["-c", "http://127.0.0.1:9/chan", "sqapp"], None, 5, "cannot reach channel"),
    "remote channel offline": (["-c", "conda-forge", "python", "--offline"], None, 5,
                               "channel `conda-forge` is not in the cache, and `--offline` forbids fetching it"),
    "checksum mismatch": (["-c", "{badchan}", "sqlib-b"], None, 5, "checksum mismatch for `sqlib-b-1.0-sq_0.tar.bz2`"),
    "explicit wrong hash": (["-f", "{yml}"], "@EXPLICIT\n{chan}/linux-64/sqlib-a-2.0-sq_0.conda#" + "0" * 64 + "\n",
                            5, "checksum mismatch for `sqlib-a-2.0-sq_0.conda`"),
    "explicit other platform": (["-f", "{yml}"], "# platform: osx-arm64\n@EXPLICIT\n{chan}/osx-arm64/x-1-0.conda\n",
                                2, "is an explicit file for osx-arm64; this machine builds linux-64"),
    "pip without python": (["-f", "{yml}"], "channels: [{chan}]\ndependencies:\n  - sqapp\n  - pip:\n    - six\n",
                           2, "need Python in the conda environment"),
    "bad match spec": (["-c", "{chan}", "sqapp>>=1"], None, 2, "is not a valid conda match spec"),
    "defaults channel": (["-c", "defaults", "sqapp"], None, 2, "the `defaults` channel"),
    "lock for another platform": (["--from", "{yml}"], "version: 6\nenvironments:\n  default:\n    channels: []\n"
                                  "    packages: {{}}\npackages: []\n", 2, "has no packages for linux-64"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case: str, channel: Path, pkgs: Path, tmp_path: Path, build: Path) -> None:
    args, content, code, message = BAD[case]
    names = {"chan": channel.as_uri(), "yml": tmp_path / "input.yml"}
    if "{badchan}" in args:
        names["badchan"] = _bad_channel(channel, tmp_path).as_uri()
    if content is not None:
        (tmp_path / "input.yml").write_text(content.format(**names))
    prefix = tmp_path / "env"
    proc = create(prefix, *(a.format(**names) for a in args), pkgs=pkgs, build=build)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert_nothing_left(prefix, build)


def test_unreachable_channel_hint_and_suggestions(channel: Path, pkgs: Path, tmp_path: Path) -> None:
    proc = create(tmp_path / "p", "-c", "conda-forge", "python", pkgs=pkgs)
    assert proc.returncode == 5
    assert "cannot reach channel `conda-forge` (https://conda.anaconda.org/conda-forge)" in proc.stderr
    assert "`--offline`" in proc.stderr and "`--channel-alias URL`" in proc.stderr
    proc = create(tmp_path / "p", "-c", channel.as_uri(), "sqlibb", pkgs=pkgs)
    assert "did you mean `sqlib-b` or `sqlib-a`?" in proc.stderr
    proc = create(tmp_path / "p", "-c", channel.as_uri(), "sqconflict-x", "sqconflict-y", pkgs=pkgs)
    assert "sqlib-a <2" in proc.stderr and "sqlib-a >=2" in proc.stderr  # the solver's own explanation


# --------------------------------------------------------------------------- users and front ends
def test_as_ordinary_user(user, channel: Path, shared_dir: Path) -> None:
    """The test user builds with the default package cache (~/.cache/sqenv/pkgs) and runs the programs."""
    prefix = shared_dir / "conda-env"
    yml = shared_dir / "conda-env.yml"
    yml.write_text(f"channels: [{channel.as_uri()}]\ndependencies: [sqapp, sqbin]\nvariables: {{MYVAR: mine}}\n")
    os.chmod(yml, 0o644)
    ok(sqenv("create", prefix, "-f", yml, user=user))
    assert (user.home / ".cache" / "sqenv" / "pkgs" / "sqbin-1.0-sq_0").is_dir()
    assert ok(run([prefix / "bin" / "sqhello"], user=user)).stdout == f"prefix={MOUNT}\n"
    assert ok(run([prefix / "bin" / "sqbin"], user=user)).stdout.endswith(conda_channel.SQBIN_DATA.decode())
    out = ok(sqenv("run", prefix, "--", "sh", "-c", "echo $SQPYTHON_ACTIVATED $CONDA_PREFIX $MYVAR", user=user))
    assert out.stdout == f"yes {prefix} mine\n"


def test_tykky_conda_containerize(channel: Path, pkgs: Path, tmp_path: Path) -> None:
    yml = tmp_path / "env.yml"
    yml.write_text(f"channels: [{channel.as_uri()}]\ndependencies: [sqapp, sqbin]\n")
    post = tmp_path / "post.sh"
    post.write_text('echo "made by post-install" > "$CONDA_PREFIX/share/post.txt"\n')
    prefix = tmp_path / "tykky"
    tool = shutil.which("conda-containerize", path=os.path.dirname(sys.executable)) or "conda-containerize"
    env = {"SQENV_PKGS_DIR": str(pkgs)}
    proc = ok(run([tool, "new", "--prefix", prefix, yml, "--post-install", post, "--mamba", "-v"], env=env))
    assert "`--mamba` has no effect here" in proc.stderr
    check_env(prefix)
    assert ok(sqenv("run", prefix, "--", "cat", f"{MOUNT}/share/post.txt")).stdout == "made by post-install\n"


# --------------------------------------------------------------------------- pip on top (PyPI)
@pytest.mark.slow
def test_pip_on_top(extra: Path, channel: Path, pkgs: Path, tmp_path: Path, build: Path) -> None:
    (tmp_path / "more.txt").write_text("six\n")
    (tmp_path / "cli.txt").write_text("tomli\n")
    yml = tmp_path / "environment.yml"
    yml.write_text(f"channels: [{extra.as_uri()}, {channel.as_uri()}]\n"
                   "dependencies:\n  - python\n  - sqbin\n  - pip:\n    - -r more.txt\n")  # fmt: skip
    prefix = tmp_path / "pipenv"
    ok(create(prefix, "-f", yml, "-r", tmp_path / "cli.txt", pkgs=pkgs))
    code = "import six, tomli, sys; print(sys.prefix, six.__file__)"
    out = ok(run([prefix / "bin" / "python", "-c", code])).stdout.split()
    # run as PREFIX/bin/python, which the namespace shows the environment over
    assert out[0] == str(prefix) and out[1].startswith(f"{prefix}/lib/python3")
    info = json.loads(ok(sqenv("info", prefix, "--json")).stdout)
    managers = {p["name"]: p["manager"] for p in info["packages"]}
    assert managers["python"] == "conda" and managers["six"] == "pip" and managers["tomli"] == "pip"
    assert info["python"]["version"].startswith("3.")
    pins = ok(sqenv("export", prefix, "--format", "requirements")).stdout.split()
    assert sorted(p.split("==")[0] for p in pins) == ["six", "tomli"]
    assert "- pip:" in ok(sqenv("export", prefix, "--format", "yml")).stdout
    # --from PREFIX: the conda files by hash, the pip packages by exact version
    again = tmp_path / "again"
    ok(create(again, "--from", prefix, pkgs=pkgs))
    assert shas(again) == shas(prefix)
    assert ok(sqenv("export", again, "--format", "requirements")).stdout.split() == pins
    # `sqenv update`: more pip packages on top, the conda lock kept
    (tmp_path / "idna.txt").write_text("idna\n")  # PKG arguments of a conda install are conda specs
    ok(sqenv("update", again, "-r", tmp_path / "idna.txt", env=NO_PROXY))
    assert ok(run([again / "bin" / "python", "-c", "import idna, six"])).returncode == 0
    assert shas(again) == shas(prefix)
    assert "idna==" in ok(sqenv("export", again, "--format", "requirements")).stdout
    # a pip failure: named, nothing left behind
    yml.write_text(f"channels: [{extra.as_uri()}]\ndependencies:\n  - python\n  - pip:\n"
                   "    - sqenv-no-such-package-xyz\n")  # fmt: skip
    bad = tmp_path / "bad"
    proc = create(bad, "-f", yml, pkgs=pkgs, build=build)
    assert proc.returncode == 5
    assert "package `sqenv-no-such-package-xyz` was not found on the package index" in proc.stderr
    assert_nothing_left(bad, build)


# --------------------------------------------------------------------------- units
def test_channel_urls(channel: Path, tmp_path: Path) -> None:
    from sqenv.errors import InputError
    from sqenv.inputs.conda import channel_name, channel_url

    assert channel_url("conda-forge") == "https://conda.anaconda.org/conda-forge"
    assert channel_url("bioconda", "https://mirror.example/conda/") == "https://mirror.example/conda/bioconda"
    assert channel_url("https://x.example/ch/") == "https://x.example/ch"
    assert channel_url(channel.as_uri()) == channel.as_uri()
    assert channel_url(str(channel)) == channel.as_uri()
    with pytest.raises(InputError, match="not a conda channel"):
        channel_url(str(tmp_path))
    assert channel_name("https://conda.anaconda.org/conda-forge/") == "conda-forge"
    assert channel_name(channel.as_uri()) == channel.as_uri()
