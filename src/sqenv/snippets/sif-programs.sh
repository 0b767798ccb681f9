# Inside a container: "DIR<TAB>NAME" for each executable in (or named by) each argument; "<TAB>PATH" for none.
for p in "$@"; do
    if [ -d "$p" ]; then
        for f in "$p"/*; do
            [ -f "$f" ] && [ -x "$f" ] && printf '%s\t%s\n' "$p" "${f##*/}"
        done
    elif [ -f "$p" ] && [ -x "$p" ]; then
        printf '%s\t%s\n' "${p%/*}" "${p##*/}"
    else
        printf '\t%s\n' "$p"
    fi
done
