"""End-to-end: log files that fill a disk, vanish or are moved away under a running manager."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time

from helpers import cli, small_tmpfs, wait_for, write_bot, write_config

COUNTER = """
import itertools, time
for i in itertools.count():
    print(f"line {i}", flush=True)
    time.sleep(0.01)
"""


def counting_bot(tmp_path):
    directory = write_bot(tmp_path / "bot", COUNTER)
    bots = {"Bot": {"script": "main.py", "directory": str(directory)}}
    return write_config(tmp_path / "bot_config.yaml", bots, stop_timeout=2)


def numbers_in(path) -> list[int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return [int(n) for n in re.findall(r" stdout \[Bot\] line (\d+)$", text, re.M)]


def bot_info(config) -> dict:
    result = cli(config, "status", "Bot", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_disk_full_loses_lines_not_the_manager(tmp_path, manager_factory):
    config = counting_bot(tmp_path)
    with small_tmpfs(tmp_path / "logs") as logs:
        filler = logs / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:  # fill the disk
            while True:
                handle.write(b"f" * 4096)
                handle.flush()
        filler.write_bytes(filler.read_bytes()[: -16 * 1024])  # but a few KiB
        manager = manager_factory(config).wait_ready()
        pid = bot_info(config)["pid"]
        wait_for(lambda: "Bot.log: No space left" in manager.output(), message="full warning")
        failing_at = manager.output().count("[Bot] line ")
        time.sleep(1)
        # Supervision and the console go on while the log cannot be written.
        assert manager.output().count("[Bot] line ") > failing_at + 20
        info = bot_info(config)
        assert info["state"] == "running" and info["pid"] == pid
        assert cli(config, "restart", "Bot").returncode == 0

        filler.unlink()
        wait_for(lambda: "Bot.log is written again" in manager.output(), message="recovery")
        recovered = numbers_in(logs / "Bot.log")
        wait_for(lambda: len(numbers_in(logs / "Bot.log")) > len(recovered) + 20)
        assert manager.stop() == 0
    output = manager.output()
    assert "Traceback" not in output
    # One warning when it failed and one when it worked again, per file (the manager log
    # was on the full disk too), never one per line.
    assert output.count("cannot write") <= 2, output
    lost = re.search(r"Bot\.log is written again; (\d+) lines could not be written", output)
    assert lost and int(lost.group(1)) > 20, output


def test_deleted_log_directory_is_created_again(tmp_path, manager_factory):
    config = counting_bot(tmp_path)
    manager = manager_factory(config).wait_ready()
    log = tmp_path / "logs" / "Bot.log"
    wait_for(lambda: len(numbers_in(log)) > 5, message="first lines")
    shutil.rmtree(tmp_path / "logs")
    wait_for(lambda: len(numbers_in(log)) > 20, message="lines in a new file")
    assert numbers_in(log)[0] > 5  # a new file, not the old one
    assert manager.stop() == 0
    assert "Traceback" not in manager.output()


def test_sigusr1_reopens_moved_log_files(tmp_path, manager_factory):
    config = counting_bot(tmp_path)
    manager = manager_factory(config).wait_ready()
    logs = tmp_path / "logs"
    wait_for(lambda: len(numbers_in(logs / "Bot.log")) > 5, message="first lines")
    os.rename(logs / "Bot.log", logs / "Bot.log.old")
    os.rename(logs / "bot_manager.log", logs / "bot_manager.log.old")
    manager.process.send_signal(signal.SIGUSR1)
    wait_for(lambda: len(numbers_in(logs / "Bot.log")) > 5, message="lines in the new file")
    wait_for((logs / "bot_manager.log").exists, message="new manager log")
    assert "log files reopened" in (logs / "bot_manager.log").read_text()
    assert manager.process.poll() is None  # SIGUSR1 did not kill it
    old, new = numbers_in(logs / "Bot.log.old"), numbers_in(logs / "Bot.log")
    assert manager.stop() == 0
    assert old + new == list(range(len(old) + len(new)))  # every line once, in order
