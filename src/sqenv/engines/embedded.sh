# shellcheck shell=sh
# Embedded engine: squashfuse_ll mounts each image layer once per node, user
# and image (shared by concurrent and later launches, gone after
# SQENV_IDLE seconds without users); sqenv-enter then shows it at the fixed
# path in a private mount namespace and execs the program.
#
# Engine interface (see engines/__init__.py): sqenv_<engine>_usable and
# sqenv_<engine>_exec ARGS..., reading SQENV_PREFIX, sqenv_prog, sqenv_argv0.

sqenv_embedded_usable() {
    [ -r /dev/fuse ] && [ -w /dev/fuse ] && [ -x "$SQENV_PREFIX/sqenv-enter" ] || return 1
    read -r sqenv_userns </proc/sys/user/max_user_namespaces 2>/dev/null || return 0
    [ "$sqenv_userns" -gt 0 ]
}

sqenv_runtime_dir() {
    if [ -n "$SQENV_RUNTIME" ]; then
        sqenv_rt=$SQENV_RUNTIME
        return
    fi
    while read -r sqenv_key sqenv_uid _; do
        [ "$sqenv_key" = Uid: ] && break
    done </proc/self/status
    sqenv_rt=/tmp/sqenv-$sqenv_uid
}

# Mount one layer under the lock; called only when it is not mounted yet, or
# its FUSE daemon died (SIGKILL, OOM): then the dead mount is cleared first.
sqenv_mount_cold() {
    # A copy that `sqenv stage` put on node-local storage for this job wins
    # (only if it is ours: /tmp is shared by all users of the node).
    if [ -n "${SLURM_JOB_ID-}" ]; then
        sqenv_staged=${SQENV_STAGE:-${SQENV_STAGE_DIR:-/tmp}}/sqenv-stage-$SLURM_JOB_ID
        if [ -O "$sqenv_staged" ] && [ -f "$sqenv_staged/$sqenv_layer" ] && [ -O "$sqenv_staged/$sqenv_layer" ]; then
            sqenv_img=$sqenv_staged/$sqenv_layer
        fi
    fi
    [ -f "$sqenv_img" ] || sqenv_die "the image \`$sqenv_img\` of this environment is missing" \
        "restore it, or rebuild the environment with \`sqenv create --force\`"
    command -v squashfuse_ll >/dev/null 2>&1 || sqenv_die "\`squashfuse_ll\` is not installed on this node" \
        "run \`sqenv doctor\` for how to install it, or set SQENV_ENGINE=apptainer"
    sqenv_tries=0
    while :; do
        # Mounted meanwhile by the holder of the lock? Then done: without this, every
        # holder's `rm` of the lock file sends all waiters round again (128 ranks: > 20 rounds).
        if [ "$sqenv_tries" -gt 0 ] && (: <"$sqenv_mnt/.sqenv-image") 2>/dev/null; then
            return 0
        fi
        sqenv_tries=$((sqenv_tries + 1))
        [ "$sqenv_tries" -le 20 ] || sqenv_die "cannot lock \`$sqenv_mnt.lock\`"
        [ -d "$sqenv_rt" ] || (umask 077 && mkdir -p "$sqenv_rt") 2>/dev/null || [ -d "$sqenv_rt" ] ||
            sqenv_die "cannot create the runtime directory \`$sqenv_rt\`" "set SQENV_RUNTIME_DIR to a writable local directory"
        [ -O "$sqenv_rt" ] || sqenv_die "\`$sqenv_rt\` belongs to another user" \
            "remove it, or set SQENV_RUNTIME_DIR to a directory of yours"
        # The lock file is removed by whoever holds it last: make sure the
        # one we locked is still the one on disk.
        { command exec 8>"$sqenv_mnt.lock"; } 2>/dev/null || continue
        flock 8 || sqenv_die "cannot lock \`$sqenv_mnt.lock\`"
        # shellcheck disable=SC3013 # -ef: dash, bash, ksh and busybox all have it
        [ /proc/self/fd/8 -ef "$sqenv_mnt.lock" ] && break
        exec 8>&-
    done
    # Open, not `[ -e ]`: a dead mount still passes `-e` from cached entries.
    if ! (: <"$sqenv_mnt/.sqenv-image") 2>/dev/null; then
        if ! mkdir "$sqenv_mnt" 2>/dev/null; then
            # A dead mount fails stat() (so `[ -d ]` too): detach whatever is there.
            fusermount3 -u -z "$sqenv_mnt" 2>/dev/null || fusermount -u -z "$sqenv_mnt" 2>/dev/null
            [ -d "$sqenv_mnt" ] || sqenv_die "cannot create the mount point \`$sqenv_mnt\`"
        fi
        rm -f "$sqenv_mnt.status"
        # Its own session: a Ctrl-C or hang-up of this terminal must not
        # unmount an image that other programs are using. It gets neither the
        # lock (fd 8) nor other layers' pins (fds 3-7), or they would outlive us.
        # shellcheck disable=SC2016 # expanded by the inner sh
        setsid -f sh -c 'squashfuse_ll -f -o "ro,timeout=$3" "$1" "$2" 2>"$2.err"
            echo "$?" >"$2.status"
            [ -s "$2.err" ] || rm -f "$2.err" "$2.status"
            rmdir "$2" && rmdir "${2%/*}"' sh "$sqenv_img" "$sqenv_mnt" "$SQENV_IDLE" \
            </dev/null >/dev/null 2>&1 3<&- 4<&- 5<&- 6<&- 7<&- 8>&-
        sqenv_wait=0
        while [ ! -e "$sqenv_mnt/.sqenv-image" ]; do
            if [ -f "$sqenv_mnt.status" ]; then
                sqenv_err=$(cat "$sqenv_mnt.err" 2>/dev/null)
                rm -f "$sqenv_mnt.err" "$sqenv_mnt.status" "$sqenv_mnt.lock"
                rmdir "$sqenv_mnt" 2>/dev/null
                sqenv_die "cannot mount the image \`$sqenv_img\`: ${sqenv_err:-squashfuse_ll failed}" \
                    "the image may be corrupt: check it with \`sqenv info --verify $SQENV_PREFIX\`, rebuild with \`sqenv create --force\`"
            fi
            sqenv_wait=$((sqenv_wait + 1))
            [ "$sqenv_wait" -lt 2000 ] || sqenv_die "timed out mounting \`$sqenv_img\` at \`$sqenv_mnt\`"
            sleep 0.005
        done
    fi
    rm -f "$sqenv_mnt.lock"
    exec 8>&-
}

