"""The pipe reader: a quiet bot's line is read at once, a chatty bot's lines are read a
tick at a time (all pipes on one shared tick), a flood and the end of a process are never
held back. Real pipes; the clock is trio's MockClock, so the timings are exact."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio

from trio_orchestrator.pipereader import COALESCE_SECONDS, SMALL_READ, PipeReader

LINE = b"x" * 79 + b"\n"


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


async def write_lines(fd: int, count: int, interval: float, written: list[float]) -> None:
    """A bot that prints one flushed line every *interval* s, then exits."""
    for _ in range(count):
        await trio.sleep(interval)
        os.write(fd, LINE)
        written.append(trio.current_time())
    os.close(fd)


async def read_all(reader: PipeReader) -> list[tuple[float, bytes]]:
    reads = []
    while data := await reader.read():
        reads.append((trio.current_time(), data))
    return reads


async def run_bot(pipe, count, interval, drain=None):
    read_end, write_end = pipe
    written: list[float] = []
    reader = PipeReader(read_end, 1 << 18, drain or trio.Event())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_lines, write_end, count, interval, written)
        reads = await read_all(reader)
    return written, reads


async def test_a_quiet_bot_is_read_line_by_line_at_once(pipe, autojump_clock):
    written, reads = await run_bot(pipe, 5, 1.0)
    assert [data for _, data in reads] == [LINE] * 5
    assert [when for when, _ in reads] == written  # no delay at all


async def test_a_chatty_bot_is_read_a_tick_at_a_time_within_a_tick(pipe, autojump_clock):
    written, reads = await run_bot(pipe, 200, 0.005)
    assert b"".join(data for _, data in reads) == LINE * 200  # nothing lost or reordered
    # One second of 200 lines: about one read per tick, not one per line.
    assert len(reads) <= 1.0 / COALESCE_SECONDS + 5
    # Every line is read at most one tick after it was written.
    line_read_at = [when for when, data in reads for _ in range(data.count(b"\n"))]
    delays = [read - wrote for read, wrote in zip(line_read_at, written, strict=True)]
    assert max(delays) <= COALESCE_SECONDS + 1e-9
    # The held-back reads happen on the shared tick, so pipes of all bots wake together.
    on_tick = [when for when, data in reads if len(data) > len(LINE)]
    assert on_tick
    for when in on_tick:
        assert when / COALESCE_SECONDS == pytest.approx(round(when / COALESCE_SECONDS))


async def test_a_flood_is_never_held_back(pipe, autojump_clock):
    read_end, write_end = pipe
    block = LINE * (2 * SMALL_READ // len(LINE))
    reader = PipeReader(read_end, SMALL_READ * 4, trio.Event())
    start = trio.current_time()
    for _ in range(5):
        os.write(write_end, block)
        assert await reader.read() == block
    assert trio.current_time() == start


async def test_the_end_of_the_process_drains_without_waiting_for_the_tick(pipe, autojump_clock):
    read_end, write_end = pipe
    exited = trio.Event()
    reader = PipeReader(read_end, 1 << 18, exited)
    os.write(write_end, LINE)
    assert await reader.read() == LINE
    await trio.sleep(0.003)
    os.write(write_end, LINE)
    assert await reader.read() == LINE  # chatty now: the next read waits for the tick
    os.write(write_end, LINE)
    os.close(write_end)
    exited.set()  # the bot's process has exited
    start = trio.current_time()
    assert await reader.read() == LINE
    assert await reader.read() == b""
    assert trio.current_time() == start
