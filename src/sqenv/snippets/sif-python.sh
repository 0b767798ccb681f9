# Inside the base image: the major.minor version of the Python at "$1" (nothing if there is none).
test -x "$1" && exec "$1" -c "import sys; print('%d.%d' % sys.version_info[:2])"
