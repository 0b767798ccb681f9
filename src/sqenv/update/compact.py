"""`sqenv compact`: squash the current version's layers into one world-readable image, as a new version.

Update does the same past `MAX_LAYERS` (`sqenv.update.apply`); here the user asks for it.
"""

from __future__ import annotations

from pathlib import Path

from sqenv.publish import versions
from sqenv.ui import UI
from sqenv.update.session import Change, Options, pack_and_publish, readable, session


def compact(prefix: Path, ui: UI, options: Options | None = None) -> dict | None:
    """Squash the current version's layers into one (world-readable) image, as a new version."""
    options = options or Options()
    with session(prefix, ui, options, Change()) as (install, data, ctx):
        base = versions.by_number(data, data["current"])
        if len(base["layers"]) == 1 and readable(install, base):
            ui.info(f"{install.prefix} is one layer already; nothing to compact")
            return None
        summary = f"{len(base['layers'])} layers into one" if len(base["layers"]) > 1 else "made readable for layers"
        record = versions.new_record(base, "compact", inputs={}, summary=summary)
        record = pack_and_publish(install, data, record, ctx, whole=True)
    ui.info(f"Compacted {install.prefix} into one layer as version {record['number']}")
    return record
