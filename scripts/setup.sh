#!/bin/sh
# Machine set-up, as root, on a fresh Debian 12/13: the system tools sqenv
# uses, then sqenv itself in ./.venv.   sh scripts/setup.sh [--test]
#   --test  also what the test suite starts for real: Slurm, MPI, debootstrap
#           (for Apptainer), strace, shellcheck, the shells and module systems
#           activation is tested with (zsh fish tcsh, Lmod; environment-modules,
#           which Debian makes conflict with lmod, is unpacked under /opt/sqenv-test).
set -eu
cd "$(dirname "$0")/.."
# fuse3: fusermount3 (mounts for ordinary users); squashfs-tools: mksquashfs (builds);
# the -dev packages: static libraries of the sqenv-enter helper, compiled when sqenv is installed
runtime="squashfs-tools fuse3 util-linux python3 python3-venv gcc libc6-dev libfuse3-dev libsquashfuse-dev
 libzstd-dev liblz4-dev liblzo2-dev liblzma-dev zlib1g-dev"
extra=""
[ "${1-}" = --test ] && extra="slurm-wlm munge openmpi-bin libopenmpi-dev debootstrap bubblewrap strace shellcheck zsh fish tcsh lmod tcl8.6"
missing=""
for pkg in $runtime $extra; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ "${1-}" = --test ] && [ ! -f /opt/sqenv-test/environment-modules/usr/lib/modulecmd.tcl ]; then
    # Debian's environment-modules conflicts with lmod: unpack it (no install
    # scripts needed: tests run its modulecmd.tcl with tclsh, as its init does).
    deb=$(mktemp -d)
    (cd "$deb" && chown _apt "$deb" 2>/dev/null; apt-get download -qq environment-modules)
    mkdir -p /opt/sqenv-test
    rm -rf /opt/sqenv-test/environment-modules
    dpkg-deb -x "$deb"/environment-modules_*.deb /opt/sqenv-test/environment-modules
    rm -rf "$deb"
fi
# FUSE for ordinary users (0600 on some VMs; 0666 on ordinary distributions).
[ ! -e /dev/fuse ] || chmod 666 /dev/fuse
# sqenv itself, in a venv of the first python3 on PATH (Debian's pip is PEP 668-managed).
if [ ! -x .venv/bin/sqenv ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
if [ "${1-}" = --test ]; then
    .venv/bin/pip install -q -e '.[test]'
else
    .venv/bin/pip install -q -e .
fi
echo "sqenv $(.venv/bin/sqenv --version | cut -d' ' -f2) is ready: $(pwd)/.venv/bin/sqenv" >&2
