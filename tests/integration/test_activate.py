"""`source PREFIX/bin/activate` (sh, bash, zsh, dash; csh/tcsh; fish) works like a venv's, and the
hints sqenv prints can be pasted as they are, also for paths with spaces, quotes and brackets.

The install lives at a path with a space, a quote and rich markup, under parents that did not
exist (made by `sqenv create` like `mkdir -p`), built by the ordinary test user."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from support import BASE_PYTHON, need, ok, run, sqenv

ODD = "new parent [/x]/it's my env"


@pytest.fixture(scope="module")
def odd_env(user, shared_dir: Path) -> tuple[Path, str]:
    """(prefix, create's stderr) of a six install at an awkward path whose parent did not exist."""
    need("mksquashfs")
    prefix = shared_dir / ODD
    assert not prefix.parent.exists()
    proc = ok(sqenv("create", prefix, "six", "--python", BASE_PYTHON, user=user))
    return prefix, proc.stderr


def test_create_made_the_parents(odd_env) -> None:
    prefix, _ = odd_env
    assert (prefix / "launcher").is_file() and prefix.parent.owner() == "sqenvuser"


def test_the_printed_hints_work_when_pasted(odd_env, user) -> None:
    prefix, stderr = odd_env
    lines = [line.split(":", 1)[1].strip() for line in stderr.splitlines() if re.match(r"\s*(Use it with|or):", line)]
    assert len(lines) == 2, stderr
    for line in lines:
        script = f'{line}\npython -c "import six, sys; print(sys.prefix)"'
        assert ok(run(["sh", "-c", script], user=user)).stdout.strip() == str(prefix)


SH = """
PS1='$ '
VIRTUAL_ENV=was-set
before=$PATH
. {activate}
python -c 'import six, sys; print("PREFIX=" + sys.prefix)'
echo "VIRTUAL_ENV=$VIRTUAL_ENV"
echo "PS1=$PS1"
deactivate
[ "$PATH" = "$before" ] && echo PATH-RESTORED
echo "AFTER=$VIRTUAL_ENV"
echo "PS1AFTER=$PS1"
type deactivate >/dev/null 2>&1 || echo DEACTIVATE-GONE
"""

FISH = """
set -gx VIRTUAL_ENV was-set
set before $PATH
source {activate}.fish
python -c 'import six, sys; print("PREFIX=" + sys.prefix)'
echo "VIRTUAL_ENV=$VIRTUAL_ENV"
deactivate
test (string join : $PATH) = (string join : $before); and echo PATH-RESTORED
echo "AFTER=$VIRTUAL_ENV"
functions -q deactivate; or echo DEACTIVATE-GONE
"""

CSH = """
setenv VIRTUAL_ENV was-set
set before="$PATH:q"
source {activate}.csh
python -c 'import six, sys; print("PREFIX=" + sys.prefix)'
echo "VIRTUAL_ENV=$VIRTUAL_ENV"
deactivate
if ( "$PATH:q" == "$before:q" ) echo PATH-RESTORED
echo "AFTER=$VIRTUAL_ENV"
alias deactivate | grep -q . || echo DEACTIVATE-GONE
"""


def csh_quote(path: str) -> str:
    return "'" + path.replace("'", "'\"'\"'") + "'"


@pytest.mark.parametrize("shell", ["bash", "zsh", "dash", "fish", "tcsh"])
def test_activate_then_deactivate_restores_everything(odd_env, user, shell: str) -> None:
    need(shell)
    prefix, _ = odd_env
    activate = str(prefix / "bin" / "activate")
    if shell == "fish":
        script = FISH.format(activate="'" + activate.replace("\\", "\\\\").replace("'", "\\'") + "'")
    elif shell == "tcsh":
        script = CSH.format(activate=csh_quote(activate))
    else:
        script = SH.format(activate=csh_quote(activate))
    proc = ok(run([shutil.which(shell), "-c", script], user=user))
    out = proc.stdout
    assert f"PREFIX={prefix}\n" in out, out + proc.stderr
    assert f"VIRTUAL_ENV={prefix}\n" in out
    assert "PATH-RESTORED" in out and "AFTER=was-set" in out and "DEACTIVATE-GONE" in out, out + proc.stderr
    if shell not in ("fish", "tcsh"):
        assert "PS1=(it's my env) $ \n" in out and "PS1AFTER=$ \n" in out


def test_activate_is_not_a_program(odd_env) -> None:
    prefix, _ = odd_env
    for name in ("activate", "activate.csh", "activate.fish"):
        entry = prefix / "bin" / name
        assert entry.is_file() and not entry.is_symlink()


def test_sh_activate_is_shellcheck_clean(odd_env) -> None:
    need("shellcheck")
    prefix, _ = odd_env
    for dialect in ("sh", "bash", "dash"):
        ok(run(["shellcheck", "-s", dialect, str(prefix / "bin" / "activate")]))


def test_parent_not_writable_is_one_clear_line(user, tmp_path: Path) -> None:
    proc = sqenv("create", "/opt/sqenv-not-here/envs/x", "six", "--python", BASE_PYTHON, user=user)
    assert proc.returncode == 3
    assert "error: cannot create `/opt/sqenv-not-here/envs/x`: `/opt` is not writable for you" in proc.stderr
    assert "your project or home directory" in proc.stderr and "Traceback" not in proc.stderr
    assert not Path("/opt/sqenv-not-here").exists()
