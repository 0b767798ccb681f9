"""A real Apptainer for tests, on a Debian 12 that packages none.

`apptainer.sh` (next to this file) debootstraps Debian sid's apptainer into a cached root and
writes a shim that runs it from there through bubblewrap. Apptainer works that way only for a
NON-root caller, so a session running as root (CI) runs it as a test user::

    app = ensure_apptainer(tmp_path_factory)       # builds/caches the root, writes the shim
    user = app.ensure_user("sqapp")                # yourself when not root
    sif = app.base_sif(user)                       # Debian 12 + python3, cached
    with app.workdir(user) as work:                # a dir of theirs the shim can see
        proc = app.run(["apptainer", "exec", sif, "true"], user=user, cwd=work)

Or put `app.bin_dir` first on PATH yourself (`app.env(user)` does that). Host dirs visible through
the shim (and so to apptainer): /tmp, /var/tmp, /home, /work, this checkout, plus
`$SQENV_APPTAINER_BINDS`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from support import unavailable  # tests/support.py: the one CI detection

SCRIPT = Path(__file__).with_name("apptainer.sh")
DEFAULT_ROOT = "/var/cache/sqenv-test/apptainer-root"
# Base SIFs built as root are cached per user under /var/tmp: the shim binds it, so apptainer
# sees them, and it outlives one session.
SHARED_SIF_DIR = Path("/var/tmp/sqenv-test-apptainer")
STAMPS = {"base": "opt/sqenv-base/.sqenv-base", "vendor": "opt/sqenv-vendor/.sqenv-vendor"}
"""In the root, per image flavour; a newer tree invalidates cached SIFs."""


class ApptainerInfraError(Exception):
    """The test apptainer could not be set up."""


def _unavailable(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where a missing tool must not pass unnoticed."""
    unavailable(f"apptainer unavailable: {reason}")


