"""No escaped grandchildren: the manager adopts, reaps and ends what its bots leave behind.

A bot's descendant that double-forks or calls ``setsid`` leaves the bot's process group,
so stopping the group does not reach it, and once its parent exits it is reparented, by
default to init. Here:

- :func:`become_subreaper` makes the manager a child subreaper
  (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux): such orphans are reparented to it instead.
- :class:`Reaper` reaps them when they exit (woken by SIGCHLD, and every
  :data:`SCAN_INTERVAL` seconds), so zombies never pile up. It never reaps a child that a
  spawn of ours waits for (:mod:`trio_orchestrator.children`): only zombies that are
  nobody's. It logs each adopted orphan once, named after its bot.
- :func:`end_escaped` ends, after each exit of a bot's process, the processes that still
  carry the bot's tags in their environment (``TRIO_ORCH_BOT`` and ``TRIO_ORCH_DB``):
  SIGTERM, ``stop_timeout``, SIGKILL. That is how an escaped daemon is attributed to its
  bot and goes when the bot stops, adopted or not.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_orchestrator.children import CHILDREN
from trio_orchestrator.procfs import (
    child_processes,
    proc_stat_fields,
    process_environ,
    process_start_ticks,
    tagged_processes,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SCAN_INTERVAL", "Reaper", "become_subreaper", "end_escaped", "owned_spawn"]

LOGGER = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
SCAN_INTERVAL = 1.0
ESCAPED_POLL_SECONDS = 0.05
_BOT_PREFIX = b"TRIO_ORCH_BOT="


def become_subreaper() -> bool:
    """Make this process a child subreaper; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        LOGGER.warning("cannot become a child subreaper (%s): orphans go to init", exc)
        return False
    return True


