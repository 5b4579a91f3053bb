#compdef trio-orch
# zsh completion for trio-orch (printed by `trio-orch completion zsh`).
# This shell:   source <(trio-orch completion zsh)
# For good:     trio-orch completion zsh > "${fpath[1]}/_trio-orch"   (then start a new zsh)
# Bot names are read from the config at completion time (`trio-orch [--config P] _bots`).

_trio_orch_bots() {
    local -a bots
    bots=(${(f)"$("${program}" "${config[@]}" _bots 2>/dev/null)"})
    _describe -t bots 'bot' bots
}

_trio_orch() {
    local curcontext=$curcontext state state_descr line program=${words[1]/#\~/$HOME}
    local -A opt_args
    local -a config commands
    commands=(
@COMMANDS@
    )
    _arguments -C \
@GLOBAL_SPECS@
        '1:command:->command' \
        '*::argument:->argument'
    case $state in
        command)
            _describe -t commands 'trio-orch command' commands
            ;;
        argument)
            if [[ -n ${opt_args[--config]} ]]; then
                config=(--config "${${(Q)opt_args[--config]}/#\~/$HOME}")
            fi
            case ${words[1]} in
@COMMAND_CASES@
            esac
            ;;
    esac
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _trio_orch "$@" # autoloaded from $fpath
else
    compdef _trio_orch trio-orch # sourced
fi
