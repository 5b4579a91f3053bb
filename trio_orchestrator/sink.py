"""Bot output and manager events to the console and the log files, one wake-up per read.

A pump that has read a block of lines calls the writer :meth:`OutputSink.stream_writer`
gave it, in the pump's own task: the block is formatted once, appended to the bot's log
file (a page-cache write on the loop, synchronous: nothing is lost, and a flooding bot is
slowed down through its pipe), and written to the console. No channel hop, no extra task,
no thread round trip on the way.

The console may stall (a full pipe, a terminal paused with Ctrl-S), so it is written
without blocking: a write that would block leaves the rest in a bounded
:class:`~trio_orchestrator.output.ConsoleBuffer`, and a console task writes it out (all of
it in one write) once the stream is writable again. A console that keeps up slowly slows
the pumps down and loses nothing; one that is stuck for :data:`STALL_SECONDS` loses what
does not fit, with a notice, so supervision never waits on it. Whole lines go out in
order, so lines never interleave.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import stat
import threading
from functools import partial
from typing import IO, TYPE_CHECKING

import trio

from trio_orchestrator.output import ConsoleBuffer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio_orchestrator.config import BotConfig
    from trio_orchestrator.output import LogFiles, Printer

__all__ = ["ConsoleLogHandler", "OutputSink"]

FINAL_FLUSH_SECONDS = 2.0
# A console write stuck this long means nobody reads the console: drop, don't wait.
STALL_SECONDS = 1.0


def _console_fd(stream: IO[bytes]) -> tuple[int, bool]:
    """A descriptor that writes to *stream*, and whether writes to it never block.

    A regular file never blocks (page cache): its own descriptor is used. A pipe or a
    terminal is opened again through ``/proc/self/fd`` with ``O_NONBLOCK``: that is a new
    open file description, so the flag does not leak to the shell or the parent that
    share ours. Anything else (a socket, no procfs) is written from a worker thread.
    """
    stream.flush()
    fd = stream.fileno()
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return fd, True
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        with contextlib.suppress(OSError):
            # Kept open for the life of the process: events logged after the sink has
            # ended (the last shutdown messages) still reach the console through it.
            return os.open(f"/proc/self/fd/{fd}", flags), True
    return fd, False


class _Console:
    """One console stream (stdout or stderr): direct writes, a bounded buffer, a task."""

    def __init__(self, stream: IO[bytes], limit: int):
        self.buffer = ConsoleBuffer(limit)
        self.broken = False
        self._fd, self._nonblocking = _console_fd(stream)
        self._pending = b""  # taken from the buffer, not yet written: goes out first
        self._wakeup = trio.Event()
        self._progress = trio.Event()
        self._waiting_since: float | None = None
        # The console task and the final flush at shutdown must not wait on the fd at once.
        self._flushing = trio.Lock()

    @property
    def stalled(self) -> bool:
        """A write has been stuck for STALL_SECONDS: nobody is reading the console."""
        return (
            self._waiting_since is not None
            and trio.current_time() - self._waiting_since > STALL_SECONDS
        )

    def push(self, data: bytes, lines: int) -> None:
        """Write *data* now if the console takes it, else queue it (or drop it if full)."""
        if self.broken:
            return
        if self._nonblocking and not self._pending and not len(self.buffer):
            try:
                written = self._try_write(data)
            except OSError:
                self._break()
                return
            if written == len(data):
                return
            # The buffer is empty, so the rest (part of a line, maybe) is never dropped.
            data = data[written:]
        self.buffer.push(data, lines)
        self._wakeup.set()

    async def write(self, data: bytes, lines: int) -> None:
        """:meth:`push`, first waiting while a slow but live console catches up.

        **Cancellation:** the data is not written if cancelled while waiting.
        """
        while self.buffer.overflows(len(data)) and not self.broken and not self.stalled:
            with trio.move_on_after(STALL_SECONDS):
                await self._progress.wait()
        self.push(data, lines)

    def _try_write(self, data: bytes) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def _break(self) -> None:
        # Nobody is reading (closed pipe, hung-up terminal): stop writing there, the log
        # files still get everything.
        self.broken = True
        self._pending = b""
        self.buffer.take()

    async def run(self) -> None:
        """Write whatever gets queued, forever.

        **Cancellation:** stops at once; a write stuck in a worker thread is abandoned.
        """
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued, as one write where the console takes it.

        **Cancellation:** what is left stays queued.
        """
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        while not self.broken:
            if not self._pending:
                data, dropped = self.buffer.take()
                if dropped:
                    data += (
                        f"[trio-orch] console too slow: {dropped} lines dropped here "
                        "(the bots' log files have them)\n".encode()
                    )
                if not data:
                    return
                self._pending = data
            self._waiting_since = trio.current_time()
            try:
                written = await self._write_some(self._pending)
            except OSError:
                self._break()
                return
            finally:
                self._waiting_since = None
            self._pending = self._pending[written:]
            self._progress.set()
            self._progress = trio.Event()

    async def _write_some(self, data: bytes) -> int:
        if self._nonblocking:
            await trio.lowlevel.wait_writable(self._fd)
            return self._try_write(data)
        # abandon_on_cancel: a write into a pipe nobody reads may never return; at
        # shutdown we walk away from it rather than hang.
        return await trio.to_thread.run_sync(os.write, self._fd, data, abandon_on_cancel=True)


