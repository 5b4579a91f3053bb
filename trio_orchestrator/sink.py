"""The one task that writes bot output and manager events to the console and log files.

Pumps send :class:`~trio_orchestrator.runner.OutputBatch` items into a bounded channel;
this task formats them and hands the bytes to three writers, each running its blocking
writes in a worker thread: stdout, stderr and the per-bot log files. Whole batches are
written at once, so lines never interleave. The log writer applies backpressure (nothing
is lost; a flooding bot is slowed down through its pipe); the console writers fall behind
into a bounded :class:`~trio_orchestrator.output.ConsoleBuffer` and drop what does not fit,
so a stalled terminal never stalls supervision.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import IO, TYPE_CHECKING

import trio

from trio_orchestrator.output import ConsoleBuffer, LogFiles, Printer

if TYPE_CHECKING:
    from trio_orchestrator.runner import OutputBatch

__all__ = ["ConsoleLogHandler", "OutputSink"]

# Batches of up to READ_SIZE bytes in flight between the pumps and this task: 4 MiB.
CHANNEL_CAPACITY = 16
# Batches taken from the channel before one trip to the log-writer thread.
MAX_BATCHES_PER_WRITE = 256
FINAL_FLUSH_SECONDS = 2.0
# A console write stuck this long means nobody reads the console: drop, don't wait.
STALL_SECONDS = 1.0


class _ConsoleStream:
    """One console stream (stdout or stderr) with its bounded buffer and writer task."""

    def __init__(self, stream: IO[bytes], limit: int):
        self.stream = stream
        self.buffer = ConsoleBuffer(limit)
        self.wakeup = trio.Event()
        self.broken = False
        self._writing_since: float | None = None
        self._progress = trio.Event()

    def push(self, data: bytes, lines: int) -> None:
        """Queue *data* now; dropped (and counted) if the buffer is full."""
        if not self.broken:
            self.buffer.push(data, lines)
            self.wakeup.set()

    @property
    def stalled(self) -> bool:
        """A write has been stuck for STALL_SECONDS: nobody is reading the console."""
        return (
            self._writing_since is not None
            and trio.current_time() - self._writing_since > STALL_SECONDS
        )

    async def push_or_wait(self, data: bytes, lines: int) -> None:
        """Queue *data*, waiting while a slow but live console catches up.

        A console that keeps up slowly (a file, a busy terminal) gets backpressure and loses
        nothing; one that is stalled (a full pipe, Ctrl-S) makes us drop instead, so the log
        files and supervision never wait on it.
        """
        while self.buffer.overflows(len(data)) and not self.broken and not self.stalled:
            with trio.move_on_after(STALL_SECONDS):
                await self._progress.wait()
        self.push(data, lines)

    def _write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            # Nobody is reading (closed pipe, hung-up terminal): stop writing there, the
            # log files still get everything.
            self.broken = True

    async def run(self) -> None:
        """Write whatever is buffered, forever. **Cancellation:** abandons a stuck write."""
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        data, dropped = self.buffer.take()
        if dropped:
            data += (
                f"[trio-orch] console too slow: {dropped} lines dropped here "
                "(the bots' log files have them)\n".encode()
            )
        if data and not self.broken:
            # abandon_on_cancel: a write into a pipe nobody reads may never return; at
            # shutdown we walk away from it rather than hang.
            self._writing_since = trio.current_time()
            try:
                await trio.to_thread.run_sync(self._write, data, abandon_on_cancel=True)
            finally:
                self._writing_since = None
                self._progress.set()
                self._progress = trio.Event()


class OutputSink:
    """Receives output batches and manager events; owns the console and the log files.

    Args:
        printer: formats lines (prefix, colour).
        log_files: per-bot log files.
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
        self.stdout = _ConsoleStream(stdout, console_limit)
        self.stderr = _ConsoleStream(stderr, console_limit)
        self.send_channel, self._receive_channel = trio.open_memory_channel(CHANNEL_CAPACITY)
        self.line_counts: collections.Counter[tuple[str, str]] = collections.Counter()  # metrics
        self._token: trio.lowlevel.TrioToken | None = None
        self._loop_thread: int | None = None

    def event(self, text: str) -> None:
        """Show a manager event line on the console; callable from any thread."""
        data = text.encode("utf-8", "replace") + b"\n"
        if self._token is None or threading.get_ident() == self._loop_thread:
            self.stdout.push(data, 1)
        else:
            self._token.run_sync_soon(self.stdout.push, data, 1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Write output until every clone of :attr:`send_channel` is closed.

        **Cancellation:** stops at once; what was still buffered for the console is lost,
        everything already received has been written to the log files.
        """
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.stdout.run)
            nursery.start_soon(self.stderr.run)
            task_status.started()
            async with self._receive_channel:
                async for batch in self._receive_channel:
                    await self._write([batch, *self._drain()])
            with trio.move_on_after(FINAL_FLUSH_SECONDS):
                await self.stdout.flush()
                await self.stderr.flush()
            nursery.cancel_scope.cancel()
        await trio.to_thread.run_sync(self.log_files.close)

    def _drain(self) -> list[OutputBatch]:
        batches = []
        while len(batches) < MAX_BATCHES_PER_WRITE:
            try:
                batches.append(self._receive_channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batches

    async def _write(self, batches: list[OutputBatch]) -> None:
        logs = []
        for batch in batches:
            console, log = self.printer.format(batch.name, batch.color, batch.block)
            target = self.stderr if batch.stream == "stderr" else self.stdout
            self.line_counts[batch.name, batch.stream] += batch.line_count
            await target.push_or_wait(console, batch.line_count)
            logs.append((batch.name, log))
        await trio.to_thread.run_sync(self.log_files.write_batches, logs)


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