def owned_spawn(spawn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``trio.run_process`` (or a fake) so its child is registered as ours from the
    moment it exists until it is reaped: the reaper then leaves it to trio."""

    async def spawn_owned(*args: Any, task_status: Any = trio.TASK_STATUS_IGNORED, **kw: Any):
        status = _OwningStatus(task_status)
        try:
            return await spawn(*args, task_status=status, **kw)
        finally:
            status.release()

    return spawn_owned


class _OwningStatus:
    """The task status handed to a spawn: owns the child from its start to its reaping.

    A class of its own, not one made per spawn: a class object costs a few KiB, and every
    running bot holds its spawn's status.
    """

    __slots__ = ("_pid", "_spawning", "_task_status")

    def __init__(self, task_status: Any):
        self._task_status = task_status
        self._pid: int | None = None
        self._spawning = True
        CHILDREN.begin_spawn()

    def started(self, process: Any = None) -> None:
        self._pid = process.pid
        CHILDREN.own(self._pid)
        self._done_spawning()
        self._task_status.started(process)

    def release(self) -> None:
        """The spawn has returned (the child is reaped) or failed."""
        self._done_spawning()
        if self._pid is not None:
            CHILDREN.release(self._pid)

    def _done_spawning(self) -> None:
        if self._spawning:
            self._spawning = False
            CHILDREN.end_spawn()


def _bot_of(pid: int) -> str | None:
    variables = process_environ(pid) or []
    name = next((v[len(_BOT_PREFIX) :] for v in variables if v.startswith(_BOT_PREFIX)), None)
    return None if name is None else name.decode(errors="replace")


def _look(
    waited_for: frozenset[int], adopted: frozenset[int]
) -> tuple[list[int], list[tuple[int, str | None]]]:
    """Our zombie children, and the live ones with the bot they came from (blocking).

    Children somebody waits for (the bots) are not looked at, nor is the environment of
    an orphan already adopted: with 100 bots, reading each one's ``/proc`` files every
    second cost the idle manager 1 % of a core.
    """
    zombies, alive = [], []
    for pid, is_zombie in child_processes(waited_for):
        if is_zombie:
            zombies.append(pid)
        else:
            alive.append((pid, None if pid in adopted else _bot_of(pid)))
    return zombies, alive


@attrs.define(eq=False)
class Reaper:
    """Reaps the orphans the manager adopts as a subreaper.

    Args:
        main_pids: the bots' current main processes (never reported as adopted).
    """

    main_pids: Callable[[], set[int]] = set
    reaped: int = attrs.field(init=False, default=0)
    _adopted: dict[int, str] = attrs.field(init=False, factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Reap adopted orphans until cancelled (must run in the main thread: SIGCHLD).

        **Cancellation:** stops reaping; zombies left then go to init with the manager.
        """
        with trio.open_signal_receiver(signal.SIGCHLD) as sigchld:
            task_status.started()
            while True:
                await self.reap_once()
                with trio.move_on_after(SCAN_INTERVAL):
                    await sigchld.__anext__()

    async def reap_once(self) -> int:
        """Reap every zombie child that is nobody's; return how many.

        **Cancellation:** may be cancelled only while it looks (in a worker thread, not
        abandoned); nothing is reaped then.
        """
        mark = CHILDREN.mark()
        waited_for = CHILDREN.owned() | self.main_pids()
        zombies, alive = await trio.to_thread.run_sync(_look, waited_for, frozenset(self._adopted))
        self._note_adopted(alive)
        count = 0
        for pid in zombies:
            if not CHILDREN.may_reap(pid, mark):
                continue
            if _reap(pid):
                count += 1
                bot = self._adopted.pop(pid, None)
                LOGGER.debug("reaped orphan %d%s", pid, f" of {bot}" if bot else "")
        self.reaped += count
        return count

    def _note_adopted(self, alive: list[tuple[int, str | None]]) -> None:
        for pid, bot in alive:
            if pid in self._adopted or bot is None:
                continue
            self._adopted[pid] = bot
            LOGGER.info("adopted pid %d, a descendant of %s whose parent exited", pid, bot)
        living = {pid for pid, _ in alive}
        for pid in [pid for pid in self._adopted if pid not in living]:
            del self._adopted[pid]


async def end_escaped(db_tag: str, bot: str, grace: float) -> list[int]:
    """End the processes still tagged as *bot*'s (after its process and group are gone):
    SIGTERM, up to *grace* s, SIGKILL. Returns their pids.

    Identified by pid and start time: a pid reused meanwhile is never signalled.

    **Cancellation:** leaves the rest as they are.
    """
    found = await trio.to_thread.run_sync(tagged_processes, db_tag, bot)
    if not found:
        return []
    pids = [pid for pid, _ in found]
    LOGGER.warning(
        "%s left %d processes outside its group (pids %s): ending them",
        bot,
        len(pids),
        ", ".join(map(str, pids)),
    )
    _signal_all(found, signal.SIGCONT)
    _signal_all(found, signal.SIGTERM)
    with trio.move_on_after(grace):
        # Polling: these are not our children (or not only), so no exit event to wait for.
        while await trio.to_thread.run_sync(_any_alive, found):  # noqa: ASYNC110
            await trio.sleep(ESCAPED_POLL_SECONDS)
        return pids
    _signal_all(found, signal.SIGKILL)
    return pids


def _reap(pid: int) -> bool:
    """Reap zombie *pid* (WNOHANG: never blocks)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False


def _same_process(pid: int, start_ticks: int) -> bool:
    return process_start_ticks(pid) == start_ticks


def _any_alive(found: list[tuple[int, int]]) -> bool:
    return any(_same_process(pid, ticks) and not _is_zombie(pid) for pid, ticks in found)


def _is_zombie(pid: int) -> bool:
    fields = proc_stat_fields(pid)
    return fields is None or fields[0] == b"Z"


def _signal_all(found: list[tuple[int, int]], sig: int) -> None:
    for pid, ticks in found:
        if _same_process(pid, ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
