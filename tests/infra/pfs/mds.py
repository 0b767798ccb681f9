"""Metadata server of the simulated parallel file system: one process for the whole cluster.

    /usr/bin/python3 mds.py --root BACKING --socket PATH [--rtt-us 100] [--service-us 400]
                            [--threads 200]

Every node's FUSE client (client.py) sends its metadata operations here over a Unix socket.
The server answers them from the backing directory (``lstat``, ``readlink``, ``scandir``:
never following a symlink, never writing), counts them per node and per kind, and holds each
reply back as the latency model (model.py) says: half an RTT to arrive, a wait for one of
``threads`` service slots (first come, first served), the service time, half an RTT back.
The delay is real time (a sender thread sleeps until each reply is due), so programs on the
nodes feel it, but it costs no CPU.

Control messages on the same socket: ``{"op": "stats", "reset": bool}`` returns the counters;
clients send ``{"op": "report", ...}`` with their data-read totals when they unmount.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import itertools
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections import Counter, defaultdict

import model
import wire


class Latency:
    """The queueing model: ``threads`` service slots, FIFO in order of arrival."""

    def __init__(self, params: model.Params):
        self.params = params
        self.lock = threading.Lock()
        self.slots = [0.0] * params.threads  # when each slot is free again (a heap)
        self.busy_s = 0.0
        self.wait_s = 0.0
        self.max_wait_s = 0.0

    def reply_due(self, arrival: float) -> float:
        p = self.params
        at_server = arrival + p.rtt_s / 2
        with self.lock:
            free = heapq.heappop(self.slots)
            start = max(at_server, free)
            done = start + p.service_s
            heapq.heappush(self.slots, done)
            wait = start - at_server
            self.busy_s += p.service_s
            self.wait_s += wait
            self.max_wait_s = max(self.max_wait_s, wait)
        return done + p.rtt_s / 2

    def reset(self) -> None:
        with self.lock:
            self.busy_s = self.wait_s = self.max_wait_s = 0.0


class Sender(threading.Thread):
    """Sends each reply when it is due (a heap of deadlines, one sleeping thread)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.cond = threading.Condition()
        self.heap: list = []
        self.seq = itertools.count()

    def put(self, due: float, conn: Connection, data: bytes) -> None:
        with self.cond:
            heapq.heappush(self.heap, (due, next(self.seq), conn, data))
            self.cond.notify()

    def run(self) -> None:
        while True:
            with self.cond:
                while True:
                    now = time.monotonic()
                    if self.heap and self.heap[0][0] <= now:
                        _, _, conn, data = heapq.heappop(self.heap)
                        break
                    self.cond.wait(None if not self.heap else self.heap[0][0] - now)
            conn.send(data)


class Server:
    def __init__(self, root: str, params: model.Params):
        self.root = os.path.realpath(root)
        self.root_dev = os.lstat(self.root).st_dev
        self.latency = Latency(params)
        self.sender = Sender()
        self.lock = threading.Lock()
        self.ops: dict[str, Counter] = defaultdict(Counter)  # node -> op -> count
        self.errors: dict[str, Counter] = defaultdict(Counter)
        self.reports: dict[str, Counter] = defaultdict(Counter)  # node -> bytes/reads
        self.first = self.last = 0.0

    # ------------------------------------------------------------ operations
    def path(self, rel: str) -> str:
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise OSError(errno.EINVAL, "bad path")
        return os.path.join(self.root, *parts)

    def do(self, req: dict) -> dict:
        op = req["op"]
        if op in ("lookup", "getattr"):
            st = os.lstat(self.path(req["p"]))
            if st.st_dev != self.root_dev:  # another file system mounted below: not ours
                raise OSError(errno.EXDEV, "crosses a mount point")
            return {"a": wire.attrs_of(st)}
        if op == "readlink":
            return {"t": os.readlink(self.path(req["p"]))}
        if op in ("open", "opendir"):
            st = os.lstat(self.path(req["p"]))
            want_dir = op == "opendir"
            if want_dir != stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR if want_dir else errno.EISDIR, op)
            return {}
        if op == "readdir":
            entries = []
            with os.scandir(self.path(req["p"])) as it:
                for e in it:
                    entries.append([e.name, wire.attrs_of(e.stat(follow_symlinks=False))])
            return {"d": entries}
        if op == "statfs":
            sv = os.statvfs(self.root)
            return {
                "s": [
                    sv.f_bsize,
                    sv.f_frsize,
                    sv.f_blocks,
                    sv.f_bfree,
                    sv.f_bavail,
                    sv.f_files,
                    sv.f_ffree,
                    sv.f_favail,
                    sv.f_namemax,
                ]
            }
        if op in ("close", "closedir"):
            return {}
        raise OSError(errno.ENOSYS, op)

    def stats(self, reset: bool) -> dict:
        with self.lock:
            lat = self.latency
            out = {
                "ops": {n: dict(c) for n, c in self.ops.items()},
                "errors": {n: dict(c) for n, c in self.errors.items()},
                "reports": {n: dict(c) for n, c in self.reports.items()},
                "busy_s": lat.busy_s,
                "wait_s": lat.wait_s,
                "max_wait_s": lat.max_wait_s,
                "span_s": self.last - self.first,
                "params": lat.params.as_dict(),
            }
            if reset:
                self.ops.clear()
                self.errors.clear()
                self.reports.clear()
                self.first = self.last = 0.0
                lat.reset()
        return out

    # ------------------------------------------------------------ connections
    def serve(self, sock_path: str) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # the socket is root's alone
        try:
            listener.bind(sock_path)
        finally:
            os.umask(old)
        listener.listen(64)
        self.sender.start()
        print(f"mds: serving {self.root} on {sock_path}", file=sys.stderr, flush=True)
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=Connection(self, conn).run, daemon=True).start()


class Connection:
    def __init__(self, server: Server, sock: socket.socket):
        self.server = server
        self.sock = sock
        self.node = "?"
        self.send_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the client went away; its requests are moot

    def run(self) -> None:
        srv = self.server
        try:
            while True:
                req = wire.recv_message(self.sock)
                if req is None:
                    return
                op = req.get("op")
                if op == "hello":
                    self.node = str(req.get("node", "?"))
                    continue
                if op == "stats":
                    self.send(wire.encode(srv.stats(bool(req.get("reset")))))
                    continue
                if op == "report":
                    with srv.lock:
                        srv.reports[self.node].update({k: int(v) for k, v in req.get("r", {}).items()})
                    self.send(wire.encode({"i": req.get("i", 0)}))
                    continue
                arrival = time.monotonic()
                try:
                    reply = srv.do(req)
                except OSError as e:
                    reply = {"e": e.errno or errno.EIO}
                reply["i"] = req["i"]
                with srv.lock:
                    srv.ops[self.node][op] += 1
                    if "e" in reply:
                        srv.errors[self.node][op] += 1
                    if not srv.first:
                        srv.first = arrival
                    srv.last = arrival
                srv.sender.put(srv.latency.reply_due(arrival), self, wire.encode(reply))
        finally:
            self.sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--rtt-us", type=float, default=model.Params.rtt_s * 1e6)
    ap.add_argument("--service-us", type=float, default=model.Params.service_s * 1e6)
    ap.add_argument("--threads", type=int, default=model.Params.threads)
    a = ap.parse_args()
    params = model.Params(rtt_s=a.rtt_us / 1e6, service_s=a.service_us / 1e6, threads=a.threads)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    Server(a.root, params).serve(a.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
