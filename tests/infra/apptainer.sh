#!/usr/bin/env bash
# A real Apptainer for sqenv's tests on Debian 12, which packages none.
#
# Debian sid's apptainer (it needs glibc >= 2.38) is debootstrapped into ROOT, and a shim on PATH
# runs it from there through bubblewrap. Apptainer only works this way for a NON-root caller: as
# root it fails on this VM (a withheld capability), in a plain chroot it refuses.
#
#   apptainer.sh root [HOSTDIR...]     build ROOT once (cached; as root), refresh its /etc files,
#                                      make mount points in it for the shim's binds and HOSTDIRs
#   apptainer.sh shim DIR              write DIR/apptainer (POSIX sh) and DIR/singularity
#   apptainer.sh adduser USER...       copy host USERs' passwd/group entries into ROOT (as root)
#   apptainer.sh base-sandbox          build the base image's tree, ROOT/opt/sqenv-base (as root)
#   apptainer.sh base-sandbox vendor  the vendor stand-in's tree, ROOT/opt/sqenv-vendor: python3-numpy
#                                      and python3-pip too, and a Python copied under /opt/vendor
#   apptainer.sh base-sif OUT.sif [USER]
#                                      build the base SIF from that tree; as root it is built as
#                                      USER (default $SQENV_APPTAINER_USER) and OUT is theirs
#   apptainer.sh vendor-sif OUT.sif [USER]   the same for the vendor stand-in
#
# The base image is a minbase Debian 12 (bookworm) with python3: the same glibc (2.36) and the
# same Python 3.11 as the host's /usr/bin/python3, so a venv made on the host with that Python,
# or a self-contained conda env, runs inside it unchanged. No registry is reachable here, so it
# is built from a local directory (`apptainer build OUT.sif /opt/sqenv-base` inside the shim),
# compressed with zstd -3 (5 s instead of 19 s for gzip; the root's squashfuse reads it).
#
# Environment:
#   SQENV_APPTAINER_ROOT    the root (default /var/cache/sqenv-test/apptainer-root)
#   SQENV_APPTAINER_MIRROR  Debian mirror (default: the one apt uses on this machine)
#   SQENV_APPTAINER_SUITE   suite that has apptainer (default sid)
#   SQENV_APPTAINER_BINDS   extra host dirs, colon-separated: `root` makes mount points for them
#                           and the shim binds them (read at the shim's run time)
#   SQENV_APPTAINER_USER    user for `base-sif` run as root
#   SQENV_APPTAINER_SHIM_PIDNS=1  the shim runs apptainer in a pid namespace: killing the shim's
#                           pid then kills all of it (SIGKILL); by default it lives on. Signal
#                           the process group instead where you can: the program gets it.
set -euo pipefail

# Bump when a recipe changes: cached trees with another stamp are rebuilt.
readonly ROOT_RECIPE=2 BASE_RECIPE=1 VENDOR_RECIPE=2
readonly ROOT=${SQENV_APPTAINER_ROOT:-/var/cache/sqenv-test/apptainer-root}
# No stable suite has apptainer: checked on 2026-12-01 against deb.debian.org, trixie (13),
# trixie-backports and bookworm-backports have no `apptainer` package (apt-cache policy: none).
# So sid, the fallback issue 11 allows; switch to the first stable suite that ships it.
readonly SUITE=${SQENV_APPTAINER_SUITE:-sid}
# gocryptfs: upstream's packages bundle it; without it every `apptainer exec` logs an INFO line
readonly ROOT_PACKAGES=apptainer,squashfuse,fuse2fs,squashfs-tools,gocryptfs
readonly BASE_SUITE=bookworm
readonly BASE_PACKAGES=python3
readonly BASE_IN_ROOT=/opt/sqenv-base
# The stand-in for a vendor PyTorch/ROCm image: numpy plays torch (issue 13). Its Python is at
# /usr/bin/python3 and, copied with numpy, at /opt/vendor/bin/python3 (off the PATH).
readonly VENDOR_PACKAGES=python3,python3-numpy,python3-pip
readonly VENDOR_IN_ROOT=/opt/sqenv-vendor
# Host directories the shim binds (when they exist on the host): where tests keep their files,
# and this checkout, wherever it is (CI clones outside them): sqenv binds its own uv from .venv.
CHECKOUT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
readonly CHECKOUT
readonly DEFAULT_BINDS=/tmp:/var/tmp:/home:/work:$CHECKOUT
readonly CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
PROG=${0##*/}

die() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    if [[ $# -gt 1 ]]; then printf '\nhint: %s\n' "$2" >&2; fi
    exit 1
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

need_root() {
    [[ $EUID -eq 0 ]] || die "\`$PROG $1\` must run as root" \
        "run it once as root (e.g. in CI setup); the shim itself is for non-root users"
}

recipe_of() {  # root|base|vendor
    case $1 in
        root) echo "$ROOT_RECIPE" ;;
        vendor) echo "$VENDOR_RECIPE" ;;
        *) echo "$BASE_RECIPE" ;;
    esac
}

