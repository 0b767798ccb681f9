# The programs of the merged bin/ under "$1" (the mount path): "L name" for links, "X name" for executables.
cd "$1/bin" 2>/dev/null || exit 0
for f in * .[!.]*; do
    if [ -L "$f" ]; then echo "L $f"
    elif [ -f "$f" ] && [ -x "$f" ]; then echo "X $f"; fi
done
