"""Exceptions that reach the user as one line and a documented exit code.

Exit codes (SPEC 6.1): 0 success, 1 the action failed, 2 unknown bot or bad usage
(including an invalid config), 3 no manager is running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "EXIT_ACTION_FAILED",
    "EXIT_NO_MANAGER",
    "EXIT_OK",
    "EXIT_USAGE",
    "ActionFailed",
    "ConfigError",
    "ConfigErrors",
    "ManagerNotRunning",
    "ManagerRunning",
    "OrchestratorError",
    "StateError",
    "UnknownBotError",
]

EXIT_OK = 0
EXIT_ACTION_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_MANAGER = 3


class OrchestratorError(Exception):
    """Base class: ``str(exc)`` is the whole message, ``exit_code`` the process status."""

    exit_code = EXIT_ACTION_FAILED


class ConfigError(OrchestratorError):
    """The configuration file is missing or invalid: one line naming the file, bot and key.

    ``warnings`` holds the warnings found before the error (unknown keys, often the
    typo behind it); the CLI prints them with the error.
    """

    exit_code = EXIT_USAGE

    def __init__(self, path: object, message: str, bot: str | None = None, key: str | None = None):
        self.path = path
        self.bot = bot
        self.key = key
        # One line per error: a YAML problem or an OSError text may span lines.
        self.message = " ".join(message.splitlines())
        self.warnings: tuple[str, ...] = ()
        where = [str(path)]
        if bot is not None:
            where.append(f"bot {bot!r}")
        if key is not None:
            where.append(f"key {key!r}")
        super().__init__(f"config error: {', '.join(where)}: {self.message}")

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """Every error found in the file (see :class:`ConfigErrors`)."""
        return (self,)


class ConfigErrors(ConfigError):
    """Several errors in one configuration file, reported at once, one line each."""

    def __init__(self, errors: Sequence[ConfigError]):
        self._errors = tuple(errors)
        self.path = self._errors[0].path
        self.bot = self.key = None
        self.message = "\n".join(str(error) for error in self._errors)
        self.warnings = ()
        OrchestratorError.__init__(self, self.message)

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return self._errors


class UnknownBotError(OrchestratorError):
    """A command named a bot that the config does not define.

    Args:
        name: the name as given.
        known: the configured names, listed in the message so the user can fix a typo.
    """

    exit_code = EXIT_USAGE

    def __init__(self, name: str, known: Iterable[str] | None = None):
        self.name = name
        self.known = tuple(known) if known is not None else None
        if self.known is None:
            hint = ""
        elif self.known:
            hint = f" (known bots: {', '.join(self.known)})"
        else:
            hint = " (the config defines no bots)"
        super().__init__(f"unknown bot {name!r}{hint}")


class ActionFailed(OrchestratorError):
    """A command was understood but could not be carried out (e.g. stop a stopped bot)."""

    exit_code = EXIT_ACTION_FAILED


class ManagerRunning(OrchestratorError):
    """Another manager already owns the state database."""

    exit_code = EXIT_ACTION_FAILED

    def __init__(self, db_path: object, pid: int | None):
        self.pid = pid
        owner = f"pid {pid}" if pid else "another process"
        super().__init__(f"a manager ({owner}) is already running on {db_path}")


class ManagerNotRunning(OrchestratorError):
    """Nothing answers on the control socket.

    Args:
        socket_path: where the manager was looked for.
        start_command: the command that starts one, suggested in the message.
    """

    exit_code = EXIT_NO_MANAGER

    def __init__(self, socket_path: object, start_command: str = "trio-orch start_all"):
        self.socket_path = socket_path
        self.start_command = start_command
        super().__init__(
            f"no manager is running (no answer on {socket_path}); start one with `{start_command}`"
        )


class StateError(OrchestratorError):
    """The state database cannot be opened, read or written.

    ``transient`` is True for failures worth retrying later (a lock held by another
    process, a full disk, an I/O error), False for a corrupt or unusable database.
    """

    exit_code = EXIT_ACTION_FAILED

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient
