"""After a manager died without shutting down: end the bots it left behind.

Two kinds of orphan: bots whose pid the db recorded (identified by pid *and* process start
time, so a reused pid is never signalled), and bots a manager spawned but died before
recording, found by the tag every bot carries in its environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

import attrs
import trio

from trio_orchestrator.procfs import process_start_ticks, tagged_group_leaders
from trio_orchestrator.runner import BotState, terminate_group
from trio_orchestrator.state import BotRecord, Write, records_for

if TYPE_CHECKING:
    from pathlib import Path

    from trio_orchestrator.config import Config

__all__ = [
    "DB_TAG_VARIABLE",
    "end_orphans",
    "kill_orphan_group",
    "reset_records",
    "restored_state",
]

LOGGER = logging.getLogger("trio_orchestrator")

# Set in every bot's environment to the db's path: how the next manager of this db finds
# bots whose pid a killed manager had not recorded yet.
DB_TAG_VARIABLE = "TRIO_ORCH_DB"
_UP_STATES = {state.value for state in BotState if state.is_up} | {BotState.BACKOFF.value}


async def kill_orphan_group(pid: int, start_ticks: int | None, grace: float) -> bool:
    """End a bot left running by a dead manager, if *pid* is still that bot.

    The identity check (same start time, and still leading its own process group) comes
    before any signal, so a pid reused by an unrelated process is never touched.

    **Cancellation:** leaves the group as it is at that moment.
    """
    if start_ticks is None or process_start_ticks(pid) != start_ticks:
        return False
    try:
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    await terminate_group(pid, grace)
    return True


async def end_orphans(config: Config, db_path: Path, stored: dict[str, BotRecord]) -> None:
    """End every bot of this db that a dead manager left running, in parallel.

    **Cancellation:** leaves the remaining orphans running.
    """

    async def end(name: str, pid: int, start_ticks: int | None, why: str) -> None:
        bot = config.bots.get(name)
        grace = bot.stop_timeout if bot else config.settings.stop_timeout
        if await kill_orphan_group(pid, start_ticks, grace):
            LOGGER.warning("ended %s (pid %d), %s", name, pid, why)

    recorded = [record for record in stored.values() if record.pid is not None]
    tag = f"{DB_TAG_VARIABLE}={db_path}"
    recorded_pids = {record.pid for record in recorded}
    untracked = [
        leader
        for leader in await trio.to_thread.run_sync(tagged_group_leaders, tag)
        if leader[0] not in recorded_pids
    ]
    async with trio.open_nursery() as nursery:
        for record in recorded:
            why = "left running by a manager that did not shut down"
            nursery.start_soon(end, record.name, record.pid, record.pid_start_ticks, why)
        for pid, start_ticks, name in untracked:
            why = "started by a manager that died before recording it"
            nursery.start_soon(end, name, pid, start_ticks, why)


def reset_records(
    config: Config, stored: dict[str, BotRecord]
) -> tuple[dict[str, BotRecord], list[Write]]:
    """Every configured bot's record with a dead manager's pids and up-states cleared.

    Returns the records and the writes that make the db say the same.
    """
    records = records_for(config.bots, stored)
    writes = []
    for name, stale in records.items():
        if stale.pid is not None or stale.state in _UP_STATES:
            record = attrs.evolve(stale, pid=None, pid_start_ticks=None, state="stopped")
            writes.append(Write(record, "recovered", "manager had died"))
            records[name] = record
    return records, writes


def restored_state(record: BotRecord) -> BotState:
    """The runner state a record stands for (an unknown word in the db: ``stopped``)."""
    with contextlib.suppress(ValueError):
        return BotState(record.state)
    return BotState.STOPPED
