"""The per-process watchdog: is a running bot hung (no heartbeat) or over its memory?

Synchronous checks on files and /proc, called by the runner through ``trio.to_thread``
every :data:`CHECK_INTERVAL` seconds while the process runs (only for bots with
``heartbeat_timeout`` or ``max_memory``). A verdict makes the runner end the process as a
failure with the reason ``hung`` or ``memory``; the restart policy decides what follows.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

import attrs

from trio_orchestrator.procfs import group_rss_bytes

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from trio_orchestrator.config import BotConfig

__all__ = ["CHECK_INTERVAL", "Verdict", "Watchdog", "format_bytes", "touch"]

CHECK_INTERVAL = 1.0


@attrs.frozen
class Verdict:
    reason: str  # "hung" or "memory": a StopReason value
    detail: str  # e.g. "no heartbeat for 3.2s (heartbeat_timeout 2s)"


def format_bytes(count: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def touch(path: Path) -> None:
    """Create or touch the heartbeat file (its directory too): the start of the grace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab"):
        pass
    os.utime(path)


@attrs.define
class Watchdog:
    """Checks one process (group) of a bot; :meth:`restart_clock` at start and resume.

    Args:
        heartbeat_file: the file the bot touches; None when the bot has no timeout.
        heartbeat_timeout: seconds without a touch after which the bot is hung.
        heartbeat_grace: seconds after a start or resume before the first check.
        max_memory: bytes of RSS the bot's process group may use; None for no limit.
        rss: the group RSS reader (a fake in tests).
        clock: wall clock (file times are wall-clock times).
    """

    heartbeat_file: Path | None
    heartbeat_timeout: float | None
    heartbeat_grace: float
    max_memory: int | None
    rss: Callable[[int], int] = group_rss_bytes
    clock: Callable[[], float] = time.time
    since: float = attrs.field(init=False, default=0.0)

    @classmethod
    def for_bot(cls, bot: BotConfig, heartbeat_file: Path | None) -> Watchdog | None:
        """A watchdog for *bot*, or None when it has neither a timeout nor a limit."""
        timeout = bot.heartbeat_timeout if heartbeat_file is not None else None
        if timeout is None and bot.max_memory is None:
            return None
        grace = bot.heartbeat_grace if bot.heartbeat_grace is not None else timeout or 0.0
        return cls(heartbeat_file, timeout, grace, bot.max_memory)

    def restart_clock(self) -> None:
        """The process (re)started or was resumed: the grace period begins now."""
        self.since = self.clock()

    def check(self, pgid: int) -> Verdict | None:
        """Blocking (a stat and a /proc scan): run it in a worker thread."""
        return self._check_heartbeat() or self._check_memory(pgid)

    def _check_heartbeat(self) -> Verdict | None:
        if self.heartbeat_timeout is None or self.heartbeat_file is None:
            return None
        now = self.clock()
        if now - self.since < self.heartbeat_grace:
            return None
        last = self.since
        with contextlib.suppress(OSError):
            last = max(last, os.stat(self.heartbeat_file).st_mtime)
        silent = now - last
        if silent <= self.heartbeat_timeout:
            return None
        limit = f"heartbeat_timeout {self.heartbeat_timeout:g}s"
        return Verdict("hung", f"no heartbeat for {silent:.1f}s ({limit})")

    def _check_memory(self, pgid: int) -> Verdict | None:
        if self.max_memory is None:
            return None
        used = self.rss(pgid)
        if used <= self.max_memory:
            return None
        return Verdict(
            "memory", f"uses {format_bytes(used)}, over max_memory {format_bytes(self.max_memory)}"
        )
