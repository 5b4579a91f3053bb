"""Shell completion scripts for ``trio-orch completion bash|zsh``.

The scripts are templates shipped in ``templates/``; the commands and options are filled in
from the CLI's own tables, so a new command completes without editing shell code. Bot
names are not baked in: the scripts ask ``trio-orch [--config P] _bots`` while completing,
so they follow the config as it changes.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

__all__ = ["script"]

# Option values that name files, and what each kind of argument completes to.
_PATH_OPTIONS = ("--config", "--commands", "--db", "--socket")


def _quote(text: str) -> str:
    """*text* inside single quotes, for both shells."""
    return "'" + text.replace("'", "'\\''") + "'"


def _short(help_text: str) -> str:
    """The help text's first clause, without characters special to zsh's _arguments."""
    text = re.split(r"[(:;]", help_text, maxsplit=1)[0].strip()
    return re.sub(r"[\[\]\\`$]", "", text)


def _bash(spec: dict[str, Any]) -> dict[str, str]:
    options = spec["global_options"]
    valued = [name for name, _help, _choices, takes_value in options if takes_value]
    replies = {"|".join(name for name in valued if name in _PATH_OPTIONS): 'compgen -f -- "$cur"'}
    for name, _help, choices, _takes_value in options:
        if choices:
            replies[name] = f'compgen -W "{" ".join(choices)}" -- "$cur"'
    values = [
        f"            {pattern})\n"
        f"                mapfile -t COMPREPLY < <({reply})\n"
        f"                return\n"
        f"                ;;"
        for pattern, reply in replies.items()
    ]
    cases = []
    for name, _summary, kind, command_options in spec["commands"]:
        words = " ".join([*command_options, "-h", "--help"])
        cases.append(f'        {name}) _trio_orch_reply "{words}" {kind or "none"} ;;')
    return {
        "@SHELLS@": " ".join(spec["shells"]),
        "@VALUE_OPTIONS@": "|".join(name for name in valued if name != "--config") or "--",
        "@OPTION_VALUES@": "\n".join(values),
        "@GLOBAL_OPTIONS@": " ".join(name for name, *_ in options),
        "@COMMANDS@": " ".join(name for name, *_ in spec["commands"]),
        "@COMMAND_CASES@": "\n".join(cases),
    }


def _zsh(spec: dict[str, Any]) -> dict[str, str]:
    specs = []
    for name, help_text, choices, takes_value in spec["global_options"]:
        description = f"[{_short(help_text)}]"
        if name in ("-h", "--help", "--version"):
            specs.append(_quote(f"(- *){name}{description}"))
        elif not takes_value:
            specs.append(_quote(f"{name}{description}"))
        elif choices:
            specs.append(_quote(f"{name}={description}:{name[2:]}:({' '.join(choices)})"))
        else:
            specs.append(_quote(f"{name}={description}:{name[2:]} file:_files"))
    commands = [
        "        " + _quote(f"{name}:{_short(summary)}") for name, summary, *_ in spec["commands"]
    ]
    arguments = {
        "bots": "'*:bot:_trio_orch_bots'",
        "shells": _quote(f"1:shell:({' '.join(spec['shells'])})"),
        "directories": "'1:directory:_directories'",
        None: "",
    }
    cases = []
    for name, _summary, kind, command_options in spec["commands"]:
        words = ["'(- *)'{-h,--help}'[show the help]'"]
        words += [_quote(f"{option}[print JSON]") for option in command_options]
        if arguments[kind]:
            words.append(arguments[kind])
        cases.append(f"                ({name}) _arguments {' '.join(words)} ;;")
    return {
        "@COMMANDS@": "\n".join(commands),
        "@GLOBAL_SPECS@": "".join(f"        {line} \\\n" for line in specs).rstrip("\n"),
        "@COMMAND_CASES@": "\n".join(cases),
    }


def script(shell: str, spec: dict[str, Any]) -> str:
    """The completion script for *shell* ("bash" or "zsh") from the CLI's *spec*."""
    text = (files("trio_orchestrator") / "templates" / f"completion.{shell}").read_text("utf-8")
    for marker, value in (_bash if shell == "bash" else _zsh)(spec).items():
        text = text.replace(marker, value)
    return text
