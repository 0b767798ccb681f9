"""A simulated parallel file system for sqenv's scale tests and benchmarks (issue 12).

This kernel has FUSE but no NFS, so the "parallel file system" is: one metadata server
process (``mds.py``: counts every metadata operation, delays it by a Lustre latency model,
``model.py``) and one read-only FUSE client per node (``client.py``), each mounted in that
node's own mount namespace so each node has its own kernel caches. Data is read straight
from the backing directory. Both run on Debian's ``/usr/bin/python3`` with Debian's
``python3-pyfuse3`` (installed with apt when missing; root only), whatever Python imports
this module.

    with MDS(backing, params) as mds:
        c = Client(mds, backing, mountpoint, "node1", mount_ns_pid=None)
        ...                       # use files under mountpoint
        c.stop()                  # unmount: the node's caches are gone
        mds.stats()               # {"ops": {node: {op: n}}, "reports": {node: {"bytes_read": n}}, ...}
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from .model import MDS_OPS, Params, predict  # noqa: F401 (re-exported)

HERE = Path(__file__).resolve().parent
PYTHON = "/usr/bin/python3"
START_TIMEOUT = 30.0


class PFSError(RuntimeError):
    pass


def ensure_packages() -> None:
    """Debian's pyfuse3 (and trio) for /usr/bin/python3; apt-get install when missing."""
    probe = [PYTHON, "-c", "import pyfuse3, trio"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0:
        raise PFSError("python3-pyfuse3 is missing and only root can install it (apt-get install python3-pyfuse3)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "python3-pyfuse3", "fuse3"]
    if subprocess.run(cmd, env=env, capture_output=True, stdin=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, stdin=subprocess.DEVNULL)
        cp = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if cp.returncode != 0:
            raise PFSError(f"apt-get install python3-pyfuse3 failed: {cp.stderr.strip()[-500:]}")
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise PFSError("python3-pyfuse3 installed but /usr/bin/python3 cannot import pyfuse3")


def _request(sock_path: str, msg: dict) -> dict:
    import struct

    data = json.dumps(msg).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        s.sendall(struct.pack(">I", len(data)) + data)
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                raise PFSError("the metadata server closed the connection")
            head += chunk
        (n,) = struct.unpack(">I", head)
        body = b""
        while len(body) < n:
            chunk = s.recv(n - len(body))
            if not chunk:
                raise PFSError("the metadata server closed the connection")
            body += chunk
    return json.loads(body)


class MDS:
    """The metadata server process; its socket lives in a fresh root-only directory in /run."""

    def __init__(self, root: str | os.PathLike, params: Params | None = None, log: str | os.PathLike | None = None):
        ensure_packages()
        self.root = str(root)
        self.params = params = params or Params()
        self.dir = tempfile.mkdtemp(prefix="sqenv-pfs-", dir="/run" if os.access("/run", os.W_OK) else None)
        self.socket = os.path.join(self.dir, "mds.sock")
        self._log = open(log or os.path.join(self.dir, "mds.log"), "ab")
        cmd = [
            PYTHON,
            str(HERE / "mds.py"),
            "--root",
            self.root,
            "--socket",
            self.socket,
            f"--rtt-us={params.rtt_s * 1e6}",
            f"--service-us={params.service_s * 1e6}",
            f"--threads={params.threads}",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise PFSError(f"the metadata server exited ({self.proc.returncode}); log: {self._log.name}")
            try:
                self.stats()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PFSError("the metadata server did not answer in time") from None
                time.sleep(0.05)

    def stats(self, reset: bool = False) -> dict:
        return _request(self.socket, {"op": "stats", "reset": reset})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MDS:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Client:
    """One node's FUSE client, mounted at ``mountpoint`` in the mount namespace of
    ``mount_ns_pid`` (e.g. that node's slurmd), or in this process's when None."""

    def __init__(
        self,
        mds: MDS,
        root: str | os.PathLike,
        mountpoint: str | os.PathLike,
        node: str,
        mount_ns_pid: int | None = None,
    ):
        self.node = node
        self.mountpoint = str(mountpoint)
        self.ns = [] if mount_ns_pid is None else ["nsenter", f"--mount=/proc/{mount_ns_pid}/ns/mnt", "--"]
        cmd = [
            *self.ns,
            PYTHON,
            str(HERE / "client.py"),
            "--root",
            str(root),
            "--socket",
            mds.socket,
            "--mountpoint",
            self.mountpoint,
            "--node",
            node,
        ]
        self.log = Path(mds.dir) / f"client-{node}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready" once mounted, "" if it died
        if line.strip() != b"ready":
            self.proc.wait(10)
            raise PFSError(
                f"the client for {node} did not mount {self.mountpoint}: {self.log.read_text(errors='replace')[-1000:]}"
            )

    def stop(self) -> None:
        """Unmount (SIGTERM: the client unmounts and reports its data totals)."""
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                killed = True
        if killed or self.proc.returncode != 0:  # a dead client leaves a dead mount: detach it
            subprocess.run([*self.ns, "fusermount3", "-u", "-z", "-q", self.mountpoint], capture_output=True)
        if self.proc.stdout:
            self.proc.stdout.close()


def total_ops(stats: dict) -> Counter:
    """All nodes' counts added, per operation."""
    out: Counter = Counter()
    for per_node in stats["ops"].values():
        out.update(per_node)
    return out


def bytes_read(stats: dict) -> int:
    return sum(r.get("bytes_read", 0) for r in stats["reports"].values())
