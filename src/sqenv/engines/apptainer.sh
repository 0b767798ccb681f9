# shellcheck shell=sh
# Apptainer/Singularity engine: the same image at the same fixed path, run by
# the site's container runtime where user namespaces or FUSE are disabled.

sqenv_apptainer_exec() {
    sqenv_die "the $sqenv_engine engine is not supported by this install yet" \
        "set SQENV_ENGINE=embedded, or run \`sqenv doctor\`"
}
