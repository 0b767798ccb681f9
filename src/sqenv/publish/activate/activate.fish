# Activate a sqenv install in fish:   source PREFIX/bin/activate.fish
# `deactivate` undoes everything it did. Written by sqenv at publish time;
# the quoted values below are this install's.

# Another environment active (a venv, another sqenv install)? Leave it first.
if functions -q deactivate
    deactivate
end

function _sqenv_set --description 'NAME VALUE: remember the old value, then export VALUE'
    set -l name $argv[1]
    if set -q $name
        set -g _sqenv_had_$name x
        set -g _sqenv_old_$name $$name
    end
    set -gx $name $argv[2..-1]
    set -g _sqenv_names $_sqenv_names $name
end

function _sqenv_unset --description 'NAME: remember the old value, then erase it'
    set -l name $argv[1]
    if set -q $name
        set -g _sqenv_had_$name x
        set -g _sqenv_old_$name $$name
    end
    set -e $name
    set -g _sqenv_names $_sqenv_names $name
end

function deactivate --description 'Leave the sqenv install: restore what activate changed'
    for name in $_sqenv_names
        set -l had _sqenv_had_$name
        set -l old _sqenv_old_$name
        if set -q $had
            set -gx $name $$old
        else
            set -e $name
        end
        set -e $had
        set -e $old
    end
    set -e _sqenv_names
    if functions -q _sqenv_old_fish_prompt
        functions -e fish_prompt
        functions -c _sqenv_old_fish_prompt fish_prompt
        functions -e _sqenv_old_fish_prompt
    end
    functions -e _sqenv_set _sqenv_unset deactivate
end

_sqenv_set PATH @BIN@ $PATH
@VARIABLES@
if not set -q VIRTUAL_ENV_DISABLE_PROMPT; and functions -q fish_prompt
    functions -c fish_prompt _sqenv_old_fish_prompt
    function fish_prompt
        set -l status_was $status
        printf '%s' @PROMPT@
        echo "exit $status_was" | source
        _sqenv_old_fish_prompt
    end
end