def _script(*args: str) -> None:
    try:
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ApptainerInfraError(f"`{SCRIPT.name} {' '.join(args)}` timed out after {exc.timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ApptainerInfraError(f"`{SCRIPT.name} {' '.join(args)}` failed:\n{tail}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Apptainer:
    root: Path  # the Debian sid tree apptainer runs from
    bin_dir: Path  # holds the `apptainer` and `singularity` shims: put it first on PATH
    sif_dir: Path  # base SIFs, one subdirectory per user

    @property
    def exe(self) -> Path:
        return self.bin_dir / "apptainer"

    def ensure_user(self, name: str = "sqapp") -> str:
        """The non-root user to run apptainer as: yourself when not root.

        As root: NAME, created (with a home under /home) if absent, and entered in the root's
        /etc/passwd and /etc/group, which apptainer reads.
        """
        if os.geteuid() != 0:
            return pwd.getpwuid(os.geteuid()).pw_name
        try:
            pwd.getpwnam(name)
        except KeyError:
            made = subprocess.run(
                ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
                capture_output=True,
                text=True,
                check=False,
            )
            try:  # a concurrent session may have made it meanwhile
                pwd.getpwnam(name)
            except KeyError:
                _unavailable(f"`useradd {name}` failed: {made.stderr.strip()}")
        home = Path(pwd.getpwnam(name).pw_dir)
        if not home.is_dir():
            _unavailable(f"user {name} has no home directory {home}")
        try:
            _script("adduser", name)
        except ApptainerInfraError as exc:
            _unavailable(str(exc))
        return name

    def env(self, user: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
        """BASE (default os.environ) with the shims first on PATH, and USER's HOME/USER/LOGNAME."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
        if user is not None:
            pw = pwd.getpwnam(user)
            env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        return env

    def popen(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        user: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start ARGS (e.g. ["apptainer", "exec", ...]) as USER with `self.env(user)`.

        In a new session, so that `os.killpg(proc.pid, sig)` reaches every process: the shim
        forwards no signal (see apptainer.sh). The default cwd is USER's home: the shim refuses
        a cwd it cannot show apptainer.
        """
        pw = pwd.getpwnam(user) if user else pwd.getpwuid(os.geteuid())
        if pw.pw_uid != os.geteuid():
            kwargs.update(
                user=pw.pw_uid,
                group=pw.pw_gid,
                extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid),
            )
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(
            [os.fspath(a) for a in args],
            cwd=os.fspath(cwd) if cwd is not None else pw.pw_dir,
            env=self.env(pw.pw_name, env),
            **kwargs,
        )

    def run(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        input: str | None = None,
        timeout: float = 300,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """`popen` ARGS, wait, return the text output; on timeout kill the whole group."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.PIPE if input is not None else subprocess.DEVNULL)
        with self.popen(args, text=True, **kwargs) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @contextlib.contextmanager
    def workdir(self, user: str) -> Iterator[Path]:
        """A fresh directory under /tmp owned by USER (bound by the shim), removed afterwards.

        pytest's tmp_path is no good for another user: /tmp/pytest-of-root is mode 0700.
        """
        pw = pwd.getpwnam(user)
        path = Path(tempfile.mkdtemp(prefix=f"sqenv-apptainer-{user}-", dir="/tmp"))
        try:
            os.chown(path, pw.pw_uid, pw.pw_gid)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def base_sif(self, user: str | None = None) -> Path:
        """The base image (Debian 12 minbase + python3) as a SIF USER can run; built once.

        Debian 12 like the host: the same glibc and /usr/bin/python3 (3.11), so venvs made with
        the host's /usr/bin/python3 and self-contained conda envs run in it unchanged.
        """
        return self._sif("base", user)

    def vendor_sif(self, user: str | None = None) -> Path:
        """The stand-in for a vendor PyTorch image: the base plus python3-numpy (torch's part) and
        python3-pip, with a second copy of Python and numpy under /opt/vendor (off the PATH)."""
        return self._sif("vendor", user)

    def _sif(self, flavour: str, user: str | None) -> Path:
        user = user or pwd.getpwuid(os.geteuid()).pw_name
        out_dir = self.sif_dir / user
        out_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        out = out_dir / f"{flavour}.sif"
        source = out.with_name(f"{flavour}.sif.source")  # which tree the cached SIF came from
        with _locked(out_dir / ".lock"):
            if os.geteuid() == 0:  # the tree of the current recipe first (a no-op when it is): a new
                try:  # recipe's tree gets a new stamp, which invalidates the cached SIF below
                    _script("base-sandbox", *([flavour] if flavour != "base" else []))
                except ApptainerInfraError as exc:
                    _unavailable(str(exc))
            stamp = self.root / STAMPS[flavour]
            key = f"{stamp}:{stamp.stat().st_mtime_ns}\n" if stamp.is_file() else None
            if not (out.is_file() and key and source.is_file() and source.read_text() == key):
                try:
                    _script(f"{flavour}-sif", str(out), *([user] if os.geteuid() == 0 else []))
                except ApptainerInfraError as exc:
                    _unavailable(str(exc))
                source.write_text(f"{stamp}:{stamp.stat().st_mtime_ns}\n")
        return out


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without sqenv's and apptainer's variables, plus EXTRA
    (embedded launches: image mounts go away 2 s after the last user, not 60)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQENV_", "APPTAINER", "SINGULARITY"))}
    env.update(LANG="C.UTF-8", TMPDIR="/tmp", SQENV_IDLE_TIMEOUT="2", **(extra or {}))
    return env


def run_as(app: Apptainer, user: str, argv: Sequence[Any], *, env: dict | None = None, cwd: Path | None = None,
           **kw: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """ARGV as USER with the shims on PATH and `env_for(env)`, from /var/tmp (seen by the shim)."""
    return app.run([str(a) for a in argv], user=user, cwd=cwd or "/var/tmp", env=env_for(env), **kw)


def ensure_apptainer(tmp_path_factory: pytest.TempPathFactory) -> Apptainer:
    """Build (once; cached) the apptainer root, write the shims, and describe them.

    As root this also makes /dev/fuse usable by everyone (mode 0666, as on ordinary
    distributions; these machines create it 0600). Skips the test when the root cannot be
    built (fails it when CI=true).
    """
    root = Path(os.environ.get("SQENV_APPTAINER_ROOT", DEFAULT_ROOT))
    try:
        if os.geteuid() == 0:
            _script("root")
            fuse = Path("/dev/fuse")
            if fuse.exists() and stat.S_IMODE(fuse.stat().st_mode) != 0o666:
                fuse.chmod(0o666)
            # the shims must be usable by other users: not under /tmp/pytest-of-root (0700)
            bin_dir = root.with_name(root.name + "-bin")
            sif_dir = SHARED_SIF_DIR
            sif_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        else:
            if not (root / ".sqenv-root").is_file():
                _unavailable(f"no apptainer root at {root}; run `{SCRIPT} root` as root")
            if shutil.which("bwrap") is None:
                _unavailable("no `bwrap` (apt-get install bubblewrap)")
            if not os.access("/dev/fuse", os.R_OK | os.W_OK):
                _unavailable("/dev/fuse is not usable by you; as root: chmod 666 /dev/fuse")
            me = pwd.getpwuid(os.geteuid()).pw_name
            with open(root / "etc" / "passwd") as fh:
                if not any(line.split(":", 1)[0] == me for line in fh):
                    _unavailable(f"apptainer needs you in {root}/etc/passwd; as root: `{SCRIPT} adduser {me}`")
            bin_dir = tmp_path_factory.mktemp("apptainer-bin")
            sif_dir = tmp_path_factory.mktemp("apptainer-sif")
        _script("shim", str(bin_dir))
    except (ApptainerInfraError, OSError) as exc:
        _unavailable(str(exc))
    return Apptainer(root=root, bin_dir=bin_dir, sif_dir=sif_dir)
