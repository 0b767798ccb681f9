"""Run by sqenv in the build namespace: the activation inputs of the conda environment at argv[1], as JSON."""

import glob
import json
import os
import subprocess
import sys

root = sys.argv[1]


def read(path):
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def files(sub, suffix):
    d = os.path.join(root, sub)
    return sorted(n for n in os.listdir(d) if n.endswith(suffix)) if os.path.isdir(d) else []


print(
    json.dumps(
        {
            "env_vars": {
                n: read(os.path.join(root, "etc/conda/env_vars.d", n)) for n in files("etc/conda/env_vars.d", ".json")
            },
            "scripts": {
                n: subprocess.run(
                    ["/bin/sh", "-n", os.path.join(root, "etc/conda/activate.d", n)], capture_output=True
                ).returncode
                == 0
                for n in files("etc/conda/activate.d", ".sh")
            },
            "state": read(os.path.join(root, "conda-meta/state")),
            "activate": read(os.path.join(root, sys.argv[2])),
            "unmarked": [
                os.path.relpath(os.path.dirname(p), root)
                for p in glob.glob(root + "/lib/python3*/os.py")
                if not os.path.exists(os.path.join(os.path.dirname(p), "EXTERNALLY-MANAGED"))
            ],
        }
    )
)
