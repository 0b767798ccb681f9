"""Failures reported by their cause, index options, progress: real uv, real PyPI, real servers on 127.0.0.1.

The failing indexes are served by tests/index_server.py in this process; sqenv runs as the ordinary test
user. uv's retries are turned off (UV_HTTP_RETRIES=0) only to keep each network failure to a second.
"""

from __future__ import annotations

import ast
import os
import re
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import index_server as ix
import pytest

from support import BASE_PYTHON, ROOT, SQENV, User, need, ok, sqenv

FAST = {"UV_HTTP_RETRIES": "0", "UV_NO_CACHE": "1"}
PIP_WHEELS = Path("/usr/share/python-wheels")  # Debian's python3-pip-whl: pip for the local index


@pytest.fixture
def files(shared_dir: Path) -> Path:
    """A new directory for the test's input files (root's, readable by the test user)."""
    d = Path(tempfile.mkdtemp(dir=shared_dir))
    d.chmod(0o755)
    return d


@pytest.fixture(scope="module")
def local_index(shared_dir: Path) -> Iterator[tuple[ix.Index, Path]]:
    """pip, setuptools, wheel (uv seeds a venv with them, from the same index), `good` 1.0, `later` 1.0,
    a wheel for Python 2.7 on Windows only, a broken sdist. pip and setuptools are Debian's wheels; `wheel`
    is an empty stand-in (nothing here builds with it)."""
    root = Path(tempfile.mkdtemp(dir=shared_dir)) / "idx"
    for name in ("pip", "setuptools"):
        found = sorted(PIP_WHEELS.glob(f"{name}-*.whl"))
        if not found:
            pytest.fail(f"Debian's {name} wheel (python3-pip-whl, python3-setuptools-whl) is missing")
        (root / "simple" / name).mkdir(parents=True)
        shutil.copy(found[-1], root / "simple" / name)
    ix.wheel(root / "simple" / "wheel", "wheel", "0.45.0")
    ix.wheel(root / "simple" / "good", "good")
    ix.wheel(root / "simple" / "later", "later")
    ix.wheel(root / "simple" / "winonly", "winonly", tag="cp27-cp27m-win32")
    ix.broken_sdist(root / "simple" / "needsheader")
    for path in [root.parent, root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    index = ix.Index(root)
    yield index, root
    index.close()


def fails(proc: subprocess.CompletedProcess[str], headline: str) -> str:
    """Exit 5, the cause as the first line, the full log's path, one hint; returns stderr."""
    err = proc.stderr
    assert proc.returncode == 5, f"exit {proc.returncode}\n{err}"
    first = next(line for line in err.splitlines() if line.startswith("error: "))
    assert headline in first, err
    assert re.search(r"^full log: /\S+\.log$", err, re.MULTILINE), err
    assert "\nhint: " in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("cause", ["refused", "reset", "tls", "dns"])
def test_network_failures_say_what_happened(cause: str, user: User, place: Path, tmp_path: Path) -> None:
    need("mksquashfs")
    server = None
    if cause == "refused":
        ctx = ix.refusing()
        url = ctx.__enter__()
    elif cause == "reset":
        server = ix.Resetting()
        url = server.url
    elif cause == "tls":
        root = tmp_path / "tls" / "idx"
        ix.wheel(root / "simple" / "good", "good")
        server = ix.Index(root, tls=True)
        url = server.url
    else:
        url = "https://nonexistent.invalid/simple"
    try:
        proc = sqenv("create", place / "e", "good", "--python", BASE_PYTHON, "--index-url", url, user=user, env=FAST)
    finally:
        if cause == "refused":
            ctx.__exit__(None, None, None)
        elif server is not None:
            server.close()
    expected = {
        "refused": "connection refused",
        "reset": "was reset",
        "tls": "is not trusted (UnknownIssuer)",
        "dns": "cannot resolve the host name of `https://nonexistent.invalid`",
    }[cause]
    err = fails(proc, expected)
    assert "conflict" not in err
    assert "--system-certs" in err if cause == "tls" else "--index-url" in err
    assert not (place / "e").exists()


def test_no_wheel_for_this_python(user: User, place: Path, local_index) -> None:
    index, _ = local_index
    proc = sqenv("create", place / "e", "winonly", "--python", BASE_PYTHON, "--index-url", index.url,
                 user=user, env=FAST)  # fmt: skip
    err = fails(proc, "`winonly==1.0` has no wheel for this Python (cp311)")
    assert "we only found wheels for `winonly` (v1.0) with the following Python implementation tag: `cp27`" in err


def test_build_failure_names_the_missing_header(user: User, place: Path, local_index) -> None:
    index, _ = local_index
    proc = sqenv("create", place / "e", "needsheader", "--python", BASE_PYTHON, "--index-url", index.url,
                 user=user, env=FAST)  # fmt: skip
    err = fails(
        proc, "`needsheader==1.0` failed to build from source: the C header `sqenv_missing_header.h` is missing"
    )
    assert "fatal error: sqenv_missing_header.h: No such file or directory" in err


def test_true_conflict_shows_the_whole_explanation(user: User, place: Path) -> None:
    proc = sqenv("create", place / "e", "requests==2.31.0", "urllib3==1.20", "--python", BASE_PYTHON, user=user)
    err = fails(proc, "the requirements conflict with each other")
    assert "Because requests==2.31.0 depends on urllib3" in err  # the start of uv's explanation...
    assert "And because you require urllib3==1.20" in err  # ...and its end


def test_out_of_memory(user: User, place: Path) -> None:
    """uv under a 400 MB address-space limit (prlimit) aborts on a failed allocation."""
    argv = user.wrap(["prlimit", "--as=400000000", "--", *SQENV, "create", str(place / "e"), "numpy",
                      "--python", BASE_PYTHON])  # fmt: skip
    proc = subprocess.run(argv, env=user.env(FAST), cwd="/tmp", capture_output=True, text=True, timeout=600)
    fails(proc, "uv ran out of memory")


def test_script_killed_by_a_signal(user: User, place: Path, files: Path) -> None:
    script = files / "die.sh"
    script.write_text('echo "about to die"\nkill -9 $$\n')
    script.chmod(0o644)
    proc = sqenv("create", place / "e", "six", "--python", BASE_PYTHON, "--post-install", script, user=user)
    err = fails(proc, f"post-install script `{script}` was killed (SIGKILL")
    assert "post-install │ about to die" in err  # streamed as it ran, at normal verbosity
    assert "sqenv-enter" not in err  # our internals only at -vv


# ------------------------------------------------------------------ index options
def test_index_url_is_used_and_reused_by_update(user: User, place: Path, local_index) -> None:
    need("mksquashfs")
    index, _ = local_index
    prefix = place / "e"
    ok(sqenv("create", prefix, "good", "--python", BASE_PYTHON, "--index-url", index.url, user=user, env=FAST))
    # `later` exists only on the local index: the update finds it without being told where
    ok(sqenv("update", prefix, "later", user=user, env=FAST))
    out = ok(sqenv("run", prefix, "--", "python", "-c", "import good, later; print(good.VERSION, later.VERSION)",
                   user=user)).stdout  # fmt: skip
    assert out.split() == ["1.0", "1.0"]
    history = ok(sqenv("history", prefix, "--json", user=user)).stdout
    assert history.count(index.url) == 2  # recorded in both versions' inputs


def test_find_links_without_index(user: User, place: Path, local_index) -> None:
    need("mksquashfs")
    _, root = local_index
    prefix = place / "e"
    links = root / "simple" / "good"
    ok(sqenv("create", prefix, "good", "--python", BASE_PYTHON, "--find-links", links, "--no-index", user=user))
    ok(sqenv("run", prefix, "--", "python", "-c", "import good, pip", user=user))
    proc = sqenv("create", place / "f", "good", "--python", BASE_PYTHON, "--no-index", user=user)
    assert proc.returncode == 2 and "--find-links" in proc.stderr


def test_index_from_site_config_and_system_certs(user: User, place: Path, local_index, files: Path) -> None:
    need("mksquashfs")
    index, _ = local_index
    config = files / "config.toml"
    config.write_text(f'[defaults]\nindex_url = "{index.url}"\nsystem_certs = true\n')
    config.chmod(0o644)
    env = {**FAST, "SQENV_CONFIG": str(config)}
    shown = ok(sqenv("config", user=user, env=env)).stdout
    assert index.url in shown and "system_certs" in shown
    prefix = place / "e"
    proc = ok(sqenv("create", prefix, "good", "--python", BASE_PYTHON, "-vv", user=user, env=env))
    # uv's system-certificates option cannot be proven to change trust here (the system store is
    # shared with the whole machine): check that uv got it, as the -vv command lines show.
    assert re.search(r"uv pip install -v .*--index-url \S+ --system-certs", proc.stderr), proc.stderr


# ------------------------------------------------------------------ hints name only real options
def _hints() -> list[tuple[str, str]]:
    """Every hint string in sqenv's sources: (module, text) (f-strings with their literal parts)."""
    found = []
    for path in sorted((ROOT / "src" / "sqenv").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            values: list[ast.AST] = []
            if isinstance(node, ast.Call):
                values += [kw.value for kw in node.keywords if kw.arg == "hint"]
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name.endswith(("Error", "Missing", "Diagnosis")) and len(node.args) >= 2:
                    values.append(node.args[1 if not name.endswith("Diagnosis") else 2] if len(node.args) > 2 or
                                  not name.endswith("Diagnosis") else node.args[1])  # fmt: skip
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "").startswith("HINT_") for t in node.targets):
                values.append(node.value)
            for value in values:
                text = "".join(
                    n.value for n in ast.walk(value) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                )
                if "--" in text:
                    found.append((str(path.relative_to(ROOT / "src")), text))
    return found


