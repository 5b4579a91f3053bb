# bash completion for trio-orch (printed by `trio-orch completion bash`).
# This shell:   eval "$(trio-orch completion bash)"
# For good:     trio-orch completion bash > ~/.local/share/bash-completion/completions/trio-orch
# Bot names are read from the config at completion time (`trio-orch [--config P] _bots`).

_trio_orch_reply() { # $1: the command's options, $2: what its arguments are
    local words=""
    if [[ $cur == -* ]]; then
        words=$1
    else
        case $2 in
            bots) words=$("${program}" "${config[@]}" _bots 2>/dev/null) ;;
            shells) words="@SHELLS@" ;;
            directories)
                mapfile -t COMPREPLY < <(compgen -d -- "$cur")
                return
                ;;
            *) return ;;
        esac
    fi
    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}

_trio_orch() {
    local cur prev word command="" program i
    local -a config=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    program=${COMP_WORDS[0]/#\~/$HOME}
    COMPREPLY=()
    # The command is the first word that is neither an option nor an option's value.
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --config)
                config=(--config "${COMP_WORDS[i + 1]/#\~/$HOME}")
                ((i++))
                ;;
            @VALUE_OPTIONS@) ((i++)) ;;
            -*) ;;
            *)
                command=$word
                break
                ;;
        esac
    done
    if [[ -z $command ]]; then
        case $prev in
@OPTION_VALUES@
        esac
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "@GLOBAL_OPTIONS@" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "@COMMANDS@" -- "$cur")
        fi
        return
    fi
    case $command in
@COMMAND_CASES@
    esac
}

complete -F _trio_orch trio-orch
