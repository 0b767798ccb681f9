"""sqenv: Python environments as one compressed image plus launchers, for HPC file systems."""

__version__ = "0.1.0"
