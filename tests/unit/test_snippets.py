"""Every shell script the package ships is shellcheck-clean, and no script hides in a Python string.

Scripts live as files (`sqenv.snippets`, `launch/`, `engines/`, `publish/activate/`) so that this one
test sees them all: it walks the installed package, not a list, so a new `.sh` file is checked too."""

from __future__ import annotations

import re
import signal
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from sqenv import snippets
from support import need, run

PACKAGE = Path(str(resources.files("sqenv")))
SHELL_FILES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.sh"))
# Engine fragments are pasted into launcher.sh, which sets the sqenv_* variables they read
# (the assembled launcher is shellchecked whole in test_launcher.py).
FRAGMENT_EXCLUDES = {"engines/": ["--exclude=SC2154"]}


def test_the_walk_finds_the_shipped_scripts() -> None:
    assert {"launch/launcher.sh", "engines/embedded.sh", "snippets/watchdog.sh"} <= set(SHELL_FILES)


@pytest.mark.parametrize("name", SHELL_FILES, ids=SHELL_FILES)
def test_shell_file_is_shellcheck_clean(name: str) -> None:
    need("shellcheck")
    extra = next((args for prefix, args in FRAGMENT_EXCLUDES.items() if name.startswith(prefix)), [])
    proc = run(["shellcheck", "-s", "sh", *extra, str(PACKAGE / name)])
    assert proc.returncode == 0, proc.stdout


def test_snippets_load_from_the_package() -> None:
    argv = snippets.sh("slurm-copy.sh", "a", "b")
    assert argv[:2] == ["/bin/sh", "-c"] and 'cp -f -- "$1" "$2"' in argv[2] and argv[3:] == ["sh", "a", "b"]


def test_no_shell_script_is_held_in_a_python_string() -> None:
    """A multi-line string that starts like a shell script belongs in a file under the package."""
    suspicious = re.compile(r'(?:r?"""|r?\'\'\')\s*(?:#!/bin/sh|set -e|while \[|for \w+ in "\$@")')
    found = [
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if suspicious.search(p.read_text(errors="replace"))
    ]
    assert found == []


def test_watchdog_kills_the_groups_still_listed_when_sqenv_goes_away() -> None:
    """The end of its input is sqenv dying: each group still listed is killed, a removed one is not.

    No clock: a group the watchdog fails to kill runs its `sleep` to the end and exits 0."""
    kept = subprocess.Popen(["sleep", "30"], start_new_session=True)
    gone = subprocess.Popen(["sleep", "1"], start_new_session=True)
    try:
        lines = f"+ {kept.pid}\n+ {gone.pid}\n- {gone.pid}\n"
        subprocess.run(["/bin/sh", "-c", snippets.text("watchdog.sh")], input=lines, text=True, check=True)
        assert kept.wait() == -signal.SIGKILL
        assert gone.wait() == 0
    finally:
        for proc in (kept, gone):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
