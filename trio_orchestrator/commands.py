"""The command language shared by the command file and the control socket.

Pure: no I/O. Both transports parse into a :class:`Command` and go through the same
dispatch in the supervisor, so `echo "stop X" >> bot_commands.txt` and `trio-orch stop X`
behave identically.
"""

from __future__ import annotations

import enum

import attrs

from trio_orchestrator.errors import OrchestratorError

__all__ = ["ALL", "Action", "BadCommand", "Command", "parse_command"]

MAX_COMMAND_LENGTH = 4096
ALL = "all"  # as a bot name: every configured bot


class Action(enum.Enum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    UPDATE = "update"
    STATUS = "status"
    HISTORY = "history"
    STATUS_ALL = "status_all"
    LIST = "list"
    RELOAD = "reload"
    METRICS = "metrics"

    @property
    def arity(self) -> str:
        """How many bot names the action takes: "many" (or `all`), "one" or "none"."""
        return _ARITY.get(self, "none")

    @property
    def needs_bot(self) -> bool:
        return self.arity != "none"


_ARITY = {
    **dict.fromkeys(
        (Action.START, Action.STOP, Action.RESTART, Action.PAUSE, Action.RESUME, Action.UPDATE),
        "many",
    ),
    Action.STATUS: "one",
    Action.HISTORY: "one",
}


class BadCommand(OrchestratorError):
    """A command line that cannot be parsed (exit code 2: bad usage)."""

    exit_code = 2


def _as_names(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """One name or several (``Command(Action.STOP, "X")`` reads as it should)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class Command:
    """An action and the bots it names (``("all",)`` for every bot)."""

    action: Action
    names: tuple[str, ...] = attrs.field(default=(), converter=_as_names)
    # How many entries a query returns (`history -n N`); None: its default.
    limit: int | None = attrs.field(default=None, kw_only=True)

    @property
    def name(self) -> str | None:
        """The one bot of a single-bot command."""
        return self.names[0] if self.names else None

    @property
    def is_all(self) -> bool:
        return ALL in self.names

    def __str__(self) -> str:
        return " ".join((self.action.value, *self.names))

    @classmethod
    def build(cls, action: Action, names: list[str] | tuple[str, ...]) -> Command:
        """Check *names* against the action's arity.

        Raises:
            BadCommand: a name missing or too many.
        """
        arity = action.arity
        if arity == "none":
            return cls(action)
        if not names:
            raise BadCommand(f"{action.value!r} needs a bot name")
        if arity == "one" and len(names) > 1:
            raise BadCommand(f"{action.value!r} takes one bot name, got {len(names)} words")
        return cls(action, names)


def parse_command(line: str) -> Command | None:
    """Parse one command-file line; ``None`` for blank lines and ``#`` comments.

    ``status_all`` and ``list`` ignore any further tokens (the original required a dummy
    second token; we accept both forms). Actions on bots take one or more names or ``all``.

    Raises:
        BadCommand: unknown action, missing bot name, or extra tokens.
    """
    text = line.partition("#")[0].strip()  # a bot name never holds '#': the rest is a comment
    if not text:
        return None
    if len(text) > MAX_COMMAND_LENGTH:
        raise BadCommand(f"command longer than {MAX_COMMAND_LENGTH} characters")
    words = text.split()
    try:
        action = Action(words[0].lower())
    except ValueError:
        raise BadCommand(f"unknown action {words[0]!r}") from None
    return Command.build(action, words[1:])
