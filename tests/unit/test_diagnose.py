"""The classification of tool failures, over real captured outputs (fast, in-process).

tests/data/uv/*.txt are what uv 0.13 printed (first line: `# exit N`, the status Popen saw) against
the local indexes of tests/index_server.py, real PyPI, and (oom.txt) uv run under `ulimit -v 300000`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sqenv.tools import diagnose

DATA = Path(__file__).resolve().parent.parent / "data" / "uv"


def captured(name: str) -> tuple[str, int]:
    head, _, body = (DATA / f"{name}.txt").read_text().partition("\n")
    return body, int(head.removeprefix("# exit "))


@pytest.mark.parametrize(
    ("name", "kind", "headline"),
    [
        ("refused", "network", "connection refused"),
        ("reset", "network", "was reset"),
        ("dns", "dns", "cannot resolve the host name of `https://nonexistent.invalid`"),
        ("proxy", "proxy", "through the proxy"),
        ("tls", "tls", "is not trusted (UnknownIssuer)"),
        ("url404", "dns", "nonexistent.invalid"),
        ("platform", "no-distribution", "`winonly==1.0` has no wheel for this Python (cp311)"),
        ("python", "no-distribution", "`newpy==1.0` has no wheel for this Python (cp311)"),
        ("tf", "no-distribution", "`tensorflow==2.5.0` has no wheel for this Python (cp311)"),
        ("arm", "no-distribution", "has no wheel for this machine's platform (manylinux_2_36_x86_64)"),
        ("build", "build", "`needsheader==1.0` failed to build from source: the C header `sqenv_missing_header.h`"),
        ("notfound", "not-found", "package `nosuchpkg` was not found"),
        ("noversion", "no-version", "no version of `good` matches"),
        ("conflict", "conflict", "the requirements conflict with each other"),
        ("oom", "memory", "ran out of memory"),
        ("threads", "memory", "ran out of memory (or of processes): it could not start a thread"),
    ],
)
def test_uv_failures_are_classified_by_cause(name: str, kind: str, headline: str) -> None:
    output, code = captured(name)
    diag = diagnose.classify_uv(output, code)
    assert diag.kind == kind, diag
    assert headline in diag.headline
    assert diag.hint


def test_the_explanation_is_whole_and_starts_at_uvs_error() -> None:
    output, code = captured("conflict")
    diag = diagnose.classify_uv(output, code)
    assert diag.explanation[0].startswith("error: No solution found")
    text = "\n".join(diag.explanation)
    assert "Because requests==2.31.0 depends on urllib3" in text
    assert text.rstrip().endswith("your requirements are unsatisfiable.")
    build = diagnose.classify_uv(*captured("build"))
    assert any("hint: This error likely indicates" in line for line in build.explanation)


def test_uv_debug_lines_are_not_part_of_the_explanation() -> None:
    output, code = captured("refused")
    noisy = "DEBUG uv 0.13.9\nDEBUG Sending fresh GET request for: x\n" + output
    assert not any(line.startswith("DEBUG") for line in diagnose.classify_uv(noisy, code).explanation)


def test_long_explanations_say_how_many_lines_are_in_the_log(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(100)]
    shown = diagnose.details(lines, tmp_path / "x.log", limit=40).splitlines()
    assert shown[39] == "  | line 39"
    assert shown[40] == f"  … 60 more lines in {tmp_path / 'x.log'}"
    assert shown[-1] == f"full log: {tmp_path / 'x.log'}"
    whole = diagnose.details(lines[:10], "L").splitlines()
    assert len(whole) == 11 and "more line" not in "\n".join(whole)


def test_signals_and_scripts() -> None:
    assert diagnose.killed("uv", -9, "").kind == "signal"
    assert "SIGKILL" in diagnose.killed("uv", -9, "").headline
    assert "SIGSEGV" in diagnose.classify_generic("", -11, "x").headline
    script = diagnose.classify_script("a\nb\n", 137, "post-install script `s.sh`")
    assert "killed by SIGKILL" in script.headline and script.explanation == ["a", "b"]
    plain = diagnose.classify_script("oops\n", 3, "post-install script `s.sh`")
    assert plain.headline == "post-install script `s.sh` failed (exit code 3)"


def test_missing_compiler_is_named() -> None:
    text = (
        "error: Failed to build `pkg==1`\n  cause: x\n         error: command 'gcc' failed: No such file or directory\n"
    )
    diag = diagnose.classify_uv(text, 1)
    assert diag.headline == "`pkg==1` failed to build from source: the compiler `gcc` is missing"


def test_mksquashfs() -> None:
    out = "Parallel mksquashfs: Using 2 processors\nWrite failed because No space left on device\nFATAL ERROR: x\n"
    assert diagnose.classify_mksquashfs(out, 1).kind == "disk"
    assert diagnose.classify_mksquashfs("FATAL ERROR: Failed to read x\n", 1).headline.endswith("Failed to read x")


def test_a_full_log_file_system_names_the_log(tmp_path: Path) -> None:
    """The log lives in sqenv's cache directory, maybe on another file system than the build:
    when that one is full, the message names the log, not the build directory (/dev/full: ENOSPC)."""
    from sqenv.errors import BuildError
    from sqenv.tools.run import run
    from sqenv.ui import UI

    log = tmp_path / "create.log"
    log.symlink_to("/dev/full")
    with pytest.raises(BuildError, match=r"ran out of space writing sqenv's log `.*create\.log`"):
        run(UI(), ["echo", "hello"], log=log, error=BuildError, what="echo")
