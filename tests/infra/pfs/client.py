"""One node's client of the simulated parallel file system: a read-only FUSE mount.

    /usr/bin/python3 client.py --root BACKING --socket MDS_SOCKET --mountpoint DIR --node NAME

Run it inside the node's mount namespace (``nsenter --mount=/proc/SLURMD_PID/ns/mnt``): the
kernel's dentry/attribute/page caches of a FUSE mount belong to that mount, so each node
caches on its own, like a Lustre client. ``BACKING`` may be the same path as ``DIR``: the
client opens it before mounting over it.

Metadata (lookup, getattr, readlink, open/close, opendir/readdir/closedir, statfs) goes to
the metadata server (mds.py), which counts and delays it. What a Lustre client would keep
under its locks is cached here for the whole run: names and attributes (kernel entry and
attribute timeouts, negative entries too) and directory listings (this process). Opens and
closes go to the server every time. File data is read straight from the backing directory
(the "OSS" path) into the node's page cache (``keep_cache``); the byte count is reported to
the server at unmount. Anything that would write fails with EROFS (the mount is ``ro``).
"""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import signal
import stat
import sys

import model
import pyfuse3
import trio
import wire

ROOT = pyfuse3.ROOT_INODE


class MDSConnection:
    """Requests to the metadata server, many in flight at once (one per FUSE request)."""

    def __init__(self, sock: trio.socket.SocketType):
        self.sock = sock
        self.ids = itertools.count(1)
        self.waiting: dict[int, list] = {}
        self.send_lock = trio.Lock()

    async def send(self, msg: dict) -> None:
        data = wire.encode(msg)
        async with self.send_lock:
            view = memoryview(data)
            while view:
                n = await self.sock.send(view)
                view = view[n:]

    async def call(self, op: str, **fields) -> dict:
        i = next(self.ids)
        slot = [trio.Event(), None]
        self.waiting[i] = slot
        await self.send({"op": op, "i": i, **fields})
        await slot[0].wait()
        reply = slot[1]
        if "e" in reply:
            raise pyfuse3.FUSEError(reply["e"])
        return reply

    async def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the metadata server closed the connection")
            buf += chunk
        return bytes(buf)

    async def reader(self) -> None:
        while True:
            (n,) = wire.HEADER.unpack(await self._recv_exact(wire.HEADER.size))
            reply = wire.decode(await self._recv_exact(n))
            slot = self.waiting.pop(reply["i"])
            slot[1] = reply
            slot[0].set()