class OutputSink:
    """Owns the console streams and the log files; hands out one writer per bot stream.

    Args:
        printer: formats lines (prefix, colour, timestamps).
        log_files: the log files (bots' and the manager's).
        stdout, stderr: binary console streams (``sys.stdout.buffer`` in production).
        console_limit: bytes each console stream may fall behind before dropping.
    """

    def __init__(
        self,
        printer: Printer,
        log_files: LogFiles,
        stdout: IO[bytes],
        stderr: IO[bytes],
        console_limit: int = 4 * 1024 * 1024,
    ):
        self.printer = printer
        self.log_files = log_files
        self.stdout = _Console(stdout, console_limit)
        self.stderr = _Console(stderr, console_limit)
        # Lines written per (bot, stream): the counters of a later metrics endpoint.
        self.lines_total: collections.Counter[tuple[str, str]] = collections.Counter()
        self._closed = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._loop_thread: int | None = None

    def stream_writer(self, bot: BotConfig, stream: str) -> Callable[[bytes], Awaitable[None]]:
        """The writer of one bot's stream (``"stdout"`` or ``"stderr"``).

        It takes a block of complete lines (joined by ``\\n``, without the last one) and
        writes it to the bot's log file and to the console, in the calling task.
        """
        log_file = self.log_files.get(bot.name, bot)
        console = self.stderr if stream == "stderr" else self.stdout
        format_block = partial(self.printer.format, bot.name, bot.color, stream)
        lines_total = self.lines_total
        key = (bot.name, stream)

        async def write(block: bytes) -> None:
            """**Cancellation:** the block is in the log file; the console may miss it."""
            console_data, log_data, lines = format_block(block)
            lines_total[key] += lines
            log_file.write(log_data, lines)  # a page-cache write: fine on the loop
            await console.write(console_data, lines)

        return write

    def event(self, text: str) -> None:
        """Show a manager event line on the console; callable from any thread."""
        data = text.encode("utf-8", "replace") + b"\n"
        if self._token is None or threading.get_ident() == self._loop_thread:
            self.stdout.push(data, 1)
        else:
            self._token.run_sync_soon(self.stdout.push, data, 1)

    def reopen_logs(self) -> None:
        """Reopen every log file at its path (SIGUSR1 after logrotate moved them)."""
        self.log_files.reopen()

    def close(self) -> None:
        """End :meth:`run` once the console is flushed (the bots have stopped)."""
        self._closed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Run the console writers until :meth:`close`, flush them, close the log files.

        **Cancellation:** stops at once; what was still queued for the console is lost,
        every line written by a pump is in its log file.
        """
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.stdout.run)
                nursery.start_soon(self.stderr.run)
                task_status.started()
                await self._closed.wait()
                with trio.move_on_after(FINAL_FLUSH_SECONDS):
                    await self.stdout.flush()
                    await self.stderr.flush()
                nursery.cancel_scope.cancel()
        finally:
            self.log_files.close()


class ConsoleLogHandler(logging.Handler):
    """A logging handler that shows records on the sink's console, in line with bot output."""

    def __init__(self, sink: OutputSink):
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.event(self.format(record))
        except Exception:
            self.handleError(record)
