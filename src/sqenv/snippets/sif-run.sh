#!/bin/sh
# sqenv: `apptainer run IMAGE ARGS` runs the environment's python with ARGS (a shell if it has none)
if [ -x "$SQENV_PREFIX/bin/python" ]; then exec "$SQENV_PREFIX/bin/python" "$@"; fi
if [ "$#" -eq 0 ]; then exec /bin/sh; fi
exec "$@"
