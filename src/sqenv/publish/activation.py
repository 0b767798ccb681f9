"""`PREFIX/bin/activate`, `activate.csh`, `activate.fish`: sourced like a venv's.

Users of venv, virtualenv, conda and Tykky type `source PREFIX/bin/activate` by
habit, and many batch scripts do. The scripts put `PREFIX/bin` first on PATH,
set what fits the install's kind (`VIRTUAL_ENV` for pip, `CONDA_PREFIX` and
friends for conda), prefix the prompt, and define `deactivate`, which restores
every variable exactly as it was (set or unset). They are the package's
template files (`publish/activate/*`) with this install's values filled in,
quoted for each shell. They are regular files, never `bin/NAME` launcher
symlinks (`launchers.programs` skips `activate*`), and only three.

The prefix is the one users see (the final PREFIX, not the hidden directory
a create publishes from); a moved install gets them rewritten by its next
update or rollback.
"""

from __future__ import annotations

import os
import shlex
from importlib import resources
from pathlib import Path

from sqenv.publish.modes import adopt

SHELLS = ("activate", "activate.csh", "activate.fish")
_TEMPLATES = {"activate": "activate.sh", "activate.csh": "activate.csh", "activate.fish": "activate.fish"}
SCRIPTS = tuple(_TEMPLATES)
"""The names of the activation scripts in `PREFIX/bin` (regular files beside the launcher symlinks)."""


def variables(prefix: Path, kind: str) -> list[tuple[str, str | None]]:
    """(NAME, value) pairs to set, None to unset, as the kind's own activation does."""
    name = f"({prefix.name}) "
    if kind == "conda":
        found: list[tuple[str, str | None]] = [
            ("CONDA_PREFIX", str(prefix)),
            ("CONDA_DEFAULT_ENV", str(prefix)),
            ("CONDA_PROMPT_MODIFIER", name),
        ]
    elif kind == "pip":
        found = [("VIRTUAL_ENV", str(prefix)), ("VIRTUAL_ENV_PROMPT", name)]
    else:  # a wrapped container or directory: only PATH and the prompt
        found = []
    return [*found, ("PYTHONHOME", None)]


def fish_quote(value: str) -> str:
    """Single quotes for fish, where `\\` and `'` are escapes inside them."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sh(prefix: Path, kind: str) -> dict[str, str]:
    lines = [
        f"_sqenv_set {name} {shlex.quote(value)}" if value is not None else f"_sqenv_unset {name}"
        for name, value in variables(prefix, kind)
    ]
    return {"@BIN@": shlex.quote(str(prefix / "bin")), "@PROMPT@": shlex.quote(f"({prefix.name}) "),
            "@VARIABLES@": "\n".join(lines)}  # fmt: skip


def _fish(prefix: Path, kind: str) -> dict[str, str]:
    lines = [
        f"_sqenv_set {name} {fish_quote(value)}" if value is not None else f"_sqenv_unset {name}"
        for name, value in variables(prefix, kind)
    ]
    return {"@BIN@": fish_quote(str(prefix / "bin")), "@PROMPT@": fish_quote(f"({prefix.name}) "),
            "@VARIABLES@": "\n".join(lines)}  # fmt: skip


def _csh(prefix: Path, kind: str) -> dict[str, str]:
    save, restore = [], []
    pairs: list[tuple[str, str | None]] = [("PATH", None), *variables(prefix, kind)]
    for name, value in pairs:
        # if/then/endif, never the one-line `if ( ... ) cmd`: csh expands cmd's variables before
        # it tests the condition ("VIRTUAL_ENV_PROMPT: Undefined variable" when it is unset)
        save += [f"if ( $?{name} ) then", f'    set _sqenv_old_{name}="${name}:q"', "endif"]
        if name == "PATH":
            save.append(f'setenv PATH {shlex.quote(str(prefix / "bin"))}:"$PATH:q"')
        elif value is None:
            save += [f"if ( $?{name} ) then", f"    unsetenv {name}", "endif"]
        else:
            save.append(f"setenv {name} {shlex.quote(value)}")
        restore.append(f"test $?_sqenv_old_{name} = 0 && unsetenv {name};")
        old = f"_sqenv_old_{name}"
        restore.append(f'test $?{old} != 0 && setenv {name} "${old}:q" && unset {old};')
    prompt = shlex.quote(f"({prefix.name}) ")
    save += [
        "if ( $?prompt && ! $?VIRTUAL_ENV_DISABLE_PROMPT ) then",
        '    set _sqenv_old_prompt="$prompt:q"',
        f'    set prompt={prompt}"$prompt:q"',
        "endif",
    ]
    return {"@SAVE@": "\n".join(save), "@RESTORE@": " ".join(restore)}


_FILL = {"activate": _sh, "activate.fish": _fish, "activate.csh": _csh}


def render(shell_file: str, prefix: Path, kind: str) -> str:
    """The text of one activation script for an install at `prefix` (as users see it)."""
    text = resources.files("sqenv.publish").joinpath("activate", _TEMPLATES[shell_file]).read_text()
    for key, value in _FILL[shell_file](prefix, kind).items():
        text = text.replace(key, value)
    return text


def write(install_dir: Path, prefix: Path, kind: str) -> None:
    """Write the three scripts into `install_dir/bin` for an install that users see at `prefix`."""
    bindir = install_dir / "bin"
    bindir.mkdir(exist_ok=True)
    if "\n" in str(prefix):
        return  # no shell can be given such a path in a sourced file; launchers still work
    for name in SHELLS:
        target = bindir / name
        tmp = bindir / f".{name}.new{os.getpid()}"
        tmp.write_text(render(name, prefix, kind))
        adopt(install_dir, tmp)
        os.replace(tmp, target)
