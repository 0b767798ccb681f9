# Each node: make the directory "$1" (ours, private), or fail if someone else owns it.
umask 077
mkdir -p "$1" 2>/dev/null
if [ -L "$1" ] || [ ! -d "$1" ] || [ ! -O "$1" ] || [ ! -w "$1" ]; then
    echo "${SLURMD_NODENAME:-$(hostname)}: cannot use $1 (missing, a symlink, not writable or not yours)" >&2
    exit 1
fi
