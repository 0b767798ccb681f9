"""What the tools say about how far they got, as one short status line.

uv is run with `-v`: its debug lines name each package as the resolver selects
it and each file it starts to fetch, and its summary lines give the counts
(`Resolved 23 packages`, `Prepared 5 packages`, `Installed 23 packages`); large
downloads are announced with their size (`Downloading torch (800.1MiB)`).
mksquashfs draws its progress bar even into a pipe (`[===-] 1234/5000  24%`,
frames separated by carriage returns). Both parsers only read lines.
"""

from __future__ import annotations

import re

_SELECT = re.compile(r"^DEBUG Selecting: (\S+?)==")
_FETCH = re.compile(r"^DEBUG Sending (?:fresh )?GET request for: \S+\.(?:whl|tar\.gz|zip|tar\.bz2)(?:#\S*)?$")
_COUNT = re.compile(r"^(Resolved|Prepared|Installed|Uninstalled|Audited|Checked) (\d+) packages?\b")
_COMPILED = re.compile(r"^Bytecode compiled (\d+) files?")
_BIG = re.compile(r"^Downloading (\S+) \(([\d.]+\s*\w+)\)")
_BIG_DONE = re.compile(r"^\s*Downloaded (\S+)")
_BUILD = re.compile(r"^\s*Building (\S+)")
_BUILT = re.compile(r"^\s*Built (\S+)")


def built_from_source(output: str) -> list[str]:
    """Packages uv built from an sdist or a source tree (`Built NAME==1.0`, `Built NAME @ file://...`),
    from the output of `uv pip install -v`, in order, once each."""
    names: list[str] = []
    for line in output.splitlines():
        m = _BUILT.match(line)
        if m:
            name = re.split(r"==| @ ", m.group(1))[0]
            if name not in names:
                names.append(name)
    return names


class UvProgress:
    """Counts of packages resolved, downloaded and installed, from `uv pip install -v`."""

    def __init__(self) -> None:
        self.selected: set[str] = set()
        self.counts: dict[str, int] = {}
        self.fetches = 0
        self.big: dict[str, str] = {}
        self.building: list[str] = []
        self.compiled: int | None = None

    def feed(self, line: str) -> bool:
        line = line.rstrip("\n")
        if m := _SELECT.match(line):
            self.selected.add(m.group(1))
        elif _FETCH.match(line):
            self.fetches += 1
        elif m := _COUNT.match(line):
            self.counts[m.group(1)] = int(m.group(2))
        elif m := _COMPILED.match(line):
            self.compiled = int(m.group(1))
        elif m := _BIG.match(line):
            self.big[m.group(1)] = m.group(2)
        elif m := _BIG_DONE.match(line):
            self.big.pop(m.group(1), None)
        elif m := _BUILD.match(line):
            self.building.append(m.group(1))
        elif (m := _BUILT.match(line)) and m.group(1) in self.building:
            self.building.remove(m.group(1))
        return False

    def status(self) -> str:
        c = self.counts
        if "Resolved" not in c:
            n = len(self.selected)
            return f"resolving: {n} package{'s' if n != 1 else ''} selected" if n else "resolving"
        parts = [f"{c['Resolved']} resolved"]
        if "Prepared" in c:
            parts.append(f"{c['Prepared']} downloaded")
        elif self.fetches:
            parts.append(f"downloading {self.fetches}")
        parts += [f"{name} ({size})" for name, size in self.big.items()]
        parts += [f"building {name}" for name in self.building]
        if "Installed" in c:
            parts.append(f"{c['Installed']} installed")
            parts += ["compiling bytecode"] if self.compiled is None else []
        elif "Prepared" in c:
            parts.append("installing")
        return " · ".join(parts)

    def summary(self) -> str:
        c = self.counts
        names = (("Resolved", "resolved"), ("Prepared", "downloaded"), ("Uninstalled", "removed"),
                 ("Installed", "installed"))  # fmt: skip
        words = [f"{c[k]} {w}" for k, w in names if k in c]
        return ", ".join(words)


_FRAME = re.compile(r"^\s*\[[=\-\\|/ ]*\]\s+(\d+)/(\d+)\s+(\d+)%\s*$")


class PackProgress:
    """mksquashfs's percentage, from its progress bar."""

    def __init__(self) -> None:
        self.percent: int | None = None

    def feed(self, line: str) -> bool:
        m = _FRAME.match(line.rstrip("\n"))
        if m:
            self.percent = int(m.group(3))
        return m is not None

    def status(self) -> str:
        return f"{self.percent}%" if self.percent is not None else ""

    def summary(self) -> str:
        return ""
