"""CPU and memory of each bot's process group, read from /proc by one sampler task.

The scan (:func:`scan_groups`) is pure synchronous /proc reading; :class:`UsageTracker`
turns successive scans into per-bot figures (CPU % over the last interval, a monotonic CPU
seconds counter, resident memory, process count); :class:`Sampler` runs the scan in a
worker thread every :data:`SAMPLE_SECONDS`, but only while someone wants the figures: a
metrics listener is configured, something registered a standing need
(:meth:`Sampler.keep_sampling`, e.g. a memory limit), or a ``list``/``status``/``metrics``
request came in during the last :data:`LINGER_SECONDS`. Otherwise it sleeps on an event and
costs nothing.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_orchestrator.procfs import proc_stat_fields

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

__all__ = [
    "SAMPLE_SECONDS",
    "BotUsage",
    "GroupUsage",
    "ManagerUsage",
    "Sampler",
    "UsageTracker",
    "read_manager_usage",
    "scan_groups",
]

SAMPLE_SECONDS = 3.0
# After a look (`list`, `status`, `metrics`, the status page), keep sampling this long, so
# that `watch trio-orch list` gets figures over one interval each time.
LINGER_SECONDS = 60.0
# The first look after an idle spell has no earlier sample to measure CPU against: it takes
# two samples this far apart (the request waits for them).
FIRST_WINDOW_SECONDS = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Indexes into proc_stat_fields(), which starts at field 3 of /proc/PID/stat.
_PGRP = 5 - 3
_UTIME, _STIME, _CUTIME, _CSTIME = 14 - 3, 15 - 3, 16 - 3, 17 - 3
_STARTTIME = 22 - 3
_RSS = 24 - 3


@attrs.frozen
class GroupUsage:
    """One process group at one moment."""

    cpu_ticks: int  # utime+stime of live members, plus cutime+cstime of their reaped children
    rss_bytes: int
    processes: int


@attrs.frozen
class BotUsage:
    """What ``list``/``status`` and the metrics show for one bot's process group."""

    cpu_percent: float | None  # of one core, over the last sampling interval
    memory_bytes: int
    processes: int
    cpu_seconds: float  # since the manager started sampling this bot; never decreases

    def as_info(self) -> dict[str, Any]:
        cpu = None if self.cpu_percent is None else round(self.cpu_percent, 1)
        return {"cpu_percent": cpu, "memory_bytes": self.memory_bytes, "processes": self.processes}


NOT_SAMPLED: dict[str, Any] = {"cpu_percent": None, "memory_bytes": None, "processes": None}


def _pids() -> list[str]:
    try:
        return [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def scan_groups(pgids: Collection[int]) -> dict[int, GroupUsage]:
    """One pass over /proc: CPU ticks, resident bytes and live members of each group.

    Groups without a live (non-zombie) member are left out. Blocking for a few ms on a busy
    machine: call it in a worker thread.
    """
    wanted = set(pgids)
    ticks: dict[int, int] = {}
    pages: dict[int, int] = {}
    count: dict[int, int] = {}
    if not wanted:
        return {}
    for pid in _pids():
        fields = proc_stat_fields(pid)
        if fields is None or fields[0] == b"Z":
            continue
        pgid = int(fields[_PGRP])
        if pgid not in wanted:
            continue
        used = sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))
        ticks[pgid] = ticks.get(pgid, 0) + used
        pages[pgid] = pages.get(pgid, 0) + int(fields[_RSS])
        count[pgid] = count.get(pgid, 0) + 1
    return {pgid: GroupUsage(ticks[pgid], pages[pgid] * PAGE_SIZE, count[pgid]) for pgid in count}


@attrs.define
class UsageTracker:
    """Turns successive scans into per-bot figures. Pure: the caller gives the time."""

    figures: dict[str, BotUsage] = attrs.Factory(dict)
    # name -> (pgid, ticks of that group at the last scan, monotonic time of the scan)
    _last: dict[str, tuple[int, int, float]] = attrs.Factory(dict)
    _base: dict[str, int] = attrs.Factory(dict)  # ticks of the bot's earlier groups
    _totals: dict[str, int] = attrs.Factory(dict)  # the counter, in ticks

    def update(
        self, groups: dict[str, int], scan: dict[int, GroupUsage], now: float
    ) -> dict[str, BotUsage]:
        """Record a scan of *groups* (bot name -> pgid) taken at *now*; the new figures."""
        figures = {}
        for name in set(self._last) - set(groups):
            self._end_group(name)
        for name, pgid in groups.items():
            usage = scan.get(pgid)
            last = self._last.get(name)
            if last is not None and last[0] != pgid:
                self._end_group(name)
                last = None
            if usage is None:  # the group has just ended
                if last is not None:
                    self._end_group(name)
                continue
            base = self._base.get(name, 0)
            total = base + usage.cpu_ticks
            previous_total = self._totals.get(name, 0)
            if total < previous_total:
                # A member ended unseen by the group (reaped by init): keep counting up.
                self._base[name] = base = base + previous_total - total
                total = previous_total
            self._totals[name] = total
            percent = None
            if last is not None and now > last[2]:
                used = max(0, usage.cpu_ticks - last[1]) / CLOCK_TICKS
                percent = 100.0 * used / (now - last[2])
            self._last[name] = (pgid, usage.cpu_ticks, now)
            figures[name] = BotUsage(percent, usage.rss_bytes, usage.processes, total / CLOCK_TICKS)
        self.figures = figures
        return figures

    def _end_group(self, name: str) -> None:
        _pgid, ticks, _ = self._last.pop(name)
        self._base[name] = self._base.get(name, 0) + ticks

    def cpu_seconds(self, name: str) -> float:
        """The bot's CPU seconds counter (0 if never sampled)."""
        return self._totals.get(name, 0) / CLOCK_TICKS


