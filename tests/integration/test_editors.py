"""What VS Code's Python extension and PyCharm run against a selected interpreter, through an
install's launcher `PREFIX/bin/python`, as the ordinary test user.

- Interpreter discovery: editors run `python -I /their/own/script.py` (a script on the host,
  outside the image) and read one JSON object from stdout; `executable` must be a path the editor
  can launch again from outside the namespace, `sysPrefix` the install, and the install must look
  like a venv on the host (`PREFIX/pyvenv.cfg`, which VS Code and PyCharm look for beside `bin/`).
  The script here is our own, of the shape VS Code's `interpreterInfo.py` has.
- Package lists: `python -m pip list --format json`.
- Debugging with the real debugpy from PyPI, installed into the environment, and a minimal Debug
  Adapter Protocol client (below): `python -m debugpy --listen ... --wait-for-client script.py`
  then attach, and VS Code's F5 (`python -m debugpy.adapter` over stdio, then launch); both set a
  breakpoint in the host's script, read its frame and variables, and continue to the end.

One environment is built once for the module: six, then debugpy added by `sqenv update` (so the
debugger runs from an update's layer, as it would for a user who adds it when needed).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support import BASE_PYTHON, need, ok, run, sqenv

INFO_SCRIPT = """\
import json
import sys

info = {
    "versionInfo": list(sys.version_info),
    "sysPrefix": sys.prefix,
    "sysVersion": sys.version,
    "is64Bit": sys.maxsize > 2**32,
    "executable": sys.executable,
}
print(json.dumps(info))
"""

DEBUGGEE = """\
import json
import pathlib
import sys

words = pathlib.Path(__file__).with_name("words.txt").read_text().split()
total = len(words)
print(json.dumps({"total": total, "file": __file__, "executable": sys.executable}), flush=True)
"""
BREAK_LINE = 7  # the `print` line of DEBUGGEE: `total` is set there


@pytest.fixture(scope="module")
def editor_env(user, shared_dir: Path) -> Path:
    need("mksquashfs")
    prefix = shared_dir / "editors-env"
    ok(sqenv("create", prefix, "six", "--python", BASE_PYTHON, user=user))
    ok(sqenv("update", prefix, "debugpy", user=user))  # as the README says: debugpy added later, a layer
    assert len(json.loads(ok(sqenv("info", prefix, "--json", user=user)).stdout)["layers"]) == 2
    return prefix


def _pyvenv_cfg_text(text: str) -> dict[str, str]:
    """`key = value` lines, as VS Code's and PyCharm's venv detection read them."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip().lower(): value.strip() for key, value in pairs}


def _pyvenv_cfg(path: Path) -> dict[str, str]:
    return _pyvenv_cfg_text(path.read_text())


def test_interpreter_discovery_gives_a_path_an_editor_can_launch_again(editor_env: Path, user, place: Path) -> None:
    script = place / "interpreter_info.py"  # on the host, outside the image, as an editor's own script
    script.write_text(INFO_SCRIPT)
    python = editor_env / "bin" / "python"
    info = json.loads(ok(run([str(python), "-I", str(script)], user=user, cwd=place)).stdout)
    base = json.loads(ok(run([BASE_PYTHON, "-I", str(script)], user=user)).stdout)
    assert info["versionInfo"] == base["versionInfo"] and info["sysVersion"] == base["sysVersion"]
    assert info["is64Bit"] is True
    # the paths the editor keeps are the install's, as the host sees them (not the image's /mnt/sqenv)
    assert info["executable"] == str(python) and info["sysPrefix"] == str(editor_env)
    # ... and the editor can run that executable again, from outside the namespace
    again = run([info["executable"], "-I", str(script)], user=user)
    assert json.loads(ok(again).stdout) == info
    six = ok(run([info["executable"], "-c", "import six; print(six.__file__)"], user=user)).stdout.strip()
    assert six.startswith(f"{info['sysPrefix']}/lib/") and six.endswith("six.py")
    # a venv to editors: pyvenv.cfg beside bin/ on the host, with the interpreter's version; the
    # image's own file but for uv's line (VS Code would then manage the install with uv, on the host)
    host_cfg = Path(info["executable"]).parent.parent / "pyvenv.cfg"
    cfg = _pyvenv_cfg(host_cfg)
    assert cfg["version_info"] == ".".join(map(str, info["versionInfo"][:3]))
    assert cfg["include-system-site-packages"] == "false" and "uv" not in cfg
    read = "import sys; print(open(sys.prefix + '/pyvenv.cfg').read())"  # inside: the image's
    image_cfg = _pyvenv_cfg_text(ok(run([info["executable"], "-c", read], user=user)).stdout)
    assert "uv" in image_cfg and cfg == {k: v for k, v in image_cfg.items() if k != "uv"}


