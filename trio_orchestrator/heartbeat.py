"""For bots: tell trio-orch's watchdog that you are alive.

A bot with ``heartbeat_timeout`` set in the config must call :func:`beat` more often than
that; a bot that does not is restarted as hung. Use it from the loop that does the real
work, so that a stuck loop stops the beats::

    from trio_orchestrator import heartbeat

    while True:
        heartbeat.beat()
        do_some_work()

The manager names the file in ``TRIO_ORCH_HEARTBEAT_FILE``; outside trio-orch (no such
variable) :func:`beat` does nothing. Standard library only, and cheap (one ``utime``).
"""

from __future__ import annotations

import os

__all__ = ["ENV_VARIABLE", "beat", "heartbeat_file"]

ENV_VARIABLE = "TRIO_ORCH_HEARTBEAT_FILE"


def heartbeat_file() -> str | None:
    """The path the manager watches, or None when not run by trio-orch."""
    return os.environ.get(ENV_VARIABLE) or None


def beat() -> None:
    """Touch the heartbeat file (create it if needed). Never raises for a file problem."""
    path = heartbeat_file()
    if path is None:
        return
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            with open(path, "ab"):
                pass
        except OSError:
            return
    except OSError:
        return
