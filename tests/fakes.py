"""Fake processes for tests under ``autojump_clock``: a spawner with the signature of
``trio.run_process`` that plays scripted runs, and a ``killpg`` that knows its pids."""

from __future__ import annotations

import itertools
import math
import signal
from typing import TYPE_CHECKING

import trio
import trio.testing

if TYPE_CHECKING:
    from collections.abc import Callable

# Every fake process gets a pid from here: unique across the bots of a test.
_PIDS = itertools.count(10_000)


class EmptyStream:
    """A pipe that is at EOF at once: fake bots write nothing."""

    async def receive_some(self, max_bytes=None):
        return b""

    async def aclose(self):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        pass


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.returncode = None
        self.stdout = EmptyStream()
        self.stderr = EmptyStream()
        self._exited = trio.Event()

    async def wait(self):
        await self._exited.wait()
        return self.returncode


class FakeBot:
    """Plays a scripted list of runs: (seconds until exit, exit code).

    Once the script is used up, every further run lasts forever and exits 0. A run that
    is cancelled (the bot stopped) ends with ``-SIGTERM`` *stop_delay* seconds later, as
    a real process takes a moment to die: the runner always sees it ``stopping``.

    Args:
        runs: the scripted runs, in order.
        first_pid: the pid of the first run (then one more per run); by default pids
            come from a counter shared by all fakes, so that bots never share one.
        stop_delay: how long a stopped run takes to end.
    """

    def __init__(self, runs=(), first_pid: int | None = None, stop_delay: float = 0.1):
        self.runs = list(runs)
        self.stop_delay = stop_delay
        self.starts: list[float] = []
        self.pids = _PIDS if first_pid is None else itertools.count(first_pid)
        self.live: set[int] = set()

    async def spawn(self, argv, *, task_status, deliver_cancel, **options):
        assert options["start_new_session"] is True
        duration, code = self.runs.pop(0) if self.runs else (math.inf, 0)
        process = FakeProcess(next(self.pids))
        self.starts.append(trio.current_time())
        self.live.add(process.pid)
        task_status.started(process)
        try:
            await trio.sleep(duration)
            process.returncode = code
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.sleep(self.stop_delay)
            process.returncode = -signal.SIGTERM
            raise
        finally:
            self.live.discard(process.pid)
            process._exited.set()

    def killpg(self, pgid, sig):
        """``os.killpg`` for this bot's fake groups: a group exists while its run does."""
        if pgid not in self.live:
            raise ProcessLookupError(pgid)


class FakeBots:
    """One :class:`FakeBot` per bot name, for a whole supervisor: the runner tags each
    spawn with ``TRIO_ORCH_BOT`` in its environment, which picks the bot."""

    def __init__(
        self,
        scripts: dict[str, list[tuple[float, int]]],
        stop_delays: dict[str, float] | None = None,
    ):
        delays = stop_delays or {}
        self.bots = {
            name: FakeBot(runs, stop_delay=delays.get(name, 0.1)) for name, runs in scripts.items()
        }

    def __getitem__(self, name: str) -> FakeBot:
        return self.bots.setdefault(name, FakeBot())

    async def spawn(self, argv, **options):
        await self[options["env"]["TRIO_ORCH_BOT"]].spawn(argv, **options)

    def killpg(self, pgid, sig):
        for bot in self.bots.values():
            if pgid in bot.live:
                return
        raise ProcessLookupError(pgid)


def no_group(pgid, sig):
    """``os.killpg`` when no process group exists."""
    raise ProcessLookupError


async def jump_when_idle(
    clock: trio.testing.MockClock, threads_busy: Callable[[], bool], cushion: float = 0.002
) -> None:
    """``autojump_clock``, except that the clock never jumps while a worker thread runs.

    ``MockClock(autojump_threshold=0)`` jumps to the next deadline as soon as every task
    waits, even for a thread (an SQLite commit, a scan of /proc): the clock then runs
    ahead of the db, and a command timed for t=10 overtakes a crash at t=1 whose
    transition is still being saved, or a slow thread on a loaded machine lets a
    ``fail_after`` fire. A threshold (say 20 ms of real time) only makes that rarer. Run
    this task instead, with a plain ``MockClock()``: it jumps once the tasks have been
    idle for *cushion* real seconds and *threads_busy()* says no thread is in flight.

    **Cancellation:** runs until cancelled.
    """
    while True:
        await trio.testing.wait_all_tasks_blocked(cushion)
        if threads_busy():
            continue
        jump = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if 0 < jump < math.inf:
            clock.jump(jump)


def channel_output(send):
    """A runner output that sends ``(stream, block)`` pairs into a channel."""

    def writer(bot, stream):
        async def write(block):
            await send.send((stream, block))

        return write

    return writer