def test_pip_list_json_lists_the_environment(editor_env: Path, user) -> None:
    python = str(editor_env / "bin" / "python")
    listed = json.loads(ok(run([python, "-m", "pip", "list", "--format", "json"], user=user)).stdout)
    versions = {p["name"].lower(): p["version"] for p in listed}
    assert {"debugpy", "six", "pip"} <= versions.keys()
    six_version = ok(run([python, "-c", "import six; print(six.__version__)"], user=user)).stdout.strip()
    assert versions["six"] == six_version
    # what an editor's "install package" button runs: refused with the way to do it
    refused = run([python, "-m", "pip", "install", "six"], user=user)
    assert refused.returncode != 0 and f"sqenv update {editor_env}" in refused.stderr


def test_uv_pip_install_with_the_install_python_writes_nothing_on_the_host(editor_env: Path, user) -> None:
    """uv takes the interpreter's word for where packages go (PREFIX/lib/...); on the host that is
    the install's empty read-only `lib`, so the install fails instead of landing where the
    environment never looks."""
    from uv import find_uv_bin

    lib = editor_env / "lib"
    assert lib.is_dir() and not any(lib.iterdir()) and (lib.stat().st_mode & 0o777) == 0o555
    proc = run([find_uv_bin(), "pip", "install", "--python", str(editor_env / "bin" / "python"), "idna"], user=user)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc.stderr
    assert not any(lib.iterdir())


# ------------------------------------------------------------------ Debug Adapter Protocol

GUARD = 120  # seconds before a silent adapter fails the test instead of hanging the suite (not a measurement)


class Dap:
    """A minimal Debug Adapter Protocol client: JSON messages with Content-Length headers, over
    a socket (`--listen`) or the adapter's stdin/stdout (how VS Code starts its adapter)."""

    def __init__(self, write: Callable[[bytes], None], read: Callable[[], bytes]) -> None:
        self.write, self.read = write, read
        self.buffer = b""
        self.seq = 0
        self.events: list[dict] = []
        self.responses: dict[int, dict] = {}

    @classmethod
    def over_socket(cls, sock: socket.socket) -> Dap:
        sock.settimeout(GUARD)
        return cls(sock.sendall, lambda: sock.recv(65536))

    @classmethod
    def over_pipes(cls, proc: subprocess.Popen) -> Dap:
        def write(data: bytes) -> None:
            proc.stdin.write(data)
            proc.stdin.flush()

        def read() -> bytes:
            if not select.select([proc.stdout], [], [], GUARD)[0]:
                raise TimeoutError("the debug adapter said nothing")
            return os.read(proc.stdout.fileno(), 65536)

        return cls(write, read)

    def send(self, command: str, **arguments: object) -> int:
        self.seq += 1
        body = json.dumps({"seq": self.seq, "type": "request", "command": command, "arguments": arguments}).encode()
        self.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self.seq

    def _read(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n") if b":" in line)
        length = int(next(v for k, v in fields.items() if k.strip().lower() == b"content-length"))
        while len(self.buffer) < length:
            self._recv()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        message = json.loads(body)
        if message["type"] == "event":
            self.events.append(message)
        elif message["type"] == "response":
            self.responses[message["request_seq"]] = message

    def _recv(self) -> None:
        chunk = self.read()
        if not chunk:
            raise ConnectionError("the debug adapter closed the connection")
        self.buffer += chunk

    def response(self, seq: int) -> dict:
        while seq not in self.responses:
            self._read()
        reply = self.responses.pop(seq)
        assert reply["success"], reply
        return reply.get("body") or {}

    def request(self, command: str, **arguments: object) -> dict:
        return self.response(self.send(command, **arguments))

    def event(self, name: str) -> dict:
        while True:
            for i, event in enumerate(self.events):
                if event["event"] == name:
                    return self.events.pop(i).get("body") or {}
            self._read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(port: int, proc: subprocess.Popen) -> socket.socket:
    """Connect once the adapter listens; stop with the debuggee's output if it died first."""
    deadline = time.monotonic() + GUARD
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"debugpy did not listen on {port} (exit {proc.returncode}):\n{out}\n{err}")
            time.sleep(0.2)


