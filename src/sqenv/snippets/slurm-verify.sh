# Each node: in directory "$1", check "SHA TMP FINAL" triples, then rename TMP -> FINAL; one line per node.
node=${SLURMD_NODENAME:-$(hostname)}; dir=$1; shift
while [ "$#" -ge 3 ]; do
    if [ "$(sha256sum < "$dir/$2" | cut -d' ' -f1)" != "$1" ]; then
        echo "$node: $3: checksum mismatch" >&2; rm -f "$dir/$2"; exit 1
    fi
    mv -f "$dir/$2" "$dir/$3" || exit 1
    shift 3
done
echo "$node: ok"