def _helps() -> dict[str, str]:
    names = ["create", "update", "run", "info", "doctor", "export", "stage", "config", "wrap", "history",
             "rollback", "compact", "shell", "module", "kernel install", "kernel remove"]  # fmt: skip
    out = {}
    for name in names:
        proc = subprocess.run([*SQENV, *name.split(), "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, f"`sqenv {name} --help` failed: {proc.stderr}"
        out[name.split()[0]] = out.get(name.split()[0], "") + proc.stdout
    return out


HINTS = _hints()


@pytest.mark.parametrize(("module", "hint"), HINTS, ids=[f"{m}:{h[:40]}" for m, h in HINTS])
def test_every_option_named_in_a_hint_exists(module: str, hint: str) -> None:
    """Options in backticks of another tool (`conda list --explicit`) are that tool's; all others must be sqenv's:
    inside `sqenv SUB ...`, in SUB's help; elsewhere, in some subcommand's help."""
    helps = _helps_cached()
    checks: list[tuple[str, list[str]]] = []
    outside = re.sub(r"`[^`]*`", " ", hint)
    checks += [(o, []) for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", outside)]
    for quoted in re.findall(r"`([^`]*)`", hint):
        words = quoted.split()
        if words and words[0] == "sqenv":
            sub = [words[1]] if len(words) > 1 and words[1] in helps else []
            checks += [(o, sub) for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", quoted)]
        elif words and words[0].startswith("--"):
            checks += [(o, []) for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", quoted)]
    for option, subs in checks:
        where = [helps[n] for n in subs] or list(helps.values())
        assert any(re.search(rf"(?<![\w-]){re.escape(option)}\b", text) for text in where), (
            f"{module}: the hint names `{option}`, not in `sqenv {'/'.join(subs) or '*'} --help`: {hint}"
        )


_HELP: dict[str, str] = {}


def _helps_cached() -> dict[str, str]:
    if not _HELP:
        _HELP.update(_helps())
    return _HELP


# ------------------------------------------------------------------ progress on a terminal
def _in_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as stdin/stdout/stderr; its exit status and everything it drew."""
    leader, follower = os.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env, cwd="/tmp")
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 600)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def test_terminal_progress_with_counts_and_markup_in_paths(user: User, place: Path, files: Path) -> None:
    need("mksquashfs")
    odd = place / "a[bold]b[/x]"  # a directory `a[bold]b[` holding `x]`
    odd.mkdir(parents=True)
    for d in (odd.parent, odd):
        os.chown(d, user.uid, user.gid)
    script = files / "s[/x][bold]post.sh"  # a directory `s[` holding `x][bold]post.sh`
    script.parent.mkdir(mode=0o755)
    script.write_text('echo "[bold]not bold[/bold] [/x]"\n')
    script.chmod(0o644)
    env = user.env({"TERM": "xterm", "COLUMNS": "200"})
    code, screen = _in_pty(user.wrap([*SQENV, "create", str(odd / "e"), "requests", "--python", BASE_PYTHON,
                                      "--post-install", str(script)]), env)  # fmt: skip
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen).replace("\r", "\n")
    assert code == 0, plain
    assert re.search(r"resolving: \d+ packages? selected", plain), plain  # live, before the resolver finished
    assert re.search(r"(\d+) resolved · .*\b\1 installed", plain), plain
    assert re.search(r"✓ Resolving, downloading and installing packages \(\d+ resolved, .*\d+ installed; ", plain)
    assert re.search(r"\d+ s\b", plain)  # elapsed time on the live line
    assert "post-install │ [bold]not bold[/bold] [/x]" in plain
    assert "Running the post-install script x][bold]post.sh" in plain
    assert str(odd / "e") in plain


def test_pack_percentage_on_a_terminal(user: User, place: Path) -> None:
    need("mksquashfs")
    env = user.env({"TERM": "xterm", "COLUMNS": "200"})
    code, screen = _in_pty(user.wrap([*SQENV, "create", str(place / "e"), "six", "--python", BASE_PYTHON]), env)
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen).replace("\r", "\n")
    assert code == 0, plain
    assert re.search(r"Packing [\d,]+ files .* \d+%", plain), plain


def test_quiet_is_silent_and_plain_off_a_terminal(user: User, place: Path) -> None:
    need("mksquashfs")
    quiet = ok(sqenv("create", place / "q", "six", "--python", BASE_PYTHON, "-q", user=user))
    assert quiet.stderr == ""
    plain = ok(sqenv("create", place / "p", "six", "--python", BASE_PYTHON, user=user)).stderr
    assert "\x1b[" not in plain and "\r" not in plain
    assert re.search(r"^✓ Resolving, downloading and installing packages \(1 resolved, .*1 installed; ", plain,
                     re.MULTILINE), plain  # fmt: skip
