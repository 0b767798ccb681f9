# shellcheck shell=sh
# sqenv launcher: the body shared by every program of an install.
#
# `PREFIX/bin/NAME` is a symlink to `PREFIX/launcher`; this file is appended
# to the values written at publish time (SQENV_LAYERS, SQENV_MOUNT_PATH, ...)
# and to the engine functions. This path runs for every `python` call, so it
# starts no Python, forks nothing once the image is mounted on this node, and
# hands over with `exec` so the program keeps our pid, signals and exit code.

sqenv_die() {
    printf 'sqenv: %s\n' "$1" >&2
    [ -z "${2-}" ] || printf '\nhint: %s\n' "$2" >&2
    exit "${3:-125}"
}

# --- Where am I? -------------------------------------------------------------
# A node-local copy made by `sqenv stage` knows its install (sqenv_staged, set
# in its header) and its directory (sqenv_staged_at, with sqenv-enter and bin/):
# a job's ranks then start without opening a file of the shared file system.
# The install changed since it was staged (update, rollback: a newer launcher)
# or the copy is incomplete: the install's own launcher runs instead.
if [ -n "${sqenv_staged-}" ]; then
    SQENV_PREFIX=$sqenv_staged
    sqenv_name=${0##*/}
    # -nt: not POSIX, but in every Linux /bin/sh (dash, bash, busybox); one stat each, cached per node.
    # shellcheck disable=SC3013,SC2154 # sqenv_staged_at: set in the header (publish/launchers.py)
    if [ "$SQENV_PREFIX/launcher" -nt "$sqenv_staged_at/launcher" ] || [ ! -x "$sqenv_staged_at/sqenv-enter" ]; then
        [ "$sqenv_name" != launcher ] || exec "$SQENV_PREFIX/launcher" "$@"
        exec "$SQENV_PREFIX/bin/$sqenv_name" "$@"
    fi
    # shellcheck disable=SC2034 # read by the engine (engines/embedded.sh)
    sqenv_enter=$sqenv_staged_at/sqenv-enter
    # In the program, PATH names PREFIX/bin where it named the staged bin: there the image
    # shows over PREFIX, so `python` in a subprocess is the environment's own, as without staging.
    sqenv_path=:$PATH:
    case $sqenv_path in
        *":$sqenv_staged_at/bin:"*)
            sqenv_path=${sqenv_path%%":$sqenv_staged_at/bin:"*}:$SQENV_PREFIX/bin:${sqenv_path#*":$sqenv_staged_at/bin:"}
            sqenv_path=${sqenv_path#:}
            PATH=${sqenv_path%:}
            export PATH
            ;;
    esac
    sqenv_run_mode=0
    if [ "$sqenv_name" = launcher ]; then
        sqenv_run_mode=1
    else
        sqenv_prog=$SQENV_PREFIX/bin/$sqenv_name
        sqenv_argv0=$sqenv_prog
    fi
else
    # $0 is PREFIX/bin/NAME (PATH lookup or a typed path), PREFIX/launcher (run
    # mode), or a symlink made elsewhere (a user's alias, a venv made on top).
    sqenv_self=$0
    case $sqenv_self in
        */*) ;;
        *) sqenv_self=$(command -v -- "$sqenv_self") || sqenv_die "cannot find myself ($0)" ;;
    esac
    case $sqenv_self in
        /*) ;;
        *) sqenv_self=$PWD/$sqenv_self ;;
    esac
    sqenv_argv0=$sqenv_self
    sqenv_hops=0
    while [ ! -f "${sqenv_self%/*}/../launcher" ] && [ ! -f "${sqenv_self%/*}/sqenv.json" ]; do
        # Not in an install: follow one symlink level and try again.
        [ -L "$sqenv_self" ] || sqenv_die "$0 is not inside a sqenv install"
        sqenv_hops=$((sqenv_hops + 1))
        [ "$sqenv_hops" -lt 40 ] || sqenv_die "too many symlinks at $0"
        sqenv_link=$(readlink -- "$sqenv_self") || sqenv_die "cannot read the link $sqenv_self"
        case $sqenv_link in
            /*) sqenv_self=$sqenv_link ;;
            *) sqenv_self=${sqenv_self%/*}/$sqenv_link ;;
        esac
    done
    # `./python`, `../env/bin/python`, PATH=.: the directory has dot components
    # that would make PREFIX wrong; resolve them (a subshell, only in this case).
    case ${sqenv_self%/*}/ in
        */./* | */../*)
            sqenv_dir=$(cd -P -- "${sqenv_self%/*}" && pwd -P) || sqenv_die "cannot enter the directory of $0"
            sqenv_self=$sqenv_dir/${sqenv_self##*/}
            ;;
    esac
    sqenv_name=${sqenv_self##*/}
    sqenv_run_mode=0
    if [ "$sqenv_name" = launcher ] && [ -f "${sqenv_self%/*}/sqenv.json" ]; then
        SQENV_PREFIX=${sqenv_self%/*}
        sqenv_run_mode=1
    else
        sqenv_bin=${sqenv_self%/*}
        SQENV_PREFIX=${sqenv_bin%/*}
        sqenv_prog=$SQENV_PREFIX/bin/$sqenv_name
        # A venv made on top keeps its own argv[0] so Python finds its pyvenv.cfg;
        # any other alias runs as the install's own program.
        [ -f "${sqenv_argv0%/*}/../pyvenv.cfg" ] || sqenv_argv0=$sqenv_prog
    fi
    # shellcheck disable=SC2034 # read by the engine (engines/embedded.sh)
    sqenv_enter=$SQENV_PREFIX/sqenv-enter
fi
if [ "$sqenv_run_mode" = 1 ]; then
    # `PREFIX/launcher PROG ARGS` (`sqenv run`): PROG found with the install's bin/ first on PATH
    [ "$#" -gt 0 ] || set -- "${SHELL:-/bin/sh}"
    sqenv_prog=$1
    shift
    sqenv_argv0=$sqenv_prog
    PATH=$SQENV_PREFIX/bin:$PATH
    export PATH
fi
export SQENV_PREFIX

# --- Engine ------------------------------------------------------------------
# `auto`: the first engine of SQENV_ENGINES (the registry's order) usable here.
sqenv_engine=${SQENV_ENGINE:-$SQENV_DEFAULT_ENGINE}
if [ "$sqenv_engine" = auto ]; then
    for sqenv_try in $SQENV_ENGINES; do
        if "sqenv_${sqenv_try}_usable"; then
            sqenv_engine=$sqenv_try
            break
        fi
    done
    [ "$sqenv_engine" != auto ] || sqenv_die "no engine can run this environment here: user namespaces or /dev/fuse are unavailable and neither apptainer nor singularity is on PATH" \
        "run \`sqenv doctor\` for what is missing and how to fix it"
fi
case " $SQENV_ENGINES " in
    *" $sqenv_engine "*) "sqenv_${sqenv_engine}_exec" "$@" ;;
    *) sqenv_die "unknown engine \`$sqenv_engine\` (SQENV_ENGINE)" "use one of: auto $SQENV_ENGINES" ;;
esac
