"""Run by the environment's own Python: [name, version] of each package pip or uv installed, as JSON."""

import importlib.metadata as m
import json

print(
    json.dumps(
        sorted(
            (d.metadata["Name"], d.version)
            for d in m.distributions()
            if d.metadata["Name"] and (d.read_text("INSTALLER") or "").strip() in ("uv", "pip")
        )
    )
)
