from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import random
import re
import shutil
import threading
import time

from helpers import make_config, small_tmpfs, wait_for

from trio_orchestrator.output import (
    MAX_LINE_BYTES,
    ConsoleBuffer,
    LineSplitter,
    LogFile,
    LogFileHandler,
    LogFiles,
    Printer,
    iso_stamp,
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


STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def test_printer_prefixes_and_replaces_undecodable_bytes():
    console, log, lines = Printer(color=False).format("Bot", "red", "stdout", b"one\nt\xffwo")
    assert console == "[Bot] one\n[Bot] t\ufffdwo\n".encode()
    assert lines == 2
    assert re.fullmatch(
        rb"(%s) stdout \[Bot\] one\n\1 stdout \[Bot\] t\xef\xbf\xbdwo\n" % STAMP, log
    )


def test_printer_colors_console_but_never_the_log():
    console, log, lines = Printer(color=True).format("Bot", "cyan", "stderr", b"hi")
    assert console == b"\x1b[36m[Bot]\x1b[0m hi\n"
    assert lines == 1
    assert re.fullmatch(STAMP + rb" stderr \[Bot\] hi\n", log)


def test_printer_timestamps_on_the_console_on_request():
    console, _, _ = Printer(color=False, timestamps=True).format("Bot", "red", "stdout", b"a\nb")
    assert re.fullmatch(rb"(%s) \[Bot\] a\n\1 \[Bot\] b\n" % STAMP, console)


def test_iso_stamp_is_local_time_with_milliseconds_and_offset(monkeypatch):
    monkeypatch.setenv("TZ", "America/St_Johns")  # -03:30 in winter: a half-hour offset
    time.tzset()
    try:
        assert iso_stamp(1796163189.1234) == b"2026-12-01T18:43:09.123-03:30"
        assert iso_stamp(1796163189.9999) == b"2026-12-01T18:43:09.999-03:30"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
        iso_stamp(0.0)  # the cache held a St John's second


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
    settings = make_config(tmp_path, {}).settings  # the defaults: 10 MiB, 5 backups
    logs.get("A", settings).write(b"[A] 1\n", 1)
    logs.get("B", settings).write(b"[B] 1\n", 1)
    logs.get("A", settings).write(b"[A] 2\n", 1)
    logs.close()
    assert (tmp_path / "logs" / "A.log").read_bytes() == b"[A] 1\n[A] 2\n"
    assert (tmp_path / "logs" / "B.log").read_bytes() == b"[B] 1\n"
    assert logs.get("A", settings).max_bytes == 10 * 1024 * 1024
    assert logs.get("A", settings).backups == 5


def test_log_files_take_new_rotation_limits_of_an_open_file(tmp_path):
    # A reload may change log_max_bytes/log_backups of a bot whose file is open already.
    logs = LogFiles(tmp_path / "logs")
    before = make_config(tmp_path, {}, log_max_bytes=1000, log_backups=1).settings
    after = make_config(tmp_path, {}, log_max_bytes=10, log_backups=2).settings
    first = logs.get("A", before)
    first.write(b"[A] 1234567\n", 1)
    assert logs.get("A", after) is first
    first.write(b"[A] 2\n", 1)  # over the new 10 bytes: rotates
    first.write(b"[A] 3\n", 1)
    logs.close()
    directory = tmp_path / "logs"
    assert (directory / "A.log.2").read_bytes() == b"[A] 1234567\n"
    assert (directory / "A.log.1").read_bytes() == b"[A] 2\n"
    assert (directory / "A.log").read_bytes() == b"[A] 3\n"


def test_rotation_under_a_flood_keeps_every_line_once_and_whole(tmp_path):
    limit, backups = 60_000, 300  # enough backups to keep everything for the count
    log = LogFile(tmp_path / "Flood.log", limit, backups)
    rng = random.Random(3)
    splitter = LineSplitter()
    written = 0
    for _ in range(150):  # reads of any size; lines above MAX_LINE_BYTES (then cut)
        chunk = b"".join(
            b"%d " % (written + i) + b"x" * rng.choice([0, 10, 100, 1000, 3000, 70_000]) + b"\n"
            for i in range(rng.choice([1, 1, 3, 8]))
        )
        written += chunk.count(b"\n")
        block = splitter.feed(chunk)
        if block is not None:
            log.write(block + b"\n", block.count(b"\n") + 1)
    log.close()
    files = sorted(
        tmp_path.iterdir(), key=lambda p: -int(p.suffix[1:] if p.suffix != ".log" else 0)
    )
    assert files[-1].name == "Flood.log" and 50 < len(files) < backups
    numbers = []
    for path in files:
        data = path.read_bytes()
        lines = data.split(b"\n")
        assert lines.pop() == b""  # every file ends with a whole line
        # Never above the limit, unless by one line that is alone larger than the limit.
        assert len(data) <= limit or len(lines) == 1, (path, len(data), len(lines))
        numbers.extend(int(line.split()[0]) for line in lines if line[:1].isdigit())
    assert numbers == list(range(written))  # MAX_LINE_BYTES pieces of long lines: no digit


def test_rotation_keeps_only_the_configured_backups(tmp_path):
    log = LogFile(tmp_path / "Bot.log", max_bytes=100, backups=2)
    for i in range(50):
        log.write(b"%02d " % i + b"y" * 16 + b"\n", 1)  # 20 bytes: 5 lines a file
    log.close()
    # The dropped backups are deleted by a thread of their own.
    wait_for(lambda: not (tmp_path / "Bot.log.deleting").exists(), message="deletion")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Bot.log", "Bot.log.1", "Bot.log.2"]
    assert (tmp_path / "Bot.log").read_bytes().startswith(b"45 ")
    assert (tmp_path / "Bot.log.2").read_bytes().startswith(b"35 ")


def test_log_file_comes_back_after_deletion_and_move(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("trio_orchestrator.output.time.monotonic", lambda: clock[0])
    log = LogFile(tmp_path / "logs" / "Bot.log")
    log.write(b"one\n", 1)
    shutil.rmtree(tmp_path / "logs")
    log.write(b"lost: the path is checked at most once a second\n", 1)
    clock[0] = 1.5
    log.write(b"two\n", 1)
    assert (tmp_path / "logs" / "Bot.log").read_bytes() == b"two\n"
    os.rename(tmp_path / "logs" / "Bot.log", tmp_path / "logs" / "Bot.log.old")
    log.write(b"three\n", 1)  # into the moved file until a check or a reopen
    log.reopen()
    log.write(b"four\n", 1)
    assert (tmp_path / "logs" / "Bot.log.old").read_bytes() == b"two\nthree\n"
    assert (tmp_path / "logs" / "Bot.log").read_bytes() == b"four\n"
    log.close()


def test_write_errors_warn_once_and_count_what_was_lost(tmp_path, monkeypatch, caplog):
    log = LogFile(tmp_path / "Bot.log")
    log.write(b"before\n", 1)
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("trio_orchestrator.output.os.write", full)
    for _ in range(100):
        log.write(b"a\nb\n", 2)
    monkeypatch.setattr("trio_orchestrator.output.os.write", real_write)
    log.write(b"after\n", 1)
    log.close()
    assert (tmp_path / "Bot.log").read_bytes() == b"before\nafter\n"
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "No space left on device" in messages[0]
    assert "200 lines could not be written" in messages[1]


def test_a_full_disk_does_not_flap_when_the_last_block_has_room_for_a_short_line(tmp_path, caplog):
    with small_tmpfs(tmp_path / "disk", size="64k") as disk:
        log = LogFile(disk / "Bot.log")
        log.write(b"first\n", 1)  # the file's last block has room for ~4 KiB more
        with contextlib.suppress(OSError), (disk / "filler").open("wb") as filler:
            while True:  # every other block of the file system
                filler.write(b"f" * 4096)
                filler.flush()
        log.write((b"x" * 99 + b"\n") * 100, 100)  # too long for that room: lost
        for _ in range(10):
            log.write(b"short\n", 1)  # would fit the room, but the disk is still full
        (disk / "filler").unlink()
        log.write(b"after\n", 1)
        log.close()
        assert (disk / "Bot.log").read_bytes() == b"first\nafter\n"
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages  # failing, then written again: no flapping
    assert "No space left on device" in messages[0]
    assert "110 lines could not be written" in messages[1]


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_line(tmp_path, monkeypatch):
    log = LogFile(tmp_path / "Bot.log")
    log.write(b"whole\n", 1)
    calls = []

    def short_then_full(fd, data):
        calls.append(data)
        if len(calls) == 1:
            return os.pwrite(fd, data[:3], os.fstat(fd).st_size)  # a short write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("trio_orchestrator.output.os.write", short_then_full)
    log.write(b"half a line\n", 1)
    monkeypatch.undo()
    log.write(b"next\n", 1)
    log.close()
    assert (tmp_path / "Bot.log").read_bytes() == b"whole\nnext\n"


def test_manager_log_handler_writes_stamped_records_from_any_thread(tmp_path):
    handler = LogFileHandler(LogFile(tmp_path / "bot_manager.log"))
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_output.manager")
    logger.addHandler(handler)
    try:
        threads = [
            threading.Thread(
                target=lambda n=n: [logger.warning("t%d %d", n, i) for i in range(200)]
            )
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = (tmp_path / "bot_manager.log").read_bytes().splitlines()
    assert len(lines) == 800
    assert all(re.fullmatch(STAMP + rb" WARNING t\d \d+", line) for line in lines)
