"""The pipe reader: a quiet bot's line is read at once, a chatty bot's lines are read a
tick at a time (all pipes on one shared tick), a flood and the end of a process are never
held back. Real pipes; the clock is trio's MockClock, so the timings are exact."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio

from trio_orchestrator.pipereader import COALESCE_SECONDS, SMALL_READ, BotPipes, PipeReader

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


async def run_bot(pipe, count, interval):
    read_end, write_end = pipe
    written: list[float] = []
    reader = BotPipes().reader(read_end, 1 << 18)
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
    reader = BotPipes().reader(read_end, SMALL_READ * 4)
    start = trio.current_time()
    for _ in range(5):
        os.write(write_end, block)
        assert await reader.read() == block
    assert trio.current_time() == start


async def test_the_end_of_the_process_drains_without_waiting_for_the_tick(pipe, autojump_clock):
    read_end, write_end = pipe
    pipes = BotPipes()
    reader = pipes.reader(read_end, 1 << 18)
    os.write(write_end, LINE)
    assert await reader.read() == LINE
    await trio.sleep(0.003)
    os.write(write_end, LINE)
    assert await reader.read() == LINE  # chatty now: the next read waits for the tick
    os.write(write_end, LINE)
    os.close(write_end)
    pipes.process_exited()
    start = trio.current_time()
    assert await reader.read() == LINE
    assert await reader.read() == b""
    assert trio.current_time() == start


async def test_a_line_on_the_quiet_stream_waits_for_what_the_chatty_one_holds(autojump_clock):
    """A chatty stdout, then a traceback on stderr: the stdout lines written before the
    traceback are written before it, though the stdout pipe was being held back."""
    pipes = BotPipes()
    ends = {}
    for stream in ("stdout", "stderr"):
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        ends[stream] = (pipes.reader(read_end, 1 << 18), write_end, read_end)
    written_out = []  # what a pump would write, in the order it would write it

    async def pump(stream):
        reader = ends[stream][0]
        while data := await reader.read():
            written_out.extend((stream, line) for line in data.decode().splitlines())

    async def bot():
        out, err = ends["stdout"][1], ends["stderr"][1]
        for i in range(30):
            await trio.sleep(0.005)
            os.write(out, f"line {i}\n".encode())
            if i == 20:
                os.write(err, b"Traceback\n")
        os.close(out)
        os.close(err)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, "stdout")
            nursery.start_soon(pump, "stderr")
            nursery.start_soon(bot)
    finally:
        for _, _, read_end in ends.values():
            os.close(read_end)
    lines = [line for _, line in written_out]
    assert lines.index("Traceback") == lines.index("line 20") + 1
    assert [line for line in lines if line != "Traceback"] == [f"line {i}" for i in range(30)]
