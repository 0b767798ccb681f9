# Activate a sqenv install in csh or tcsh:   source PREFIX/bin/activate.csh
# `deactivate` undoes everything it did. Written by sqenv at publish time;
# the quoted values below are this install's. (csh has no functions: each
# variable's save and restore are spelled out, as venv's activate.csh does.)

# Another environment active (a venv, another sqenv install)? Leave it first.
if ( `alias deactivate` != "" ) deactivate

alias deactivate '@RESTORE@ test $?_sqenv_old_prompt != 0 && set prompt="$_sqenv_old_prompt:q" && unset _sqenv_old_prompt; rehash; unalias deactivate'

@SAVE@
rehash
