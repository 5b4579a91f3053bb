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


def _quote(text: str) -> str:
    """*text* inside single quotes, for both shells."""
    return "'" + text.replace("'", "'\\''") + "'"


def _short(help_text: str) -> str:
    """The help text without its "(default ...)" and after a first clause of one word (as
    in ``systemd: one unit per ...``) only the next, without characters special to zsh's
    _arguments."""
    text = re.split(r"\s*[(;]", help_text.strip(), maxsplit=1)[0]
    head, colon, rest = text.partition(":")
    if colon and " " not in head and rest.strip():
        text = f"{head} - {rest.strip().split(':')[0]}"
    else:
        text = head
    return re.sub(r"[\[\]\\`$]", "", text)


def _bash(spec: dict[str, Any]) -> dict[str, str]:
    options = spec["global_options"]
    valued = [name for name, _help, _choices, takes_value, _path in options if takes_value]
    paths = [name for name, _help, _choices, _takes_value, is_path in options if is_path]
    replies = {"|".join(paths): 'compgen -f -- "$cur"'}
    for name, _help, choices, *_ in options:
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
        words = " ".join([*(option for option, *_ in command_options), "-h", "--help"])
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
    specs = [_zsh_option(*option) for option in spec["global_options"]]
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
        words += [_zsh_option(*option) for option in command_options]
        if arguments[kind]:
            words.append(arguments[kind])
        cases.append(f"                ({name}) _arguments {' '.join(words)} ;;")
    return {
        "@COMMANDS@": "\n".join(commands),
        "@GLOBAL_SPECS@": "".join(f"        {line} \\\n" for line in specs).rstrip("\n"),
        "@COMMAND_CASES@": "\n".join(cases),
    }


def _zsh_option(name: str, help_text: str, choices: Any, takes_value: bool, is_path: bool) -> str:
    """One option for zsh's ``_arguments``: its description and what its value completes to."""
    description = f"[{_short(help_text)}]"
    if name in ("-h", "--help", "--version"):
        return _quote(f"(- *){name}{description}")
    if not takes_value:
        return _quote(f"{name}{description}")
    # --long=VALUE or --long VALUE; -n VALUE
    head = f"{name}={description}" if name.startswith("--") else f"{name}{description}"
    label = name.lstrip("-")
    if choices:
        return _quote(f"{head}:{label}:({' '.join(choices)})")
    return _quote(f"{head}:{label} file:_files" if is_path else f"{head}:{label}: ")


def script(shell: str, spec: dict[str, Any]) -> str:
    """The completion script for *shell* ("bash" or "zsh") from the CLI's *spec*."""
    text = (files("trio_orchestrator") / "templates" / f"completion.{shell}").read_text("utf-8")
    for marker, value in (_bash if shell == "bash" else _zsh)(spec).items():
        text = text.replace(marker, value)
    return text