stamp_ok() {  # DIR root|base SUITE: is DIR a complete tree of the current recipe?
    local recipe
    recipe=$(recipe_of "$2")
    [[ -f $1/.sqenv-$2 && $(<"$1/.sqenv-$2") == "recipe=$recipe $3" ]]
}

# --- host side --------------------------------------------------------------------------------

debian_mirror() {
    if [[ -n ${SQENV_APPTAINER_MIRROR:-} ]]; then
        printf '%s\n' "$SQENV_APPTAINER_MIRROR"
        return
    fi
    local files=() uri
    shopt -s nullglob
    files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    # The first archive (…/debian, not …/debian-security) apt is configured with.
    uri=$(grep -vh '^[[:space:]]*#' "${files[@]}" 2>/dev/null \
        | grep -oE '(https?|ftp)://[^[:space:]]+' | grep -E '/debian/?$' | head -n1 || true)
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

ensure_host_tools() {
    local missing=() pair
    for pair in debootstrap:debootstrap bwrap:bubblewrap mksquashfs:squashfs-tools \
        flock:util-linux setpriv:util-linux; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    }
}

lock() {  # serialise builders and writers of ROOT (concurrent test sessions, xdist workers)
    [[ -z ${LOCK_FD:-} ]] || return 0  # held already (flock on a 2nd open would deadlock)
    local parent
    parent=$(dirname "$ROOT")
    mkdir -p "$parent"
    exec {LOCK_FD}>"$parent/.$(basename "$ROOT").lock"
    flock "$LOCK_FD"
}

unlock() {
    [[ -n ${LOCK_FD:-} ]] || return 0
    exec {LOCK_FD}>&-
    LOCK_FD=
}

remove_tree() {  # a tree a killed debootstrap may have left mounts in (proc, sys, dev binds)
    local dir=$1 mnt
    [[ -e $dir ]] || return 0
    # mount points under DIR, deepest first (mountinfo escapes blanks as \040)
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    rm -rf --one-file-system "$dir"
}

debootstrap_into() {  # SUITE TARGET PACKAGES
    local log_file=$2.debootstrap.log
    if ! debootstrap --variant=minbase --include="$3" "$1" "$2" "$(debian_mirror)" \
        >"$log_file" 2>&1; then
        tail -n 25 "$log_file" >&2
        die "debootstrap of Debian $1 failed (log: $log_file)" \
            "check that \`$(debian_mirror)\` is reachable, or set SQENV_APPTAINER_MIRROR"
    fi
    rm -f "$log_file"
}

remove_special_files() {  # device nodes etc. make a non-root `apptainer build` fail (EPERM)
    find "$1" -xdev \( -type b -o -type c -o -type p -o -type s \) -delete
}

