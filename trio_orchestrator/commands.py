"""The command language shared by the command file and the control socket.

Pure: no I/O. Both transports parse into a :class:`Command` and go through the same
dispatch in the supervisor, so `echo "stop X" >> bot_commands.txt` and `trio-orch stop X`
behave identically.
"""

from __future__ import annotations

import enum

import attrs

from trio_orchestrator.errors import OrchestratorError

__all__ = ["Action", "BadCommand", "Command", "parse_command"]

MAX_COMMAND_LENGTH = 4096


class Action(enum.Enum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    UPDATE = "update"
    STATUS = "status"
    STATUS_ALL = "status_all"
    LIST = "list"

    @property
    def needs_bot(self) -> bool:
        return self not in (Action.STATUS_ALL, Action.LIST)


class BadCommand(OrchestratorError):
    """A command line that cannot be parsed (exit code 2: bad usage)."""

    exit_code = 2


@attrs.frozen
class Command:
    action: Action
    name: str | None = None

    def __str__(self) -> str:
        return self.action.value if self.name is None else f"{self.action.value} {self.name}"


def parse_command(line: str) -> Command | None:
    """Parse one command-file line; ``None`` for blank lines and ``#`` comments.

    ``status_all`` and ``list`` ignore any further tokens (the original required a dummy
    second token; we accept both forms).

    Raises:
        BadCommand: unknown action, missing bot name, or extra tokens.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if len(text) > MAX_COMMAND_LENGTH:
        raise BadCommand(f"command longer than {MAX_COMMAND_LENGTH} characters")
    words = text.split()
    try:
        action = Action(words[0].lower())
    except ValueError:
        raise BadCommand(f"unknown action {words[0]!r}") from None
    if not action.needs_bot:
        return Command(action)
    if len(words) < 2:
        raise BadCommand(f"{action.value!r} needs a bot name")
    if len(words) > 2:
        raise BadCommand(f"{action.value!r} takes one bot name, got {len(words) - 1} words")
    return Command(action, words[1])
