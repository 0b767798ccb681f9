# Copy "SOURCE DEST" pairs, making DEST's directory (writes through the overlay land in the upper directory).
while [ $# -gt 0 ]; do mkdir -p "${2%/*}" && cp "$1" "$2" || exit 1; shift 2; done
