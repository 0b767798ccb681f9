"""Package indexes on 127.0.0.1 for the tests: a real simple index, and ones that fail the way networks do.

All servers run in threads of the test process and bind to 127.0.0.1 on a free port:
- `Index(root)`: a PEP 503 simple index over `root/simple/NAME/FILES`, plus the files themselves,
  over HTTP, or HTTPS with a self-signed certificate (`tls=True`, made with the `openssl` CLI);
- `refusing()`: a port that is bound but never listens, so connecting is refused (we hold it, so
  nobody else can take it meanwhile);
- `Resetting()`: accepts connections and resets them at once (SO_LINGER 0).
Packages are made here too: a pure-Python wheel (`wheel`), a wheel name for another platform, and
an sdist whose build fails on a missing C header (`broken_sdist`, built by a backend in the sdist
itself, so it needs no build dependency from the network).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import socket
import ssl
import struct
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _write_simple(root: Path) -> None:
    """index.html files for `root/simple` and each project directory under it."""
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    projects = sorted(p.name for p in simple.iterdir() if p.is_dir())
    links = "".join(f'<a href="{html.escape(p)}/">{html.escape(p)}</a>\n' for p in projects)
    (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    for project in projects:
        files = sorted(f.name for f in (simple / project).iterdir() if f.name != "index.html")
        links = "".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>\n' for f in files)
        (simple / project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by nobody uv trusts."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:FALSE", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class Index:
    """A simple index over `root` (files go in `root/simple/NAME/`), served until `close()`."""

    def __init__(self, root: Path, *, tls: bool = False) -> None:
        _write_simple(root)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self_signed(root.parent))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/simple"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def refusing() -> Iterator[str]:
    """An index URL where connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connect() gets ECONNREFUSED
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/simple"
    finally:
        sock.close()


class Resetting:
    """An index URL whose server resets every connection as soon as it is made."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/simple"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.recv(1024)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


# ------------------------------------------------------------------ packages
def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def wheel(directory: Path, name: str, version: str = "1.0", tag: str = "py3-none-any", requires: tuple = ()) -> Path:
    """A pure-Python wheel: `import NAME` gives `NAME.VERSION`."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": meta.encode(),
        f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: sqenv-tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode(),
    }
    record = "".join(_record_line(n, d) for n, d in files.items()) + f"{dist}/RECORD,,\n"
    path = directory / f"{module}-{version}-{tag}.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{dist}/RECORD", record)
    return path


_BACKEND = '''\
"""A build backend that compiles a C file, the way extension builds do."""
import subprocess, sys


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    proc = subprocess.run(["cc", "-c", "ext.c", "-o", "ext.o"], capture_output=True, text=True)
    sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit("error: command 'cc' failed with exit code %d" % proc.returncode)
    raise SystemExit("unreachable")


build_sdist = build_wheel
'''


def broken_sdist(directory: Path, name: str = "needsheader", version: str = "1.0") -> Path:
    """An sdist whose build stops at `#include <sqenv_missing_header.h>`."""
    base = f"{name}-{version}"
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n',
        "backend.py": _BACKEND,
        "ext.c": "#include <sqenv_missing_header.h>\nint f(void) { return 0; }\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for n, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{n}")
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return path
