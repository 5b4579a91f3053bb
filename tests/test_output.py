from __future__ import annotations

import io

from trio_orchestrator.output import (
    MAX_LINE_BYTES,
    ConsoleBuffer,
    LineSplitter,
    LogFiles,
    Printer,
    should_color,
)


class FakeTty(io.BytesIO):
    def isatty(self):
        return True


def lines_of(block):
    return [] if block is None else block.split(b"\n")


def test_splitter_joins_partial_reads_and_flushes_the_tail():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") is None
    assert lines_of(splitter.feed(b"lo\nwor")) == [b"hello"]
    assert lines_of(splitter.feed(b"ld\n\nx")) == [b"world", b""]
    assert lines_of(splitter.feed(b"\n")) == [b"x"]
    assert lines_of(splitter.feed(b"\n")) == [b""]  # an empty line is a line
    assert splitter.flush() is None
    assert splitter.feed(b"tail") is None
    assert splitter.flush() == b"tail"


def test_splitter_caps_lines_and_keeps_memory_bounded():
    splitter = LineSplitter()
    chunk = b"a" * 10_000
    out = []
    for _ in range(5_000):  # a 50 MB line without a newline
        out.extend(lines_of(splitter.feed(chunk)))
        assert len(splitter._pending) <= MAX_LINE_BYTES
    assert all(len(line) == MAX_LINE_BYTES for line in out)
    assert sum(map(len, out)) + len(splitter.flush()) == 50_000_000


def test_splitter_splits_long_lines_wherever_they_are():
    long_line = b"b" * (MAX_LINE_BYTES * 2 + 5) + b"\nshort\n"
    assert [len(x) for x in lines_of(LineSplitter().feed(long_line))] == [
        MAX_LINE_BYTES,
        MAX_LINE_BYTES,
        5,
        5,
    ]
    # A long line made of many reads, then normal lines in the same read.
    splitter = LineSplitter()
    assert splitter.feed(b"c" * (MAX_LINE_BYTES - 10)) is None
    block = splitter.feed(b"c" * 20 + b"\nnext\nlast")
    assert [len(x) for x in lines_of(block)] == [MAX_LINE_BYTES, 10, 4]
    assert splitter.flush() == b"last"


def test_splitter_agrees_with_a_naive_split_on_random_reads():
    import random

    rng = random.Random(7)
    stream = (
        b"".join(
            b"x" * rng.choice([0, 1, 79, 300, 70_000, MAX_LINE_BYTES, 2 * MAX_LINE_BYTES]) + b"\n"
            for _ in range(400)
        )
        + b"tail"
    )
    splitter = LineSplitter()
    got = []
    position = 0
    while position < len(stream):
        size = rng.choice([1, 7, 4096, 65536])
        got.extend(lines_of(splitter.feed(stream[position : position + size])))
        position += size
    got.extend(lines_of(splitter.flush()))
    expected = []
    for line in stream.split(b"\n"):
        pieces = [line[i : i + MAX_LINE_BYTES] for i in range(0, len(line), MAX_LINE_BYTES)]
        expected.extend(pieces or [b""])
    assert got == expected


def test_printer_prefixes_and_replaces_undecodable_bytes():
    console, log = Printer(color=False).format("Bot", "red", b"one\nt\xffwo")
    assert console == log == "[Bot] one\n[Bot] t\ufffdwo\n".encode()


def test_printer_colors_console_but_never_the_log():
    console, log = Printer(color=True).format("Bot", "cyan", b"hi")
    assert console == b"\x1b[36m[Bot]\x1b[0m hi\n"
    assert log == b"[Bot] hi\n"


def test_color_decision():
    assert should_color("auto", FakeTty(), {}) is True
    assert should_color("auto", io.BytesIO(), {}) is False
    assert should_color("always", io.BytesIO(), {}) is True
    # no-color.org: NO_COLOR turns off the default; an explicit flag wins over it.
    assert should_color("always", io.BytesIO(), {"NO_COLOR": "1"}) is True
    assert should_color("auto", FakeTty(), {"NO_COLOR": "1"}) is False
    assert should_color("auto", FakeTty(), {"NO_COLOR": ""}) is True
    assert should_color("never", FakeTty(), {}) is False


def test_console_buffer_drops_and_counts_beyond_its_bound():
    buffer = ConsoleBuffer(limit=10)
    assert buffer.push(b"12345", 1)
    assert buffer.push(b"67890", 1)
    assert not buffer.push(b"x\ny\n", 2)
    assert buffer.take() == (b"1234567890", 2)
    assert buffer.take() == (b"", 0)


def test_log_files_append_per_bot(tmp_path):
    logs = LogFiles(tmp_path / "logs")
    logs.write_batches([("A", b"[A] 1\n"), ("B", b"[B] 1\n"), ("A", b"[A] 2\n")])
    logs.close()
    assert (tmp_path / "logs" / "A.log").read_bytes() == b"[A] 1\n[A] 2\n"
    assert (tmp_path / "logs" / "B.log").read_bytes() == b"[B] 1\n"
