# Each node: in the job's stage directory "$1" (made and checked by slurm-mkdir.sh), make "$2", the
# install's node-local programs: sqenv-enter copied from "$3" (sha256 "$4"), the launcher written from
# "$5" (sha256 "$6"), then bin/NAME -> ../launcher for each further NAME; one line per node.
umask 077
node=${SLURMD_NODENAME:-$(hostname)}
dir=$1/$2
mkdir -p "$dir/bin" 2>/dev/null
for d in "$dir" "$dir/bin"; do
    if [ -L "$d" ] || [ ! -d "$d" ] || [ ! -O "$d" ]; then
        echo "$node: cannot use $d (missing, a symlink or not yours)" >&2
        exit 1
    fi
done
tmp=.tmp-$$
cp -f -- "$3" "$dir/sqenv-enter$tmp" || exit 1
printf '%s' "$5" >"$dir/launcher$tmp" || exit 1
for pair in "sqenv-enter $4" "launcher $6"; do
    f=${pair% *}
    if [ "$(sha256sum <"$dir/$f$tmp" | cut -d' ' -f1)" != "${pair#* }" ]; then
        echo "$node: $f: checksum mismatch" >&2
        rm -f "$dir/sqenv-enter$tmp" "$dir/launcher$tmp"
        exit 1
    fi
    chmod 700 "$dir/$f$tmp" && mv -f "$dir/$f$tmp" "$dir/$f" || exit 1
done
shift 6
for name in "$@"; do
    ln -sfn ../launcher "$dir/bin/$name" || exit 1
done
echo "$node: ok"