@attrs.frozen
class ManagerUsage:
    cpu_seconds: float
    memory_bytes: int
    open_fds: int
    start_time: float  # Unix time
    uptime: float


def read_manager_usage(pid: int | None = None) -> ManagerUsage:
    """The manager's own CPU seconds (utime+stime), resident bytes, open fds and age.

    Reads /proc/PID (this process by default); call it in a worker thread.
    """
    pid = os.getpid() if pid is None else pid
    fields = proc_stat_fields(pid) or []
    cpu = (int(fields[_UTIME]) + int(fields[_STIME])) / CLOCK_TICKS if fields else 0.0
    rss = int(fields[_RSS]) * PAGE_SIZE if fields else 0
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = 0
    started = int(fields[_STARTTIME]) / CLOCK_TICKS if fields else 0.0
    now = time.time()
    uptime = max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    return ManagerUsage(cpu, rss, fds, now - uptime, uptime)


@attrs.define(eq=False)
class Sampler:
    """Samples the bots' process groups while someone wants the figures.

    Args:
        groups: returns the bots that have a process now, name -> process group id.
        interval: seconds between samples.
        linger: seconds a look keeps the sampler going.
        scan: :func:`scan_groups` or a fake, called in a worker thread.
        in_thread: ``trio.to_thread.run_sync``, or a direct call for fake-clock tests.
    """

    groups: Callable[[], dict[str, int]]
    interval: float = SAMPLE_SECONDS
    linger: float = LINGER_SECONDS
    scan: Callable[[Collection[int]], dict[int, GroupUsage]] = scan_groups
    # How the scan gets off the event loop (tests with a fake clock call it directly).
    in_thread: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync
    tracker: UsageTracker = attrs.field(factory=UsageTracker)
    # Called on the event loop with the new figures after every sample (the memory limit,
    # the status page's live updates).
    listeners: list[Callable[[dict[str, BotUsage]], None]] = attrs.field(factory=list)
    samples: int = attrs.field(init=False, default=0)
    _reasons: set[str] = attrs.field(init=False, factory=set)
    _looked_until: float = attrs.field(init=False, default=-math.inf)
    _sampled_at: float = attrs.field(init=False, default=-math.inf)
    _wakeup: trio.Event = attrs.field(init=False, factory=trio.Event)
    _lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)

    def keep_sampling(self, reason: str) -> None:
        """Sample every interval until :meth:`stop_sampling` with the same *reason*."""
        self._reasons.add(reason)
        self._wakeup.set()

    def stop_sampling(self, reason: str) -> None:
        self._reasons.discard(reason)

    @property
    def demanded(self) -> bool:
        return bool(self._reasons) or trio.current_time() < self._looked_until

    @property
    def fresh(self) -> bool:
        """The figures are from the last two intervals (not left over from a busy spell)."""
        return trio.current_time() - self._sampled_at <= 2 * self.interval + 1

    def usage(self, name: str) -> dict[str, Any]:
        """``cpu_percent``, ``memory_bytes``, ``processes`` of a bot; None when not sampled."""
        figures = self.tracker.figures.get(name) if self.fresh else None
        return NOT_SAMPLED if figures is None else figures.as_info()

    async def look(self) -> None:
        """Someone wants the figures: make them fresh, and keep them fresh for a while.

        A look that finds a bot not yet sampled twice (after an idle spell, or a new
        process) samples twice, :data:`FIRST_WINDOW_SECONDS` apart, so that it can show
        CPU use; other looks return at once.

        **Cancellation:** safe; a sample in progress finishes in its thread.
        """
        now = trio.current_time()
        self._looked_until = now + self.linger
        self._wakeup.set()
        if now - self._sampled_at > self.interval or self._unmeasured():
            await self.sample()
            if self._unmeasured():
                await trio.sleep(FIRST_WINDOW_SECONDS)
                await self.sample()

    def _unmeasured(self) -> bool:
        """Some bot with a process has no CPU figure yet (not sampled twice)."""
        figures = self.tracker.figures
        return any(
            name not in figures or figures[name].cpu_percent is None for name in self.groups()
        )

    async def sample(self, *, max_age: float = 0) -> dict[str, BotUsage]:
        """Scan the groups now (in a worker thread) and update the figures, unless the
        last sample is younger than *max_age* seconds."""
        async with self._lock:
            if trio.current_time() - self._sampled_at < max_age:
                return self.tracker.figures
            groups = self.groups()
            scan = await self.in_thread(self.scan, set(groups.values())) if groups else {}
            figures = self.tracker.update(groups, scan, time.monotonic())
            self._sampled_at = trio.current_time()
            self.samples += 1
        for listener in self.listeners:
            listener(figures)
        return figures

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Sample every interval while demanded; sleep on an event otherwise.

        **Cancellation:** ends at once.
        """
        task_status.started()
        while True:
            if not self.demanded:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            await self.sample(max_age=self.interval - 0.05)
            await trio.sleep_until(self._sampled_at + self.interval)
