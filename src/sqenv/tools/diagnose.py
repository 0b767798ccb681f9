"""Why a tool failed, read from what it said: pure functions over its output and exit status.

A failing uv, rattler worker, mksquashfs or user script is reported with the
cause as the headline (unreachable index, untrusted certificate, no wheel for
this Python, a missing C header, a true conflict, out of memory, ...), the
tool's own explanation below it, whole, and one hint that names only options
sqenv has. Everything here is a pure function, so each cause is unit-tested
over real captured outputs (tests/data/uv) without running anything.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

SHOWN_LINES = 40
"""At most this many lines of a tool's explanation go on the terminal; the rest is in the log."""

_NOISE = re.compile(r"^\s*(DEBUG|TRACE|INFO|WARN)\s")  # uv -v's own log lines

# ------------------------------------------------------------------ hints (only options sqenv has)
HINT_INDEX = "check the index URL given with `--index-url` / `--extra-index-url` (or the site config's `index_url`)"
HINT_NETWORK = (
    "check that this machine can reach the index (compute nodes often cannot: build on a login node), "
    "or use a mirror with `--index-url URL`, or local files with `--find-links DIR --no-index`"
)
HINT_DNS = "check the host name in the index URL (`--index-url`), or the machine's DNS; compute nodes often have none"
HINT_PROXY = "check the proxy variables (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), or use a mirror with `--index-url URL`"
HINT_TLS = (
    "if the site intercepts TLS with its own certificate authority, use the system's certificates with "
    "`--system-certs` (or point SSL_CERT_FILE at the site's CA bundle)"
)
HINT_TIMEOUT = "retry, or raise uv's timeout with UV_HTTP_TIMEOUT=120; a mirror (`--index-url URL`) may be closer"
HINT_NO_DIST = (
    "pick a version that has wheels for this Python and machine (see the package's files on its index), "
    "or build on another base interpreter with `--python PY`"
)
HINT_HEADER = (
    "install the library that provides `{header}` (its -dev package, or load its module) before building, "
    "or pin a version of the package that has a wheel"
)
HINT_COMPILER = "install or load a compiler (`{compiler}`) before building, or pin a version that has a wheel"
HINT_BUILD = "install its build dependencies (compilers, headers) first, or pin a version that has a wheel"
HINT_CONFLICT = "relax the version constraints named in the explanation above"
HINT_NOT_FOUND = "check the name (https://pypi.org/search), or the index given with `--index-url`"
HINT_NO_VERSION = "relax the version constraint, or check the index given with `--index-url`"
HINT_MEMORY = (
    "build where more memory is available (a compute node via `srun`, or a larger memory limit for the job), "
    "or install fewer packages at once (`sqenv update PREFIX PKG` afterwards)"
)
HINT_DISK = "free space, or build elsewhere with `--build-dir DIR` (or SQENV_BUILD_DIR)"
HINT_SCRIPT = "fix the script; its output is shown above"
HINT_LOG = "the tool's output above and the full log say why"

ALL_HINTS = (HINT_INDEX, HINT_NETWORK, HINT_DNS, HINT_PROXY, HINT_TLS, HINT_TIMEOUT, HINT_NO_DIST, HINT_HEADER,
             HINT_COMPILER, HINT_BUILD, HINT_CONFLICT, HINT_NOT_FOUND, HINT_NO_VERSION, HINT_MEMORY, HINT_DISK,
             HINT_SCRIPT, HINT_LOG)  # fmt: skip


@dataclass(frozen=True)
class Diagnosis:
    """A failure's cause (`kind`), the headline saying it, one hint, and the tool's explanation lines."""

    kind: str
    headline: str
    hint: str | None = None
    explanation: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ shared pieces
def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def killed(what: str, code: int, output: str) -> Diagnosis | None:
    """Out of memory, or killed by a signal: from the exit status (negative = the signal) and the text."""
    if re.search(r"memory allocation of \d+ bytes failed|MemoryError|Cannot allocate memory|out of memory", output,
                 re.IGNORECASE):  # fmt: skip
        return Diagnosis("memory", f"{what} ran out of memory", HINT_MEMORY)
    if re.search(r"ThreadPoolBuildError|failed to spawn thread|can't start new thread", output) and re.search(
        r"Resource temporarily unavailable|WouldBlock", output
    ):
        return Diagnosis("memory", f"{what} ran out of memory (or of processes): it could not start a thread",
                         HINT_MEMORY)  # fmt: skip
    if code < 0:
        name = signal_name(-code)
        if -code == signal.SIGKILL:
            return Diagnosis(
                "signal", f"{what} was killed (SIGKILL; the kernel's out-of-memory killer does this)", HINT_MEMORY
            )
        return Diagnosis("signal", f"{what} was killed by {name}", HINT_LOG)
    return None


