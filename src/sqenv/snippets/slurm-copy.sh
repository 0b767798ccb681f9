# Each node: copy "$1" from the shared file system to "$2" (the fallback when sbcast fails).
cp -f -- "$1" "$2"
