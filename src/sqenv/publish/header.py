"""Read the settings block at the top of an install's launcher.

`launchers.render` writes `KEY=value` lines (shlex-quoted) after a shebang and
comment lines, then a blank line, then the engine code. This is the one
reader of that block: `sqenv doctor` uses it to see what an install's launches
really do (engine, layers, runtime settings), the version code to know which
layers new launches use. A value of the form `${ENV_VAR:-default}` is a setting
the user's environment may override; it is kept with its variable and default.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_ASSIGN = re.compile(r"(SQENV_\w+)=(.*)")
_OVERRIDABLE = re.compile(r"\$\{(\w+):-(.*)\}")


@dataclass(frozen=True)
class LauncherHeader:
    """The literal settings of a launcher, and those an environment variable may override."""

    values: dict[str, str] = field(default_factory=dict)
    overridable: dict[str, tuple[str, str]] = field(default_factory=dict)  # KEY -> (ENV_VAR, default)

    @property
    def layers(self) -> list[str]:
        return self.values.get("SQENV_LAYERS", "").split()

    def get(self, key: str, default: str | None = None) -> str | None:
        if key in self.values:
            return self.values[key]
        if key in self.overridable:
            return self.overridable[key][1]
        return default


def parse(text: str) -> LauncherHeader:
    """Parse the block: comment lines are skipped, the first other line that is no assignment ends it."""
    values: dict[str, str] = {}
    overridable: dict[str, tuple[str, str]] = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#"):
            continue
        m = _ASSIGN.fullmatch(line)
        if not m:
            break
        key, raw = m.groups()
        over = _OVERRIDABLE.fullmatch(raw)
        try:
            if over:
                words = shlex.split(over.group(2)) if over.group(2) else []
                overridable[key] = (over.group(1), words[0] if words else "")
                continue
            words = shlex.split(raw)
        except ValueError:
            continue
        literal = "$" not in raw or (raw.startswith("'") and raw.endswith("'"))
        if len(words) <= 1 and literal:
            values[key] = words[0] if words else ""
    return LauncherHeader(values, overridable)


def read(launcher: Path) -> LauncherHeader:
    """The header of the launcher file (OSError if it cannot be read)."""
    return parse(launcher.read_text())
