# shellcheck shell=sh
# Embedded engine: `sqenv-enter` mounts each image layer once per node, user
# and image with its own FUSE server (shared by concurrent and later launches, gone
# SQENV_IDLE seconds after its last user), in a runtime directory it verifies
# on every launch (/tmp is shared: see enter.c), then shows the image at the
# fixed path in a private mount namespace and execs the program. Nothing here
# forks; the checks that must be race-free are in the helper, not in sh.
#
# Engine interface (see engines/__init__.py): sqenv_<engine>_usable and
# sqenv_<engine>_exec ARGS..., reading SQENV_PREFIX, sqenv_prog, sqenv_argv0
# and sqenv_enter (PREFIX/sqenv-enter, or its node-local copy after `sqenv stage`).

sqenv_embedded_usable() {
    [ -r /dev/fuse ] && [ -w /dev/fuse ] && [ -x "$sqenv_enter" ] || return 1
    read -r sqenv_userns </proc/sys/user/max_user_namespaces 2>/dev/null || return 0
    [ "$sqenv_userns" -gt 0 ]
}

sqenv_embedded_exec() {
    if [ "$SQENV_ACTIVATE" = 1 ]; then
        set -- -a /bin/sh -- /bin/sh "$SQENV_MOUNT_PATH/.sqenv/activate.sh" "$sqenv_prog" "$@"
    else
        set -- -a "$sqenv_argv0" -- "$sqenv_prog" "$@"
    fi
    # -i per layer, the top one first (SQENV_LAYERS lists the bottom one first).
    for sqenv_layer in $SQENV_LAYERS; do
        set -- -i "$SQENV_PREFIX/$sqenv_layer" "$@"
    done
    # `mpi = host`: the host MPI library directories first on the library path (once).
    case ${SQENV_LD_PREPEND:+x}:${LD_LIBRARY_PATH-} in
        x:"$SQENV_LD_PREPEND" | x:"$SQENV_LD_PREPEND":*) ;;
        x:*) LD_LIBRARY_PATH=$SQENV_LD_PREPEND${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} && export LD_LIBRARY_PATH ;;
    esac
    [ "$SQENV_MOUNT_PATH" = /mnt/sqenv ] || set -- -m "$SQENV_MOUNT_PATH" "$@" # `sqenv wrap --mask`
    [ -z "${SQENV_CPU_LEVEL-}" ] || set -- -C "$SQENV_CPU_LEVEL" "$@" # built for a CPU (`--target-cpu`)
    # a staged copy (launcher.sh): the script the helper must not leak to the program is that copy
    [ -z "${sqenv_staged-}" ] || set -- -L "$sqenv_staged_at/launcher" "$@"
    exec "$sqenv_enter" -t "${SQENV_IDLE:-60}" -r "${SQENV_RUNTIME-}" -s "${SQENV_STAGE-}" \
        -p "$SQENV_PREFIX" "$@"
}
