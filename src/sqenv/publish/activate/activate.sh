# shellcheck shell=sh
# Activate a sqenv install in a POSIX shell (bash, zsh, dash, ksh):
#     . PREFIX/bin/activate        (or `source PREFIX/bin/activate`)
# It cannot be run, only sourced. `deactivate` undoes everything it did.
# Written by sqenv at publish time; the quoted values below are this install's.

# Another environment active (a venv, another sqenv install)? Leave it first.
case $(type deactivate 2>/dev/null) in
    *function*) deactivate ;;
esac

_sqenv_set() { # NAME VALUE: remember NAME's old value (or that it was unset), then export VALUE
    eval "_sqenv_had_$1=\${$1+x} _sqenv_old_$1=\${$1-}"
    eval "$1=\$2"
    # shellcheck disable=SC2163 # exports the variable named by $1
    export "$1"
    _sqenv_names="${_sqenv_names-} $1"
}

_sqenv_unset() { # NAME: remember NAME's old value, then unset it
    eval "_sqenv_had_$1=\${$1+x} _sqenv_old_$1=\${$1-}"
    unset "$1"
    _sqenv_names="${_sqenv_names-} $1"
}

deactivate() {
    # (a loop over words without word splitting, which zsh does not do)
    _sqenv_rest=${_sqenv_names-}
    while [ -n "$_sqenv_rest" ]; do
        _sqenv_rest=${_sqenv_rest# }
        _sqenv_name=${_sqenv_rest%% *}
        _sqenv_rest=${_sqenv_rest#"$_sqenv_name"}
        if eval "[ -n \"\${_sqenv_had_$_sqenv_name-}\" ]"; then
            eval "$_sqenv_name=\$_sqenv_old_$_sqenv_name"
            # shellcheck disable=SC2163 # exports the variable named by it
            export "$_sqenv_name"
        else
            unset "$_sqenv_name"
        fi
        unset "_sqenv_had_$_sqenv_name" "_sqenv_old_$_sqenv_name"
    done
    if [ -n "${_sqenv_had_ps1-}" ]; then
        PS1=$_sqenv_old_ps1
    fi
    unset _sqenv_name _sqenv_names _sqenv_rest _sqenv_had_ps1 _sqenv_old_ps1
    hash -r 2>/dev/null
    unset -f _sqenv_set _sqenv_unset deactivate
}

_sqenv_set PATH @BIN@:"$PATH"
@VARIABLES@
if [ -z "${VIRTUAL_ENV_DISABLE_PROMPT-}" ] && [ -n "${PS1+x}" ]; then
    _sqenv_had_ps1=x
    _sqenv_old_ps1=$PS1
    PS1=@PROMPT@$PS1
fi
hash -r 2>/dev/null
true