sqenv_embedded_exec() {
    sqenv_runtime_dir
    if [ "$SQENV_ACTIVATE" = 1 ]; then
        set -- -a /bin/sh -- /bin/sh "$SQENV_MOUNT_PATH/.sqenv/activate.sh" "$sqenv_prog" "$@"
    else
        set -- -a "$sqenv_argv0" -- "$sqenv_prog" "$@"
    fi
    sqenv_fd=7
    for sqenv_layer in $SQENV_LAYERS; do
        sqenv_img=$SQENV_PREFIX/$sqenv_layer
        sqenv_id=${sqenv_layer#*-}
        sqenv_mnt=$sqenv_rt/${sqenv_id%.sqfs}
        # Hold a file of the image open for the program's lifetime: the idle
        # timeout counts open files, and a namespace bind does not count.
        sqenv_try=0
        until eval "command exec $sqenv_fd<\"\$sqenv_mnt/.sqenv-image\"" 2>/dev/null; do
            sqenv_try=$((sqenv_try + 1))
            [ "$sqenv_try" -le 3 ] || sqenv_die "cannot open the mounted image at \`$sqenv_mnt\`"
            sqenv_mount_cold
        done
        [ "$sqenv_fd" -gt 3 ] || sqenv_die "too many image layers" "run \`sqenv compact $SQENV_PREFIX\`"
        sqenv_fd=$((sqenv_fd - 1))
        set -- -l "$sqenv_mnt" "$@"
    done
    # `mpi = host`: the host MPI library directories first on the library path (once).
    case ${SQENV_LD_PREPEND:+x}:${LD_LIBRARY_PATH-} in
        x:"$SQENV_LD_PREPEND" | x:"$SQENV_LD_PREPEND":*) ;;
        x:*) LD_LIBRARY_PATH=$SQENV_LD_PREPEND${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} && export LD_LIBRARY_PATH ;;
    esac
    [ "$SQENV_MOUNT_PATH" = /mnt/sqenv ] || set -- -m "$SQENV_MOUNT_PATH" "$@" # `sqenv wrap --mask`
    exec "$SQENV_PREFIX/sqenv-enter" -p "$SQENV_PREFIX" "$@"
}
