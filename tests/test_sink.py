from __future__ import annotations

import os

import trio
from helpers import make_config

from trio_orchestrator.output import LogFiles, Printer
from trio_orchestrator.sink import OutputSink


async def test_writers_log_print_and_count_lines_per_stream(tmp_path):
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        sink = OutputSink(Printer(color=False), LogFiles(tmp_path / "logs"), out, err)
        bot = make_config(
            tmp_path, {"Bot": {"script": "m.py", "directory": ".", "color": "red"}}
        ).bots["Bot"]
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            await sink.stream_writer(bot, "stdout")(b"one\ntwo")
            await sink.stream_writer(bot, "stderr")(b"oops")
            sink.close()
    assert (tmp_path / "out").read_bytes() == b"[Bot] one\n[Bot] two\n"
    assert (tmp_path / "err").read_bytes() == b"[Bot] oops\n"
    log = (tmp_path / "logs" / "Bot.log").read_bytes().splitlines()
    assert [line.split(b" ", 1)[1] for line in log] == [
        b"stdout [Bot] one",
        b"stdout [Bot] two",
        b"stderr [Bot] oops",
    ]
    assert sink.lines_total == {("Bot", "stdout"): 2, ("Bot", "stderr"): 1}


async def test_a_stalled_pipe_console_drops_with_a_notice_and_never_blocks(tmp_path):
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as out, (tmp_path / "err").open("wb") as err:
        sink = OutputSink(Printer(color=False), LogFiles(tmp_path / "logs"), out, err, 4096)
        bot = make_config(
            tmp_path, {"Bot": {"script": "m.py", "directory": ".", "color": "red"}}
        ).bots["Bot"]
        write = sink.stream_writer(bot, "stdout")
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            with trio.fail_after(10):  # nobody reads the pipe: drops, after STALL_SECONDS
                for i in range(5000):
                    await write(b"line %d " % i + b"x" * 100)
            sink.close()
            nursery.cancel_scope.cancel()
    console = os.read(read_end, 1 << 20)  # what the pipe could hold: the first lines
    os.close(read_end)
    assert console.startswith(b"[Bot] line 0 x") and len(console) < 5000 * 100
    lines = (tmp_path / "logs" / "Bot.log").read_bytes().splitlines()
    assert len(lines) == 5000  # the log file has every line