def _debuggee(place: Path) -> Path:
    script = place / "debuggee.py"  # the user's program and its data, on the host
    script.write_text(DEBUGGEE)
    (place / "words.txt").write_text("alpha beta gamma\n")
    assert script.read_text().splitlines()[BREAK_LINE - 1].startswith("print(")
    return script


def _stop_inspect_continue(dap: Dap, start: str, arguments: dict, script: Path) -> None:
    """What an editor does: start (attach or launch), set a breakpoint, stop there, read the
    frame and its variables, continue."""
    caps = dap.request("initialize", clientID="sqenv-test", adapterID="debugpy", pathFormat="path",
                       linesStartAt1=True, columnsStartAt1=True)  # fmt: skip
    assert caps.get("supportsConfigurationDoneRequest")
    started = dap.send(start, **arguments)  # answered only after configurationDone
    dap.event("initialized")
    placed = dap.request("setBreakpoints", source={"path": str(script)}, breakpoints=[{"line": BREAK_LINE}])
    assert [b["verified"] for b in placed["breakpoints"]] == [True]
    dap.request("configurationDone")
    dap.response(started)
    stopped = dap.event("stopped")
    assert stopped["reason"] == "breakpoint"
    top = dap.request("stackTrace", threadId=stopped["threadId"])["stackFrames"][0]
    # the debuggee runs the host's file: the frame names it at the path the editor opened
    assert top["source"]["path"] == str(script) and top["line"] == BREAK_LINE
    scopes = dap.request("scopes", frameId=top["id"])["scopes"]
    ref = next(s["variablesReference"] for s in scopes if s["name"].lower() in ("locals", "globals"))
    values = {v["name"]: v["value"] for v in dap.request("variables", variablesReference=ref)["variables"]}
    assert values["total"] == "3" and values["words"] == "['alpha', 'beta', 'gamma']"
    dap.request("continue", threadId=stopped["threadId"])


def test_debugpy_listen_attach_breakpoint_variables_continue(editor_env: Path, user, place: Path) -> None:
    """`python -m debugpy --listen` (VS Code's "Remote Attach", or a job on a compute node)."""
    script = _debuggee(place)
    port = _free_port()
    argv = [str(editor_env / "bin" / "python"), "-m", "debugpy", "--listen", f"127.0.0.1:{port}"]
    argv += ["--wait-for-client", str(script)]
    proc = subprocess.Popen(
        user.wrap(argv), env=user.env(), cwd=place, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with _connect(port, proc) as sock:
            dap = Dap.over_socket(sock)
            _stop_inspect_continue(dap, "attach", {"justMyCode": True}, script)
            dap.event("terminated")  # attached, not launched: the exit code is the process's (below)
        out, err = proc.communicate(timeout=GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result == {"total": 3, "file": str(script), "executable": str(editor_env / "bin" / "python")}


def test_debugpy_adapter_launches_the_program_as_vscode_does(editor_env: Path, user, place: Path) -> None:
    """F5 in VS Code: the adapter runs on the selected interpreter and talks over stdin/stdout;
    `launch` names that interpreter as `python`, and the adapter starts the program with it."""
    script = _debuggee(place)
    python = str(editor_env / "bin" / "python")
    proc = subprocess.Popen(
        user.wrap([python, "-m", "debugpy.adapter"]), env=user.env(), cwd=place,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        dap = Dap.over_pipes(proc)
        launch = {"program": str(script), "python": [python], "cwd": str(place), "console": "internalConsole"}
        _stop_inspect_continue(dap, "launch", launch, script)
        assert dap.event("exited")["exitCode"] == 0
        dap.event("terminated")
        stdout = [e["body"] for e in dap.events if e["event"] == "output" and e["body"]["category"] == "stdout"]
        _, err = proc.communicate(timeout=GUARD)  # closes its stdin: the adapter ends
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = "".join(body["output"] for body in stdout)
    assert json.loads(out) == {"total": 3, "file": str(script), "executable": python}