class PFSClient(pyfuse3.Operations):
    def __init__(self, root_fd: int, root_ino: int, mds: MDSConnection):
        super().__init__()
        self.root_fd = root_fd
        self.root_ino = root_ino
        self.mds = mds
        self.paths: dict[int, str] = {ROOT: ""}  # FUSE inode -> path below the root
        self.dirs: dict[int, tuple[str, list | None]] = {}  # open dir handle -> (path, listing)
        self.listings: dict[str, list] = {}  # the node's cached directory pages
        self.fetching: dict[str, trio.Event] = {}
        self.links: dict[str, bytes] = {}
        self.files: dict[int, str] = {}
        self.dir_handles = itertools.count(1)
        self.bytes_read = 0
        self.reads = 0

    # ------------------------------------------------------------ helpers
    def fuse_ino(self, backing_ino: int) -> int:
        if backing_ino == self.root_ino:
            return ROOT
        if backing_ino == ROOT:
            return self.root_ino
        return backing_ino

    def entry(self, attrs: list[int], path: str) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        for name, value in zip(wire.ATTR_FIELDS, attrs, strict=True):
            setattr(e, name, value)
        e.st_ino = self.fuse_ino(e.st_ino)
        e.entry_timeout = e.attr_timeout = model.CACHE_S
        self.paths[e.st_ino] = path
        return e

    def path(self, inode: int) -> str:
        try:
            return self.paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    @staticmethod
    def join(parent: str, name: bytes) -> str:
        n = os.fsdecode(name)
        return f"{parent}/{n}" if parent else n

    # ------------------------------------------------------------ metadata: to the MDS
    async def lookup(self, parent_inode, name, ctx=None):
        path = self.join(self.path(parent_inode), name)
        try:
            reply = await self.mds.call("lookup", p=path)
        except pyfuse3.FUSEError as e:
            if e.errno != errno.ENOENT:
                raise
            neg = pyfuse3.EntryAttributes()  # st_ino 0: the kernel caches "no such name"
            neg.st_ino = 0
            neg.entry_timeout = model.CACHE_S
            return neg
        return self.entry(reply["a"], path)

    async def getattr(self, inode, ctx=None):
        path = self.path(inode)
        return self.entry((await self.mds.call("getattr", p=path))["a"], path)

    async def readlink(self, inode, ctx):
        path = self.path(inode)
        if path not in self.links:  # symlink bodies are cached like pages
            self.links[path] = os.fsencode((await self.mds.call("readlink", p=path))["t"])
        return self.links[path]

    async def open(self, inode, flags, ctx):
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        path = self.path(inode)
        await self.mds.call("open", p=path)
        try:  # the data path: straight to the backing file
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.root_fd)
        except OSError as e:
            await self.mds.call("close", p=path)
            raise pyfuse3.FUSEError(e.errno) from None
        self.files[fd] = path
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh, off, size):
        data = os.pread(fh, size, off)
        self.bytes_read += len(data)
        self.reads += 1
        return data

    async def release(self, fh):
        path = self.files.pop(fh, "")
        os.close(fh)
        await self.mds.call("close", p=path)

    async def opendir(self, inode, ctx):
        path = self.path(inode)
        await self.mds.call("opendir", p=path)
        fh = next(self.dir_handles)
        self.dirs[fh] = (path, None)
        return fh

    async def listing(self, path: str) -> list:
        """The directory's entries: from the node's cache, else one readdir at the MDS."""
        while path not in self.listings:
            if path in self.fetching:  # another process of this node is fetching it
                await self.fetching[path].wait()
                continue
            ev = self.fetching[path] = trio.Event()
            try:
                self.listings[path] = (await self.mds.call("readdir", p=path))["d"]
            finally:
                del self.fetching[path]
                ev.set()
        return self.listings[path]

    async def readdir(self, fh, start_id, token):
        path, entries = self.dirs[fh]
        if entries is None:
            entries = await self.listing(path)
            self.dirs[fh] = (path, entries)
        for i in range(start_id, len(entries)):
            name, attrs = entries[i]
            e = self.entry(attrs, self.join(path, os.fsencode(name)))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), e, i + 1):
                break

    async def releasedir(self, fh):
        path, _ = self.dirs.pop(fh, ("", None))
        await self.mds.call("closedir", p=path)

    async def statfs(self, ctx):
        s = (await self.mds.call("statfs"))["s"]
        out = pyfuse3.StatvfsData()
        (
            out.f_bsize,
            out.f_frsize,
            out.f_blocks,
            out.f_bfree,
            out.f_bavail,
            out.f_files,
            out.f_ffree,
            out.f_favail,
            out.f_namemax,
        ) = s
        return out


async def run(args) -> None:
    root_fd = os.open(args.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.fstat(root_fd)
    if not stat.S_ISDIR(st.st_mode):
        sys.exit(f"{args.root}: not a directory")
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.connect(args.socket)
    mds = MDSConnection(sock)
    await mds.send({"op": "hello", "node": args.node})
    ops = PFSClient(root_fd, st.st_ino, mds)
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    options |= {"fsname=sqenvpfs", "subtype=sqenvpfs", "allow_other", "ro"}
    pyfuse3.init(ops, args.mountpoint, options)
    print("ready", flush=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mds.reader)

            async def on_signal():
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return

            nursery.start_soon(on_signal)
            await pyfuse3.main(min_tasks=4, max_tasks=400)
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)
        try:  # the data totals, and wait until the server has them (its ack has id 0)
            await mds.send({"op": "report", "i": 0, "r": {"bytes_read": ops.bytes_read, "reads": ops.reads}})
            while True:
                (n,) = wire.HEADER.unpack(await mds._recv_exact(wire.HEADER.size))
                if wire.decode(await mds._recv_exact(n)).get("i") == 0:
                    break
        except (OSError, ConnectionError):
            pass
        sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--mountpoint", required=True)
    ap.add_argument("--node", required=True)
    trio.run(run, ap.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
