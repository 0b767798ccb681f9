# shellcheck shell=sh
# Apptainer/Singularity engine: the same image at the same fixed path, run by
# the site's container runtime where user namespaces or FUSE are disabled.
#
# The image is bound at SQENV_MOUNT_PATH and over PREFIX (`image-src=/`, read
# only), so inside PREFIX/bin/NAME is the program itself, as with the embedded
# engine: sys.executable, pip and nested calls need nothing more, and nested
# calls never re-enter. Environment (PATH and LD_LIBRARY_PATH included), cwd,
# argv and exit status pass through; `exec` keeps our pid for the runtime,
# which forwards the signals it gets to the program.
#
# Why a container image plus the host's data directories (and not the host's
# root): Apptainer refuses `/` as the container ("/ as sandbox is not
# authorized"), and binding the host's /usr, /lib and /etc over some other
# image mixes two userlands under the runtime's own /etc edits. So the OS
# (/usr, /lib, /etc, /var, ...) comes from one image, and every other
# top-level directory of the host (/home, /scratch, /project, /opt, /appl,
# /work, /mnt/*, ...) is bound at its own path, as Tykky does, except those
# the container has itself (SQENV_CONTAINER_DIRS), plus the site's
# `bind_paths` (SQENV_BIND_PATHS). The image is the install's own
# PREFIX/container.sif (`sqenv create --base-image`, or the wrapped container
# of `sqenv wrap IMAGE.sif`), else $SQENV_APPTAINER_IMAGE (a site default).
# For a pip environment it must hold the environment's base Python at the
# same path (bin/python links to it, e.g. /usr/bin/python3): an image of the
# node's OS. A Python under a data directory (a module in /opt or /appl) is
# seen from the host.
#
# Several layers (after `sqenv update`) cannot be stacked here: Apptainer's
# `--overlay` merges images into the container's root only, not at a path, and
# stacking needs overlayfs, which this engine exists to do without. So one
# layer, else a clear error (`sqenv compact` merges the layers).
#
# With no layer (SQENV_LAYERS empty) the install wraps a container: NAME runs
# as found on the container's PATH with SQENV_WRAP_PATH (the `-w` paths)
# first, its own environment otherwise kept.

sqenv_apptainer_usable() {
    command -v apptainer >/dev/null 2>&1
}

# SingularityCE takes the same options: the same engine under its own name.
sqenv_singularity_usable() {
    command -v singularity >/dev/null 2>&1
}

sqenv_singularity_exec() {
    sqenv_apptainer_exec "$@"
}

# Append a host directory (or file: a profile's libcxi.so.1) to the bind list if it exists and can be named there.
sqenv_apptainer_bind() {
    case $1 in
        *[,:]*) return 0 ;; # Apptainer's --bind syntax cannot express these
    esac
    [ -e "$1" ] || return 0
    sqenv_binds=${sqenv_binds:+$sqenv_binds,}$1
}

