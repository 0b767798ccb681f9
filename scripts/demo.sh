#!/bin/sh
# The main job, end to end: build numpy/scipy/pandas/matplotlib into one
# image with launchers, then use it as if it were a normal venv.
#   sh scripts/demo.sh [PREFIX]     (default /tmp/sqenv-demo)
set -eu
cd "$(dirname "$0")/.."
prefix=${1:-/tmp/sqenv-demo}
sqenv=$(pwd)/.venv/bin/sqenv
base=$(command -v python3)
[ -x /usr/bin/python3 ] && base=/usr/bin/python3
set -x
"$sqenv" create "$prefix" -r examples/requirements.txt --python "$base" --force
export PATH="$prefix/bin:$PATH"
python examples/analysis.py
pip list 2>/dev/null | grep -iE '^(numpy|scipy|pandas|matplotlib) '
"$sqenv" info "$prefix" | head -8
{ set +x; } 2>/dev/null
echo "files on disk in $prefix: $(find "$prefix" -mindepth 1 | wc -l)"