refresh_root() {  # cheap, run every time: /etc files from the host, mount points for the binds
    local dir extra=()
    cp /etc/hosts "$ROOT/etc/hosts"
    if [[ -f /etc/resolv.conf ]]; then cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"; fi
    if [[ -f $CA_BUNDLE ]]; then
        mkdir -p "$ROOT${CA_BUNDLE%/*}"
        cp -L "$CA_BUNDLE" "$ROOT$CA_BUNDLE"
    fi
    IFS=: read -ra extra <<<"$DEFAULT_BINDS:${SQENV_APPTAINER_BINDS:-}"
    for dir in "${extra[@]}" "$@"; do
        [[ -n $dir ]] || continue
        [[ $dir == /* ]] || die "bind dir \`$dir\` is not an absolute path"
        mkdir -p "$ROOT$dir"
    done
    chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
}

cmd_root() {
    need_root root
    ensure_host_tools
    lock
    if ! stamp_ok "$ROOT" root "$SUITE"; then
        local parent name tmp old start=$SECONDS
        parent=$(dirname "$ROOT")
        name=$(basename "$ROOT")
        # we hold the lock: any other build dir is what a killed build left behind
        for old in "$parent/.$name".build.* "$ROOT".old.*; do remove_tree "$old"; done
        tmp=$(mktemp -d "$parent/.$name.build.XXXXXX")
        # shellcheck disable=SC2064  # expand now: remove this build's dir however we exit
        trap "remove_tree '$tmp'" EXIT
        log "building the apptainer root (Debian $SUITE with $ROOT_PACKAGES) at $ROOT"
        debootstrap_into "$SUITE" "$tmp" "$ROOT_PACKAGES"
        [[ -x $tmp/usr/bin/apptainer ]] || die "Debian $SUITE has no usable apptainer package"
        rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages
        remove_special_files "$tmp/dev"
        chmod 755 "$tmp"  # mktemp made it 0700; non-root users bind it as their /
        printf 'recipe=%s %s\n' "$ROOT_RECIPE" "$SUITE" >"$tmp/.sqenv-root"
        if [[ -e $ROOT ]]; then
            mv -T "$ROOT" "$ROOT.old.$$"
            # keep a complete base image tree: it does not depend on the root's recipe
            if stamp_ok "$ROOT.old.$$$BASE_IN_ROOT" base "$BASE_SUITE"; then
                mv -T "$ROOT.old.$$$BASE_IN_ROOT" "$tmp$BASE_IN_ROOT"
            fi
            if stamp_ok "$ROOT.old.$$$VENDOR_IN_ROOT" vendor "$BASE_SUITE"; then
                mv -T "$ROOT.old.$$$VENDOR_IN_ROOT" "$tmp$VENDOR_IN_ROOT"
            fi
        fi
        mv -T "$tmp" "$ROOT"
        trap - EXIT
        remove_tree "$ROOT.old.$$"
        log "built $ROOT in $((SECONDS - start)) s"
    fi
    refresh_root "$@"
}

cmd_adduser() {
    need_root adduser
    [[ $# -gt 0 ]] || die "usage: $PROG adduser USER..."
    stamp_ok "$ROOT" root "$SUITE" || die "no apptainer root at $ROOT" "run \`$PROG root\` first"
    lock
    local user entry gid
    for user in "$@"; do
        entry=$(getent passwd "$user") || die "no user \`$user\` on this host"
        replace_entry "$ROOT/etc/passwd" "$entry"
        for gid in $(id -G "$user"); do
            entry=$(getent group "$gid") || continue
            replace_entry "$ROOT/etc/group" "$entry"
        done
    done
}

replace_entry() {  # FILE LINE: drop lines with LINE's name or id, append LINE (atomically)
    local file=$1 line=$2 name id
    IFS=: read -r name _ id _ <<<"$line"
    awk -F: -v n="$name" -v i="$id" '$1 != n && $3 != i' "$file" >"$file.new"
    printf '%s\n' "$line" >>"$file.new"
    chmod 644 "$file.new"
    mv -f "$file.new" "$file"
}

sh_quote() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

cmd_shim() {
    [[ $# -eq 1 ]] || die "usage: $PROG shim DIR"
    local dir=$1
    mkdir -p "$dir"
    cat >"$dir/.apptainer.$$" <<EOF
#!/bin/sh
# Written by tests/infra/apptainer.sh: runs Debian $SUITE's apptainer from the root below through
# bubblewrap (Debian 12 packages no apptainer). For tests, for non-root users. Host dirs seen
# inside: $DEFAULT_BINDS (those that exist) and \$SQENV_APPTAINER_BINDS (colon-separated,
# each needs a mount point in the root: \`apptainer.sh root DIR\` as root). Everything else,
# /usr and /etc included, is the root's.
# Exit codes pass through; a command killed by signal N exits 128+N. Signals: this process
# becomes bwrap, which forwards none. Signal the process group (Ctrl-C, Slurm, os.killpg): all
# get it, the container's program too. A signal to this pid alone kills bwrap and leaves
# apptainer and the program running, unless SQENV_APPTAINER_SHIM_PIDNS=1: then they run in a pid
# namespace that is SIGKILLed when bwrap dies. (--die-with-parent alone does not reach them, and
# with it 3 of 40 group-signalled programs died by SIGKILL before their handler ran: left out.)
root=$(sh_quote "$ROOT")
binds=$(sh_quote "$DEFAULT_BINDS")
EOF
    cat >>"$dir/.apptainer.$$" <<'EOF'
prog=${0##*/}
case $prog in singularity) ;; *) prog=apptainer ;; esac
if [ ! -x "$root/usr/bin/apptainer" ]; then
    echo "$prog (sqenv test shim): no apptainer root at $root" >&2
    echo "hint: run \`tests/infra/apptainer.sh root\` as root" >&2
    exit 127
