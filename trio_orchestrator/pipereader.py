"""Reading a bot's output pipes: one read per wake-up, and few wake-ups for a chatty bot.

Waking a trio task costs the manager tens of microseconds of scheduling whatever it then
reads, so a bot that prints one flushed line at a time would cost a wake-up per line. A
pipe whose reads come small and close together (a chatty bot) is therefore read again
only at the next tick of a clock shared by all pipes (every :data:`COALESCE_SECONDS`):
what arrived meanwhile comes in one read, and the chatty pipes of every bot wake at the
same tick, in one pass of the scheduler. A line of a quiet bot is read as soon as it
arrives, one of a chatty bot at most :data:`COALESCE_SECONDS` later. A large read (a
flooding bot: its pipe must not fill up) and the end of the process (the output must
drain before the exit is reported) are never held back.

Holding a stream back must not reorder it against the bot's other stream: when a line
arrives on a quiet stream (a traceback on stderr) while the other one holds lines back
(a chatty stdout), the held lines are read and written first.
"""

from __future__ import annotations

import math
import os

import attrs
import trio

__all__ = ["CHATTY_SECONDS", "COALESCE_SECONDS", "SMALL_READ", "BotPipes", "PipeReader"]

COALESCE_SECONDS = 0.02
# Reads closer together than this, each under SMALL_READ, make a pipe chatty.
CHATTY_SECONDS = 0.1
SMALL_READ = 16 * 1024


@attrs.define(eq=False)
class BotPipes:
    """The output pipes of one process of a bot, whose readers know of each other."""

    exited: bool = attrs.field(init=False, default=False)
    _readers: list[PipeReader] = attrs.field(init=False, factory=list)

    def reader(self, fd: int, size: int) -> PipeReader:
        """A reader of *fd* (a non-blocking pipe it does not own), reads of up to *size*."""
        reader = PipeReader(fd, size, self)
        self._readers.append(reader)
        return reader

    def process_exited(self) -> None:
        """From now on no read is held back: the pumps must drain."""
        self.exited = True
        for reader in self._readers:
            reader.wake()

    def others(self, reader: PipeReader) -> list[PipeReader]:
        return [other for other in self._readers if other is not reader]


@attrs.define(eq=False)
class PipeReader:
    """Reads of one of a bot's pipes; made by :meth:`BotPipes.reader`."""

    fd: int
    size: int
    pipes: BotPipes
    _last_read: float = attrs.field(init=False, default=-math.inf)
    _delay_next: bool = attrs.field(init=False, default=False)
    # Set while the next read is held back until the tick.
    _held: trio.Event | None = attrs.field(init=False, default=None)
    # A sibling waits on it until what this one read at its request is written.
    _written: trio.Event | None = attrs.field(init=False, default=None)

    async def read(self) -> bytes:
        """The next block of output; ``b""`` at end of file. The caller writes each block
        before it asks for the next.

        trio's ``FdStream.receive_some`` tries a read before it waits, which for a bot that
        writes a line at a time fails with EAGAIN on every wake-up; this waits first,
        except after a delay, when data has most likely arrived.

        **Cancellation:** nothing is read.
        """
        self._done_writing()
        if self._delay_next and not self.pipes.exited:
            self._held = trio.Event()
            try:
                with trio.move_on_at(_next_tick(trio.current_time())):
                    await self._held.wait()
            finally:
                self._held = None
            data = self._try_read()
            if not data:
                self._done_writing()  # nothing to write before the sibling's block
            if data is not None:
                return self._took(data)
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            if (data := self._try_read()) is not None:
                await self._held_siblings_first()
                return self._took(data)

    def wake(self) -> None:
        """End a hold now."""
        if self._held is not None:
            self._held.set()

    async def _held_siblings_first(self) -> None:
        """What the bot's other stream holds back was written before this: it goes first."""
        for other in self.pipes.others(self):
            if other._held is not None:
                other._written = written = trio.Event()
                other.wake()
                await written.wait()

    def _done_writing(self) -> None:
        if self._written is not None:
            self._written.set()
            self._written = None

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
