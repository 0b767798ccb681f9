# shellcheck shell=sh
# sqenv activation: what `conda activate` does, for every program of a conda environment.
#
# The launcher runs `/bin/sh /mnt/sqenv/.sqenv/activate.sh PROG ARGS...` inside
# the namespace when the install's SQENV_ACTIVATE is 1; this script sets the
# variables, sources the environment's activate.d scripts, then execs PROG.
# sqenv writes it into the image at build time (`sqenv.build.conda`): the
# lines under the two markers are filled in then, everything else is fixed.

# CONDA_PREFIX: the install prefix the user sees (SQENV_PREFIX), which the
# launcher shows the environment over inside the namespace, so paths built from
# it ($CONDA_PREFIX/share/...) also make sense to the user and in job scripts;
# the fixed mount path when the engine does not show it there.
if [ -n "${SQENV_PREFIX-}" ] && [ -d "$SQENV_PREFIX/conda-meta" ]; then
    CONDA_PREFIX=$SQENV_PREFIX
else
    CONDA_PREFIX=/mnt/sqenv
fi
CONDA_DEFAULT_ENV=$CONDA_PREFIX
CONDA_SHLVL=1
CONDA_PROMPT_MODIFIER="(${CONDA_PREFIX##*/}) "
export CONDA_PREFIX CONDA_DEFAULT_ENV CONDA_SHLVL CONDA_PROMPT_MODIFIER
case $PATH in
    "$CONDA_PREFIX/bin" | "$CONDA_PREFIX/bin:"*) ;;
    *) PATH=$CONDA_PREFIX/bin${PATH:+:$PATH} ;;
esac
export PATH

# Variables: the packages' etc/conda/env_vars.d, then the environment file's `variables`.
# @VARIABLES@

# The packages' etc/conda/activate.d/*.sh, in name order, as conda sources them.
# @SCRIPTS@

exec "$@"
