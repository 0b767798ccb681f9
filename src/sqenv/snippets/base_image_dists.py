# Run by the base image's Python: the distributions it sees, as JSON [[name, version], ...].
import importlib.metadata as m
import json

seen = {}
for dist in m.distributions():
    name = dist.metadata["Name"]
    if name and name.lower() not in seen:  # the first on sys.path wins, as for imports
        seen[name.lower()] = (name, dist.version)
print(json.dumps(sorted(seen.values())))
