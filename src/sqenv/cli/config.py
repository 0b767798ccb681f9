"""`sqenv config [KEY] [--json]`: the effective settings and where each comes from."""

from __future__ import annotations

import argparse
import json

from sqenv.config import KEYS, load_config
from sqenv.errors import UsageError
from sqenv.ui import UI


def add_parsers(sub: argparse._SubParsersAction, add_output_options) -> None:
    p = sub.add_parser(
        "config",
        help="show the effective configuration and its sources",
        description="Show each setting's effective value and where it came from (system, user or "
        "SQENV_CONFIG file, environment variable, default). Forced values are marked.",
    )
    p.add_argument("key", nargs="?", metavar="KEY", help="print only this key's value")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(execute=execute)


def show(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


def execute(args: argparse.Namespace, ui: UI) -> int:
    config = load_config()
    if args.key is not None and args.key not in KEYS:
        raise UsageError(f"unknown key `{args.key}`", "known keys: " + ", ".join(KEYS))
    keys = [args.key] if args.key else list(KEYS)
    if args.json:
        settings = {k: vars(config.setting(k)) for k in keys}
        files = [{"layer": layer, "path": path, "read": read} for layer, path, read in config.files]
        print(json.dumps({"settings": settings, "files": files}, indent=1))
        return 0
    if args.key:
        value = config.setting(args.key).value
        print(":".join(value) if isinstance(value, list) else "" if value is None else value)
        return 0
    width = max(len(k) for k in keys)
    for key in keys:
        setting = config.setting(key)
        mark = "forced by " if setting.forced else ""
        print(f"{key:<{width}} = {show(setting.value):<24} # {mark}{setting.source}")
    print()
    for layer, path, read in config.files:
        print(f"# {layer}: {path}{'' if read else ' (not present)'}")
    return 0