def network(text: str) -> Diagnosis | None:
    """Network failures, as uv (reqwest/hyper/rustls) and rattler word them."""
    url = re.search(r"(?:Failed to fetch|for url \(|Failed to download)[:\s`]*((?:https?|file)://[^\s)`']+)", text)
    host = _host(url.group(1)) if url else "the package index"
    low = text.lower()
    if "invalid peer certificate" in low or "certificate verify failed" in low or "unknownissuer" in low:
        reason = re.search(r"invalid peer certificate: (\S+)", text)
        why = f" ({reason.group(1)})" if reason else ""
        return Diagnosis("tls", f"the TLS certificate of {host} is not trusted{why}", HINT_TLS)
    if "tunnel error" in low or ("proxy" in low and ("connect" in low or "error" in low)):
        return Diagnosis("proxy", f"cannot reach {host} through the proxy", HINT_PROXY)
    if "dns error" in low or "failed to lookup address" in low or "name or service not known" in low:
        return Diagnosis("dns", f"cannot resolve the host name of {host} (DNS)", HINT_DNS)
    if "connection refused" in low:
        return Diagnosis("network", f"cannot reach {host}: connection refused", HINT_NETWORK)
    if "connection reset" in low:
        return Diagnosis("network", f"the connection to {host} was reset", HINT_NETWORK)
    if "timed out" in low or "operation timeout" in low:
        return Diagnosis("network", f"{host} did not answer in time", HINT_TIMEOUT)
    if "network is unreachable" in low or "no route to host" in low:
        return Diagnosis("network", f"cannot reach {host}: the network is unreachable", HINT_NETWORK)
    if url and ("error sending request" in low or "request failed after" in low):
        return Diagnosis("network", f"cannot download from {host}", HINT_NETWORK)
    return None


def _host(url: str) -> str:
    found = re.match(r"(\w+://[^/]+)", url)
    return f"`{found.group(1)}`" if found else f"`{url}`"


# ------------------------------------------------------------------ uv
def uv_explanation(output: str) -> list[str]:
    """uv's own explanation: from its `error:` line to the end, without -v's log lines."""
    lines = [line.rstrip() for line in output.splitlines() if not _NOISE.match(line)]
    for i, line in enumerate(lines):
        if line.startswith(("error:", "  × ", "× ")):
            return _trim(lines[i:])
    return _trim(lines[-SHOWN_LINES:])


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def classify_uv(output: str, code: int, what: str = "uv") -> Diagnosis:
    """The cause of a failed `uv pip install` (or `uv venv`)."""
    explanation = uv_explanation(output)
    text = "\n".join(explanation)
    return _with(_uv_cause(output, text, code, what), explanation)


def _with(diag: Diagnosis, explanation: list[str]) -> Diagnosis:
    return Diagnosis(diag.kind, diag.headline, diag.hint, explanation)


def _uv_cause(output: str, text: str, code: int, what: str) -> Diagnosis:
    dead = killed(what, code, output)
    if dead:
        return dead
    if "No space left on device" in output:
        return Diagnosis("disk", "the build directory ran out of space", HINT_DISK)
    net = network(text)
    if net:
        return net
    wheels = re.search(r"Because (\S+?)(==\S+)? has no wheels with a matching "
                       r"(Python implementation|Python ABI|platform) tag \(e\.g\., `([^`]+)`\)", text)  # fmt: skip
    if wheels:
        name, version, which, tag = wheels.groups()
        target = f"this machine's platform ({tag})" if which == "platform" else f"this Python ({tag})"
        return Diagnosis("no-distribution", f"`{name}{version or ''}` has no wheel for {target}", HINT_NO_DIST)
    python = re.search(r"current Python version \(([\d.]+)\) does not satisfy Python(\S+?)[ ,]", text)
    if python and "depends on Python" in text:
        pkg = re.search(r"and (\S+?) depends on Python", text)
        name = f"`{pkg.group(1)}`" if pkg else "a requested package"
        return Diagnosis("no-distribution",
                         f"{name} needs Python {python.group(2)}, the base Python is {python.group(1)}",
                         HINT_NO_DIST)  # fmt: skip
    missing = re.search(r"Because (\S+) was not found in the package registry", text)
    if missing:
        return Diagnosis(
            "not-found", f"package `{missing.group(1)}` was not found on the package index", HINT_NOT_FOUND
        )
    version = re.search(r"Because (?:there is no version of (\S+?)(?:==|>|<|~|!)|only (\S+?)(?:==|<=|>=|<|>)\S+ "
                        r"is available and you require \2)", text)  # fmt: skip
    if version and "And because" not in text:
        return Diagnosis("no-version", f"no version of `{version.group(1) or version.group(2)}` matches what was asked",
                         HINT_NO_VERSION)  # fmt: skip
    built = re.search(r"Failed to (?:download and )?build `([^`]+)`", text)
    if built:
        return _build_failure(built.group(1), text)
    if "No solution found" in text:
        return Diagnosis("conflict", "the requirements conflict with each other", HINT_CONFLICT)
    first = next((line for line in text.splitlines() if line.startswith("error:")), None)
    if first:
        return Diagnosis("failed", f"{what} failed: {first.removeprefix('error:').strip()}", HINT_LOG)
    return Diagnosis("failed", f"{what} failed (exit code {code})", HINT_LOG)


