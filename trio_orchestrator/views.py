"""What the CLI shows about bots and where the files are, without importing trio.

``trio-orch list`` with no manager running reads the db and the config and describes the
bots from here; the running manager builds the same JSON objects with :func:`bot_info`.
Standard library and attrs only, so the offline commands start fast.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from pathlib import Path

    from trio_orchestrator.config import BotConfig
    from trio_orchestrator.runner import BotRunner
    from trio_orchestrator.state import BotRecord

__all__ = ["Paths", "bot_info", "recorded_process_alive"]


@attrs.frozen
class Paths:
    config: Path
    db: Path
    commands: Path
    socket: Path

    @classmethod
    def resolve(
        cls,
        config: Path,
        db: Path | None = None,
        commands: Path | None = None,
        socket: Path | None = None,
    ) -> Paths:
        """SPEC 2: everything beside the config by default, the socket beside the db."""
        config = config.absolute()
        db = (db or config.parent / "bot_states.db").absolute()
        return cls(
            config=config,
            db=db,
            commands=(commands or config.parent / "bot_commands.txt").absolute(),
            socket=(socket or db.parent / ".trio-orch.sock").absolute(),
        )


def bot_info(bot: BotConfig, record: BotRecord, runner: BotRunner | None = None) -> dict[str, Any]:
    """The JSON object for one bot (SPEC 6.1), from its record and live runner."""
    uptime = None
    if runner is not None and runner.pid is not None and runner.started_at is not None:
        uptime = round(time.time() - runner.started_at, 1)
    return {
        "name": bot.name,
        "state": record.state,
        "pid": record.pid,
        "start_count": record.start_count,
        "restarts": record.restarts,
        "last_exit_code": record.last_exit_code,
        "last_exit_time": record.last_exit_time,
        "last_start_time": record.last_start_time,
        "uptime": uptime,
        "description": bot.description,
        "restart": bot.restart,
        "autostart": bot.autostart,
        "preserved": record.preserved_state,
        "last_update": record.update_outcome,
        "commit": record.update_commit,
    }


def recorded_process_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether the process the db recorded still runs: same pid, same start time.

    The start time (/proc/PID/stat field 22, clock ticks since boot) tells the recorded
    process from a later one that reused its pid. A zombie has ended. Without a recorded
    start time the answer is False: a pid alone proves nothing.
    """
    if pid is None or start_ticks is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return False
    # Fields from 3 on; the command name (field 2) is in parentheses and may hold ")".
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0] != b"Z" and int(fields[19]) == start_ticks