fi
set -f
IFS=:
# the dirs to bind, in reverse order; a dir under one already bound is seen through it
rev=
for d in $binds ${SQENV_APPTAINER_BINDS-}; do
    case $d in
        /*) ;;
        '') continue ;;
        *) echo "$prog (sqenv test shim): SQENV_APPTAINER_BINDS: \`$d\` is not absolute" >&2
           exit 125 ;;
    esac
    [ -e "$d" ] || continue
    for a in $rev; do
        case $d in "$a" | "$a"/*) continue 2 ;; esac
    done
    rev="$d:$rev"
done
cwd_seen=no
case $PWD in /) cwd_seen=yes ;; esac
set -- --chdir "$PWD" -- "/usr/bin/$prog" "$@"
# prepending reverses the list back: parents are bound before their subdirectories
for d in $rev; do
    if [ ! -d "$root$d" ]; then
        if [ "$(id -u)" = 0 ]; then
            mkdir -p "$root$d"
        else
            echo "$prog (sqenv test shim): no mount point for \`$d\` in $root" >&2
            echo "hint: run \`tests/infra/apptainer.sh root $d\` as root" >&2
            exit 125
        fi
    fi
    case $PWD in "$d" | "$d"/*) cwd_seen=yes ;; esac
    set -- --bind "$d" "$d" "$@"
done
unset IFS
set +f
if [ "$cwd_seen" = no ]; then
    echo "$prog (sqenv test shim): the current directory $PWD is not visible in the shim" >&2
    echo "hint: work under one of $binds, or add it to SQENV_APPTAINER_BINDS" >&2
    exit 125
fi
if [ "${SQENV_APPTAINER_SHIM_PIDNS-}" = 1 ]; then
    set -- --unshare-pid --die-with-parent "$@"
fi
exec bwrap --bind "$root" / --proc /proc --dev-bind /dev /dev --bind /sys /sys "$@"
EOF
    chmod 755 "$dir/.apptainer.$$"
    mv -f "$dir/.apptainer.$$" "$dir/apptainer"
    ln -sfn apptainer "$dir/singularity"
}

cmd_base_sandbox() {  # [vendor]
    need_root base-sandbox
    stamp_ok "$ROOT" root "$SUITE" || die "no apptainer root at $ROOT" "run \`$PROG root\` first"
    local flavour=${1:-base} target packages
    case $flavour in
        base) target=$ROOT$BASE_IN_ROOT packages=$BASE_PACKAGES ;;
        vendor) target=$ROOT$VENDOR_IN_ROOT packages=$VENDOR_PACKAGES ;;
        *) die "unknown image flavour \`$flavour\`" "use base or vendor" ;;
    esac
    stamp_ok "$target" "$flavour" "$BASE_SUITE" && return
    lock
    stamp_ok "$target" "$flavour" "$BASE_SUITE" && return
    local tmp old start=$SECONDS
    for old in "$ROOT/opt/.sqenv-$flavour".build.* "$target".old.*; do remove_tree "$old"; done
    tmp=$(mktemp -d "$ROOT/opt/.sqenv-$flavour.build.XXXXXX")
    # shellcheck disable=SC2064  # expand now: remove this build's dir however we exit
    trap "remove_tree '$tmp'" EXIT
    log "building the $flavour image tree (Debian $BASE_SUITE minbase with $packages)"
    debootstrap_into "$BASE_SUITE" "$tmp" "$packages"
    [[ $flavour != vendor ]] || vendor_python "$tmp"
    # slim it; then make it buildable by any non-root user: no device nodes, all readable
    rm -rf "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb \
        "$tmp"/var/lib/apt/lists/* "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* \
        "$tmp"/usr/share/info/* "$tmp"/var/log/*.log
    find "$tmp"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias \
        -exec rm -rf {} +
    remove_special_files "$tmp"
    chmod -R a+rX "$tmp"
    printf 'recipe=%s %s\n' "$(recipe_of "$flavour")" "$BASE_SUITE" >"$tmp/.sqenv-$flavour"
    if [[ -e $target ]]; then mv -T "$target" "$target.old.$$"; fi
    mv -T "$tmp" "$target"
    trap - EXIT
    remove_tree "$target.old.$$"
    log "built $target in $((SECONDS - start)) s"
}

vendor_python() {  # TREE: a second Python under /opt/vendor, as vendor images keep theirs (/opt/conda)
    local tree=$1 dist
    mkdir -p "$tree/opt/vendor/bin" "$tree/opt/vendor/lib/python3/dist-packages"
    cp "$tree/usr/bin/python3.11" "$tree/opt/vendor/bin/python3.11"  # a copy: its prefix is /opt/vendor
    ln -s python3.11 "$tree/opt/vendor/bin/python3"
    cp -a "$tree/usr/lib/python3.11" "$tree/opt/vendor/lib/python3.11"
    for dist in "$tree"/usr/lib/python3/dist-packages/numpy*; do
        cp -a "$dist" "$tree/opt/vendor/lib/python3/dist-packages/"
    done
    # a console script of the image's Python (as torchrun is of a PyTorch image's)
    printf '%s\n' '#!/usr/bin/python3' 'import sys' 'try:' '    import six' 'except ImportError:' '    six = None' \
        'print(sys.prefix, six.__file__ if six else "no six")' >"$tree/usr/bin/vendor-tool"
    chmod 755 "$tree/usr/bin/vendor-tool"
}

cmd_base_sif() {  # base|vendor OUT.sif [USER]
    local flavour=$1 tree
    shift
    [[ $# -ge 1 && $# -le 2 ]] || die "usage: $PROG $flavour-sif OUT.sif [USER]"
    tree=$BASE_IN_ROOT
    [[ $flavour == base ]] || tree=$VENDOR_IN_ROOT
    local out user tmp uid gid home as_user=()
    out=$(realpath -m "$1")
    [[ -d ${out%/*} ]] || die "no directory ${out%/*} for $out"
    if [[ $EUID -eq 0 ]]; then
        user=${2:-${SQENV_APPTAINER_USER:-}}
        [[ -n $user ]] || die "as root, \`base-sif\` needs the USER to build as" \
            "apptainer only builds as a non-root user here: \`$PROG base-sif OUT.sif USER\`"
        getent passwd "$user" >/dev/null || die "no user \`$user\` on this host"
        uid=$(id -u "$user")
        gid=$(id -g "$user")
        [[ $uid -ne 0 ]] || die "USER must not be root"
        cmd_root
        cmd_base_sandbox "$flavour"
        cmd_adduser "$user"
        unlock  # the build below only reads the root
        home=$(getent passwd "$user" | cut -d: -f6)
        as_user=(setpriv --reuid="$uid" --regid="$gid" --init-groups
            env HOME="$home" USER="$user" LOGNAME="$user")
    else
        user=$(id -un)
        [[ -z ${2:-} || $2 == "$user" ]] || die "only root can build as another user ($2)"
        stamp_ok "$ROOT$tree" "$flavour" "$BASE_SUITE" || die \
            "no $flavour image tree at $ROOT$tree" "run \`$PROG base-sandbox $flavour\` as root first"
    fi
    tmp=$(mktemp -d /tmp/sqenv-base-sif.XXXXXX)  # /tmp: bound into the shim
    # shellcheck disable=SC2064  # expand now
    trap "rm -rf '$tmp'" EXIT
    cmd_shim "$tmp/bin"
    if [[ $EUID -eq 0 ]]; then chown -R "$uid:$gid" "$tmp"; fi
    if ! (cd "$tmp" && "${as_user[@]}" env APPTAINER_CACHEDIR="$tmp/cache" \
        APPTAINER_TMPDIR="$tmp" "$tmp/bin/apptainer" build \
        --mksquashfs-args "-comp zstd -Xcompression-level 3" "$tmp/base.sif" \
        "$tree" >"$tmp/build.log" 2>&1); then
        tail -n 25 "$tmp/build.log" >&2
        die "\`apptainer build\` of the $flavour SIF failed (as $user)"
    fi
    cp "$tmp/base.sif" "$out.part.$$"
    if [[ $EUID -eq 0 ]]; then chown "$uid:$gid" "$out.part.$$"; fi
    mv -f "$out.part.$$" "$out"
}

main() {
    [[ $# -ge 1 ]] || die "usage: $PROG root|shim|adduser|base-sandbox|base-sif|vendor-sif ..."
    local cmd=$1
    shift
    case $cmd in
        root) cmd_root "$@" ;;
        shim) cmd_shim "$@" ;;
        adduser) cmd_adduser "$@" ;;
        base-sandbox) cmd_base_sandbox "$@" ;;
        base-sif) cmd_base_sif base "$@" ;;
        vendor-sif) cmd_base_sif vendor "$@" ;;
        -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
        *) die "unknown command \`$cmd\`" "try \`$PROG --help\`" ;;
    esac
}

main "$@"
