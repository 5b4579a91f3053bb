"""Reading a bot's output pipe: one read per wake-up, and few wake-ups for a chatty bot.

Waking a trio task costs the manager tens of microseconds of scheduling whatever it then
reads, so a bot that prints one flushed line at a time would cost a wake-up per line. A
pipe whose reads come small and close together (a chatty bot) is therefore read again
only at the next tick of a clock shared by all pipes (every :data:`COALESCE_SECONDS`):
what arrived meanwhile comes in one read, and the chatty pipes of every bot wake at the
same tick, in one pass of the scheduler. A line of a quiet bot is read as soon as it
arrives, one of a chatty bot at most :data:`COALESCE_SECONDS` later. A large read (a
flooding bot: its pipe must not fill up) and the end of the process (the output must
drain before the exit is reported) are never held back.
"""

from __future__ import annotations

import math
import os

import attrs
import trio

__all__ = ["CHATTY_SECONDS", "COALESCE_SECONDS", "SMALL_READ", "PipeReader"]

COALESCE_SECONDS = 0.02
# Reads closer together than this, each under SMALL_READ, make a pipe chatty.
CHATTY_SECONDS = 0.1
SMALL_READ = 16 * 1024


@attrs.define(eq=False)
class PipeReader:
    """Reads of up to *size* bytes from the non-blocking pipe *fd* (which it does not own).

    Args:
        fd: the read end of a bot's stdout or stderr pipe.
        size: the most one read takes.
        drain: set once the bot's process has exited: from then on reads are not delayed.
    """

    fd: int
    size: int
    drain: trio.Event
    _last_read: float = attrs.field(init=False, default=-math.inf)
    _delay_next: bool = attrs.field(init=False, default=False)

    async def read(self) -> bytes:
        """The next block of output; ``b""`` at end of file.

        trio's ``FdStream.receive_some`` tries a read before it waits, which for a bot that
        writes a line at a time fails with EAGAIN on every wake-up; this waits first,
        except after a delay, when data has most likely arrived.

        **Cancellation:** nothing is read.
        """
        if self._delay_next:
            with trio.move_on_at(_next_tick(trio.current_time())):
                await self.drain.wait()
            if (data := self._try_read()) is not None:
                return self._took(data)
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            if (data := self._try_read()) is not None:
                return self._took(data)

    def _try_read(self) -> bytes | None:
        try:
            return os.read(self.fd, self.size)
        except BlockingIOError:  # nothing yet, or another wake-up took it first
            return None

    def _took(self, data: bytes) -> bytes:
        now = trio.current_time()
        self._delay_next = len(data) < SMALL_READ and now - self._last_read < CHATTY_SECONDS
        self._last_read = now
        return data


def _next_tick(now: float) -> float:
    return (math.floor(now / COALESCE_SECONDS) + 1) * COALESCE_SECONDS
