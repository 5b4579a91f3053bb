"""Where the manager's files are, and how a bot is shown: no trio, no SQLite.

The CLI's offline commands (``list`` without a running manager) use these without
importing trio, so they start as fast as the commands that ask the manager.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

import attrs

from trio_orchestrator.procfs import proc_stat_fields

if TYPE_CHECKING:
    from pathlib import Path

    from trio_orchestrator.config import BotConfig
    from trio_orchestrator.state import BotRecord

__all__ = ["Paths", "bot_info", "iso_time", "one_line_status", "recorded_process_alive"]


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


def iso_time(timestamp: float | None) -> str | None:
    """A wall-clock time as ``state.now_iso()`` writes it: local, with its UTC offset."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return moment.isoformat(timespec="milliseconds")


def bot_info(
    bot: BotConfig,
    record: BotRecord,
    started_at: float | None = None,
    next_restart: float | None = None,
) -> dict[str, Any]:
    """The JSON object for one bot (SPEC 6.1), from its record and, for a running bot,
    the wall-clock time its process started (and, in backoff, that of its next start)."""
    uptime = None if started_at is None else round(time.time() - started_at, 1)
    return {
        "name": bot.name,
        "state": record.state,
        "pid": record.pid,
        "start_count": record.start_count,
        "restarts": record.restarts,
        "last_exit_code": record.last_exit_code,
        "last_exit_reason": record.last_exit_reason,
        "last_exit_time": record.last_exit_time,
        "last_start_time": record.last_start_time,
        "uptime": uptime,
        "next_restart": iso_time(next_restart) if record.state == "backoff" else None,
        "description": bot.description,
        "restart": str(bot.restart),
        "autostart": bot.autostart,
        "preserved": record.preserved_state,
        "last_update": record.update_outcome,
        "commit": record.update_commit,
        # Filled in by a running manager's sampler (issue 15).
        "cpu_percent": None,
        "memory_bytes": None,
        "processes": None,
    }


def one_line_status(info: dict[str, Any]) -> str:
    pid = info["pid"] if info["pid"] is not None else "-"
    return (
        f"{info['name']}: {info['state']} pid={pid} starts={info['start_count']} "
        f"restarts={info['restarts']} last_exit={info['last_exit_code']}"
    )


def recorded_process_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether the process the db recorded still runs: same pid, same start time.

    The start time (/proc/PID/stat field 22, clock ticks since boot) tells the recorded
    process from a later one that reused its pid. A zombie has ended. Without a recorded
    start time the answer is False: a pid alone proves nothing.
    """
    if pid is None or start_ticks is None:
        return False
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] != b"Z" and int(fields[19]) == start_ticks
