"""Wire format between the simulated file system's clients and its metadata server.

A message is a 4-byte big-endian length and a JSON object. Names and paths are ``str`` made
with ``os.fsdecode`` (surrogate escapes survive JSON), so any byte name round-trips.
Attributes travel as a list in ``ATTR_FIELDS`` order.
"""

from __future__ import annotations

import json
import os
import struct

HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 << 20

ATTR_FIELDS = (
    "st_ino",
    "st_mode",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_rdev",
    "st_size",
    "st_blksize",
    "st_blocks",
    "st_atime_ns",
    "st_mtime_ns",
    "st_ctime_ns",
)


def attrs_of(st: os.stat_result) -> list[int]:
    return [getattr(st, f) for f in ATTR_FIELDS]


def encode(obj: dict) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


def decode(data: bytes) -> dict:
    return json.loads(data)


def recv_exact(sock, n: int) -> bytes:
    """Read exactly n bytes from a blocking socket; b"" when the peer closed first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return bytes(buf)


def recv_message(sock) -> dict | None:
    head = recv_exact(sock, HEADER.size)
    if not head:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_MESSAGE:
        raise ValueError(f"message of {n} bytes is too large")
    body = recv_exact(sock, n)
    if len(body) != n:
        return None
    return decode(body)
