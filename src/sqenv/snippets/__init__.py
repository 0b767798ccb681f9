"""Scripts sqenv hands to a shell or to another Python (on Slurm nodes, inside images, in the build
namespace), kept as real files so they can be read, linted and shellchecked
(tests/unit/test_snippets.py) rather than hidden in string constants."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def text(name: str) -> str:
    """The text of the script `name` shipped in this package."""
    return resources.files(__package__).joinpath(name).read_text()


def sh(name: str, *args: str) -> list[str]:
    """The argv that runs the shell script `name` with `args` as its "$1"…"""
    return ["/bin/sh", "-c", text(name), "sh", *args]