def _build_failure(name: str, text: str) -> Diagnosis:
    header = re.search(r"fatal error: ([\w./+-]+\.h(?:pp)?): No such file or directory", text)
    if header:
        return Diagnosis("build", f"`{name}` failed to build from source: the C header `{header.group(1)}` is missing",
                         HINT_HEADER.format(header=header.group(1)))  # fmt: skip
    compiler = re.search(
        r"command '([^']+)' failed: No such file or directory|(?:^|\s)([\w.+-]*(?:gcc|g\+\+|cc|gfortran|clang|c\+\+|"
        r"cmake|ninja|rustc|cargo)): (?:command )?not found|error: can't find Rust compiler|"
        r"(?:Unknown|No) (?:CMAKE_)?(C|CXX|Fortran) compiler",
        text,
        re.MULTILINE,
    )  # fmt: skip
    if compiler:
        tool = compiler.group(1) or compiler.group(2) or ("rustc" if "Rust" in compiler.group(0) else compiler.group(3))
        return Diagnosis("build", f"`{name}` failed to build from source: the compiler `{tool}` is missing",
                         HINT_COMPILER.format(compiler=tool))  # fmt: skip
    return Diagnosis("build", f"`{name}` failed to build from source", HINT_BUILD)


# ------------------------------------------------------------------ mksquashfs, scripts, other tools
def classify_mksquashfs(output: str, code: int) -> Diagnosis:
    lines = _trim([line for line in output.splitlines() if not re.match(r"^\s*\[[=\-\\|/ ]*\]\s+\d+/\d+", line)])
    dead = killed("mksquashfs", code, output)
    if dead:
        return _with(dead, lines[-SHOWN_LINES:])
    if "No space left" in output:
        return Diagnosis("disk", "no space left to write the image", "free space on that file system, then retry",
                         lines[-SHOWN_LINES:])  # fmt: skip
    fatal = re.search(r"FATAL ERROR:\s*(.+)", output)
    why = fatal.group(1).strip() if fatal else f"exit code {code}"
    return Diagnosis("failed", f"mksquashfs failed: {why}", HINT_LOG, lines[-SHOWN_LINES:])


def classify_script(output: str, code: int, what: str) -> Diagnosis:
    """A user's pre/post-install script: its exit status, or the signal that killed it (or a command in it)."""
    lines = _trim(output.splitlines())[-SHOWN_LINES:]
    dead = killed(what, code, output if code < 0 else "")
    if dead:
        return _with(dead, lines)
    if 128 < code <= 128 + 64:  # the shell's way of saying a command it ran died of signal code-128
        return Diagnosis("signal", f"{what} failed: a command in it was killed by {signal_name(code - 128)}",
                         HINT_MEMORY if code - 128 == signal.SIGKILL else HINT_SCRIPT, lines)  # fmt: skip
    net = network(output)
    hint = f"{HINT_SCRIPT}; {net.headline}" if net else HINT_SCRIPT
    return Diagnosis("script", f"{what} failed (exit code {code})", hint, lines)


def classify_generic(output: str, code: int, what: str) -> Diagnosis:
    lines = _trim([line for line in output.splitlines() if not _NOISE.match(line)])[-SHOWN_LINES:]
    dead = killed(what, code, output if code < 0 else "")
    if dead:
        return _with(dead, lines)
    return Diagnosis("failed", f"{what} failed (exit code {code})", None, lines)


# ------------------------------------------------------------------ how it is shown
def details(explanation: list[str], log: Path | str | None, limit: int = SHOWN_LINES) -> str:
    """The explanation whole (or its first `limit` lines and how many more are in the log), then the log."""
    shown = ["  | " + line for line in explanation[:limit]]
    rest = len(explanation) - limit
    if rest > 0:
        shown.append(f"  … {rest} more line{'s' if rest > 1 else ''} in {log}")
    if log:
        shown.append(f"full log: {log}")
    return "\n".join(shown)
