# Each node: in the job's stage directory "$1", remove the staged programs directory "$2" (when it is
# ours and no symlink) and the image copies named by the further arguments, then the directory once empty.
dir=$1
key=$2
shift 2
if [ -n "$key" ] && [ -d "$dir/$key" ] && [ ! -L "$dir/$key" ] && [ -O "$dir/$key" ]; then
    if [ -d "$dir/$key/bin" ] && [ ! -L "$dir/$key/bin" ]; then
        find "$dir/$key/bin" -mindepth 1 -maxdepth 1 -type l -exec rm -f {} +
        rmdir "$dir/$key/bin" 2>/dev/null
    fi
    rm -f "$dir/$key/launcher" "$dir/$key/sqenv-enter"
    rmdir "$dir/$key" 2>/dev/null
fi
for f in "$@"; do rm -f "$dir/$f"; done
rmdir "$dir" 2>/dev/null
true
