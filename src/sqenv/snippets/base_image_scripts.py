# Run by the layer's Python inside the base image: the image's console scripts written for its
# Python (torchrun, f2py...) get a copy in the layer's bin/ that starts with the layer's Python, so
# they see the layer's packages too. argv: the image's Python, the layer's bin/, its python.
import os
import sys

base, target, python = sys.argv[1:4]
real = os.path.realpath(base)
made = []
for entry in os.scandir(os.path.dirname(base)):
    dest = os.path.join(target, entry.name)
    if not entry.is_file() or not os.access(entry.path, os.X_OK) or os.path.lexists(dest):
        continue
    try:
        with open(entry.path, "rb") as fh:
            first = fh.readline(512)
            if not first.startswith(b"#!"):
                continue
            words = first[2:].split()
            if not words or os.path.realpath(words[0].decode(errors="replace")) != real or len(words) > 1:
                continue
            body = fh.read()
    except OSError:
        continue
    with open(dest, "wb") as out:
        out.write(b"#!" + python.encode() + b"\n" + body)
    os.chmod(dest, 0o755)
    made.append(entry.name)
print(" ".join(sorted(made)))