sqenv_apptainer_exec() {
    # built for a CPU (`--target-cpu`): the helper's one-line refusal, as with the embedded engine
    if [ -n "${SQENV_CPU_LEVEL-}" ] && [ -x "$SQENV_PREFIX/sqenv-enter" ]; then
        "$SQENV_PREFIX/sqenv-enter" --check-cpu "$SQENV_CPU_LEVEL" || exit 125
    fi
    case $sqenv_engine in
        singularity) sqenv_cmd=singularity ;;
        *) sqenv_cmd=apptainer ;;
    esac
    if ! command -v "$sqenv_cmd" >/dev/null 2>&1; then
        # SingularityCE and Apptainer take the same options used here.
        if command -v apptainer >/dev/null 2>&1; then
            sqenv_cmd=apptainer
        elif command -v singularity >/dev/null 2>&1; then
            sqenv_cmd=singularity
        else
            sqenv_die "neither \`apptainer\` nor \`singularity\` is on PATH" \
                "load the site's apptainer module, or set SQENV_ENGINE=embedded; \`sqenv doctor\` says what works here"
        fi
    fi
    sqenv_sif=$SQENV_PREFIX/container.sif
    if [ -n "${SQENV_CONTAINER-}" ]; then # `--base-image-ref`: the site's copy, never another image
        sqenv_sif=$SQENV_CONTAINER
        [ -f "$sqenv_sif" ] || sqenv_die "the container \`$sqenv_sif\` this environment was built on is missing" \
            "ask whoever keeps it, or rebuild the environment on another image with \`sqenv create --force\`"
    fi
    [ -f "$sqenv_sif" ] || sqenv_sif=${SQENV_APPTAINER_IMAGE-}
    [ -n "$sqenv_sif" ] || sqenv_die "the $sqenv_cmd engine needs a container image for this environment, and none is set" \
        "set SQENV_APPTAINER_IMAGE to a SIF of this system's OS, recreate the environment with \`--base-image IMAGE.sif\`, or set SQENV_ENGINE=embedded"
    [ -f "$sqenv_sif" ] || sqenv_die "the container image \`$sqenv_sif\` does not exist" \
        "fix SQENV_APPTAINER_IMAGE, or set SQENV_ENGINE=embedded"

    # The host's directories, except those of the OS, which come from the image
    # (and those the runtime mounts itself: /dev, /proc, /sys, /tmp). Or exactly
    # the ones in SQENV_APPTAINER_HOST_DIRS (colon-separated; Tykky's "isolate").
    sqenv_binds=
    if [ -n "${SQENV_APPTAINER_HOST_DIRS+set}" ]; then
        sqenv_dirs=$SQENV_APPTAINER_HOST_DIRS
    else
        sqenv_dirs=
        for sqenv_dir in /* /mnt/*; do
            case $sqenv_dir in
                /bin | /boot | /dev | /etc | /lib | /lib32 | /lib64 | /libx32 | /lost+found | /mnt | /proc | /root | \
                    /run | /sbin | /sys | /tmp | /usr | /var | "$SQENV_MOUNT_PATH" | *[,:]*) ;;
                *) sqenv_dirs=$sqenv_dirs:$sqenv_dir ;;
            esac
        done
    fi
    # Never over a top-level directory the container has (vendor images keep their software in
    # /opt: /opt/conda, /opt/rocm): SQENV_CONTAINER_DIRS, read from PREFIX/container.sif when it
    # was put there (non-empty directories and non-directories). The site's bind_paths are bound
    # as named: the site said so.
    sqenv_has=
    if [ -n "${SQENV_CONTAINER_DIRS+set}" ] && { [ "$sqenv_sif" = "$SQENV_PREFIX/container.sif" ] ||
        [ "$sqenv_sif" = "${SQENV_CONTAINER-}" ]; }; then
        sqenv_has=:$SQENV_CONTAINER_DIRS:
    fi
    IFS=:
    set -f
    for sqenv_dir in $sqenv_dirs; do
        case $sqenv_has in
            *:"$sqenv_dir":*) continue ;;
        esac
        [ -d "$sqenv_dir" ] || continue # host directories only (/* also lists files)
        sqenv_apptainer_bind "$sqenv_dir"
    done
    for sqenv_dir in ${SQENV_BIND_PATHS-}; do
        sqenv_apptainer_bind "$sqenv_dir"
    done
    # --pwd only where the cwd is visible inside (apptainer refuses to start otherwise);
    # elsewhere its default applies: the same path if the image has it, else $HOME.
    sqenv_pwd=
    IFS=,
    for sqenv_dir in $sqenv_binds /tmp /var/tmp "${HOME:-/nonexistent}" "$SQENV_PREFIX" "$SQENV_MOUNT_PATH"; do
        case $PWD/ in
            "$sqenv_dir"/*) sqenv_pwd=$PWD && break ;;
        esac
    done
    set +f
    unset IFS

    # `mpi = host`: the host MPI library directories first on the library path (once).
    case ${SQENV_LD_PREPEND:+x}:${LD_LIBRARY_PATH-} in
        x:"$SQENV_LD_PREPEND" | x:"$SQENV_LD_PREPEND":*) ;;
        x:*) LD_LIBRARY_PATH=$SQENV_LD_PREPEND${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} && export LD_LIBRARY_PATH ;;
    esac

    if [ -z "$SQENV_LAYERS" ]; then
        # A wrapped container: its programs by name, its own PATH after the -w paths.
        # Our bin/ (put first by `sqenv run`) holds only launchers: not inside.
        case $PATH in
            "$SQENV_PREFIX/bin:"*) PATH=${PATH#"$SQENV_PREFIX/bin:"} ;;
        esac
        [ "$sqenv_prog" != "$SQENV_PREFIX/bin/$sqenv_name" ] || sqenv_prog=$sqenv_name
        # (Both spellings: SingularityCE reads SINGULARITYENV_, Apptainer prefers APPTAINERENV_.)
        APPTAINERENV_PREPEND_PATH=${SQENV_WRAP_PATH-} APPTAINERENV_APPEND_PATH=$PATH
        SINGULARITYENV_PREPEND_PATH=${SQENV_WRAP_PATH-} SINGULARITYENV_APPEND_PATH=$PATH
        export APPTAINERENV_PREPEND_PATH APPTAINERENV_APPEND_PATH SINGULARITYENV_PREPEND_PATH SINGULARITYENV_APPEND_PATH
        exec "$sqenv_cmd" -s exec --no-eval ${sqenv_pwd:+--pwd "$sqenv_pwd"} ${sqenv_binds:+--bind "$sqenv_binds"} \
            "$sqenv_sif" "$sqenv_prog" "$@"
    fi

    case $SQENV_LAYERS in
        *' '*) sqenv_die "this environment has several image layers (from \`sqenv update\`), which the $sqenv_cmd engine cannot stack" \
            "merge them into one with \`sqenv compact $SQENV_PREFIX\`, or use the embedded engine (SQENV_ENGINE=embedded)" ;;
    esac
    sqenv_img=$SQENV_PREFIX/$SQENV_LAYERS
    # A copy that `sqenv stage` put on node-local storage for this job wins (if it is ours).
    if [ -n "${SLURM_JOB_ID-}" ]; then
        sqenv_staged=${SQENV_STAGE:-${SQENV_STAGE_DIR:-/tmp}}/sqenv-stage-$SLURM_JOB_ID
        if [ -O "$sqenv_staged" ] && [ -f "$sqenv_staged/$SQENV_LAYERS" ] && [ -O "$sqenv_staged/$SQENV_LAYERS" ]; then
            sqenv_img=$sqenv_staged/$SQENV_LAYERS
        fi
    fi
    [ -f "$sqenv_img" ] || sqenv_die "the image \`$sqenv_img\` of this environment is missing" \
        "restore it, or rebuild the environment with \`sqenv create --force\`"
    case $sqenv_img$SQENV_PREFIX$SQENV_MOUNT_PATH in
        *[,:]*) sqenv_die "the $sqenv_cmd engine cannot bind a path with \`,\` or \`:\` (\`$SQENV_PREFIX\`)" \
            "move the install to a path without them, or use the embedded engine (SQENV_ENGINE=embedded)" ;;
    esac
    if [ "${SQENV_ON_CONTAINER-}" = 1 ]; then
        # A layer on the container's Python: the layer's bin, the container's PATH (its tools:
        # /opt/rocm/bin...), then the caller's.
        APPTAINERENV_PREPEND_PATH=$SQENV_PREFIX/bin APPTAINERENV_APPEND_PATH=$PATH
        SINGULARITYENV_PREPEND_PATH=$SQENV_PREFIX/bin SINGULARITYENV_APPEND_PATH=$PATH
        export APPTAINERENV_PREPEND_PATH APPTAINERENV_APPEND_PATH SINGULARITYENV_PREPEND_PATH SINGULARITYENV_APPEND_PATH
    else
        # The exact PATH (and library path) of the caller, not the image's defaults.
        APPTAINERENV_PATH=$PATH SINGULARITYENV_PATH=$PATH
        export APPTAINERENV_PATH SINGULARITYENV_PATH
    fi
    if [ -n "${LD_LIBRARY_PATH-}" ]; then
        APPTAINERENV_LD_LIBRARY_PATH=$LD_LIBRARY_PATH SINGULARITYENV_LD_LIBRARY_PATH=$LD_LIBRARY_PATH
        export APPTAINERENV_LD_LIBRARY_PATH SINGULARITYENV_LD_LIBRARY_PATH
    fi
    if [ "$SQENV_ACTIVATE" = 1 ]; then
        set -- /bin/sh "$SQENV_MOUNT_PATH/.sqenv/activate.sh" "$sqenv_prog" "$@"
    else
        set -- "$sqenv_argv0" "$@"
    fi
    exec "$sqenv_cmd" -s exec --no-eval ${sqenv_pwd:+--pwd "$sqenv_pwd"} ${sqenv_binds:+--bind "$sqenv_binds"} \
        --bind "$sqenv_img:$SQENV_MOUNT_PATH:ro,image-src=/" --bind "$sqenv_img:$SQENV_PREFIX:ro,image-src=/" \
        "$sqenv_sif" "$@"
}
