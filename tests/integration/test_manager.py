"""End-to-end: `trio-orch start_all` as a user runs it, with real bots and signals."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time

import pytest
from helpers import (
    IGNORES_SIGTERM,
    TICKER,
    bot_entry,
    cli,
    manager_log,
    pid_alive,
    wait_for,
    write_bot,
    write_config,
)


def listing(config):
    result = cli(config, "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bots_by_name(config):
    return {bot["name"]: bot for bot in listing(config)["bots"]}


@pytest.fixture
def two_bots(tmp_path):
    write_bot(tmp_path / "a", TICKER)
    write_bot(tmp_path / "b", TICKER)
    return write_config(
        tmp_path / "bot_config.yaml",
        {
            "Alpha": bot_entry(tmp_path / "a", color="red", description="first"),
            "Beta": bot_entry(tmp_path / "b", color="green"),
        },
        stop_timeout=5,
    )


def test_prefixed_output_logs_shutdown_and_restore(two_bots, manager_factory, tmp_path):
    manager = manager_factory(two_bots).wait_ready()
    wait_for(lambda: "[Beta] tick 2" in manager.output(), message="output")
    bots = bots_by_name(two_bots)
    assert listing(two_bots)["manager"] == "running"
    assert {bots["Alpha"]["state"], bots["Beta"]["state"]} == {"running"}
    first_pids = {name: bot["pid"] for name, bot in bots.items()}

    assert manager.stop(signal.SIGINT) == 0
    out = manager.stdout_path.read_text()
    assert "[Alpha] tick 0\n" in out and "[Beta] goodbye\n" in out  # piped: no colour
    assert "\x1b[" not in out
    assert not any(pid_alive(pid) for pid in first_pids.values())
    # Per-bot logs and the manager log.
    assert "[Alpha] tick 0" in (tmp_path / "logs" / "Alpha.log").read_text()
    manager_log = (tmp_path / "logs" / "bot_manager.log").read_text()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"  # ISO 8601, local
    assert re.search(rf"^{stamp} INFO Alpha running", manager_log, re.M)

    after = bots_by_name(two_bots)
    assert listing(two_bots)["manager"] == "not running"
    assert all(bot["pid"] is None for bot in after.values())
    assert all(bot["preserved"] for bot in after.values())

    # The next start_all restores both.
    manager = manager_factory(two_bots).wait_ready()
    wait_for(lambda: all(b["state"] == "running" for b in bots_by_name(two_bots).values()))
    assert bots_by_name(two_bots)["Alpha"]["start_count"] == 2
    assert manager.stop() == 0


def test_user_stopped_bot_stays_stopped_across_restarts(two_bots, manager_factory):
    manager = manager_factory(two_bots).wait_ready()
    wait_for(lambda: bots_by_name(two_bots)["Beta"]["state"] == "running")
    assert cli(two_bots, "stop", "Beta").returncode == 0
    assert manager.stop() == 0
    manager = manager_factory(two_bots).wait_ready()
    wait_for(lambda: bots_by_name(two_bots)["Alpha"]["state"] == "running")
    # The restore logs what it starts before it starts anything: Alpha alone.
    assert "INFO starting 1 bots: Alpha\n" in manager_log(two_bots)
    assert bots_by_name(two_bots)["Beta"]["state"] == "stopped"
    assert manager.stop() == 0


def test_autostart_false_is_not_started_until_asked(tmp_path, manager_factory):
    write_bot(tmp_path / "a", TICKER)
    config = write_config(
        tmp_path / "bot_config.yaml", {"Lazy": bot_entry(tmp_path / "a", autostart=False)}
    )
    manager = manager_factory(config).wait_ready()
    assert bots_by_name(config)["Lazy"]["state"] == "stopped"
    result = cli(config, "start", "Lazy")
    assert result.returncode == 0 and "started" in result.stdout
    assert bots_by_name(config)["Lazy"]["pid"]
    assert cli(config, "start", "Lazy").returncode == 1  # already running
    assert manager.stop() == 0
    # The restore ran before our start was answered, and never tried to start Lazy: any
    # attempt, successful or not, is logged as a command "from restore".
    assert "from restore" not in manager_log(config)
    assert bots_by_name(config)["Lazy"]["start_count"] == 1


def test_color_always_and_no_color(tmp_path, manager_factory):
    write_bot(tmp_path / "a", 'print("hello", flush=True)\nimport time; time.sleep(30)\n')
    config = write_config(tmp_path / "bot_config.yaml", {"Hue": bot_entry(tmp_path / "a")})
    manager = manager_factory(config, ["--color", "always"]).wait_ready()
    wait_for(lambda: "hello" in manager.output())
    assert "\x1b[37m[Hue]\x1b[0m hello\n" in manager.output()
    assert manager.stop() == 0
    # no-color.org: NO_COLOR turns off the default, an explicit --color always still wins.
    env = {**os.environ, "NO_COLOR": "1"}
    manager = manager_factory(config, ["--color", "always"], env=env).wait_ready()
    wait_for(lambda: "hello" in manager.output())
    assert "\x1b[37m[Hue]\x1b[0m hello\n" in manager.output()
    assert manager.stop() == 0
    manager = manager_factory(config, ["--color", "never"]).wait_ready()
    wait_for(lambda: "hello" in manager.output())
    assert "[Hue] hello\n" in manager.output()
    assert "\x1b[" not in manager.output()
    assert manager.stop() == 0


@pytest.mark.parametrize("flush", [True, False])
def test_lines_stream_at_once_without_pythonunbuffered_in_the_manager(
    tmp_path, manager_factory, flush
):
    # The manager's stdout is a file and its env does not ask Python for unbuffered output:
    # it must still flush each line. A bot that never flushes streams too, because every bot
    # gets PYTHONUNBUFFERED=1.
    write_bot(tmp_path / "a", f'print("first", flush={flush})\nimport time; time.sleep(30)\n')
    config = write_config(tmp_path / "bot_config.yaml", {"Buf": bot_entry(tmp_path / "a")})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    manager = manager_factory(config, env=env).wait_ready()
    wait_for(lambda: "[Buf] first\n" in manager.stdout_path.read_text(), timeout=10)
    assert manager.stop() == 0


@pytest.mark.slow
def test_shutdown_is_parallel_bounded_by_largest_stop_timeout(tmp_path, manager_factory):
    bots = {}
    for i in range(4):
        write_bot(tmp_path / f"s{i}", IGNORES_SIGTERM)
        bots[f"S{i}"] = bot_entry(tmp_path / f"s{i}", stop_timeout=2)
    config = write_config(tmp_path / "bot_config.yaml", bots)
    manager = manager_factory(config).wait_ready()
    wait_for(lambda: manager.output().count("up") == 4)
    pids = [bot["pid"] for bot in listing(config)["bots"]]
    started = time.monotonic()
    assert manager.stop() == 0
    elapsed = time.monotonic() - started
    assert elapsed < 2 * 4  # not the sum of the four timeouts
    assert elapsed > 1.9
    assert not any(pid_alive(pid) for pid in pids)


def test_second_signal_kills_at_once(tmp_path, manager_factory):
    write_bot(tmp_path / "s", IGNORES_SIGTERM)
    config = write_config(
        tmp_path / "bot_config.yaml", {"S": bot_entry(tmp_path / "s", stop_timeout=30)}
    )
    manager = manager_factory(config).wait_ready()
    wait_for(lambda: "up" in manager.output())
    pid = listing(config)["bots"][0]["pid"]
    manager.process.send_signal(signal.SIGINT)
    wait_for(lambda: "SIGINT received: stopping all bots" in manager.output())
    started = time.monotonic()
    assert manager.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 10  # not stop_timeout (30 s)
    assert not pid_alive(pid)


def test_original_schema_database_is_migrated_by_start_all(tmp_path, manager_factory):
    write_bot(tmp_path / "a", TICKER)
    write_bot(tmp_path / "b", TICKER)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"Old": bot_entry(tmp_path / "a"), "Stopped": bot_entry(tmp_path / "b")},
    )
    db = sqlite3.connect(tmp_path / "bot_states.db")
    db.execute(
        "CREATE TABLE bot_states (bot_name TEXT PRIMARY KEY, is_running BOOLEAN, "
        "last_start_time TEXT, start_count INTEGER, preserved_state BOOLEAN)"
    )
    db.execute("INSERT INTO bot_states VALUES ('Old', 0, '2024-05-01 10:00:00', 7, 1)")
    db.execute("INSERT INTO bot_states VALUES ('Stopped', 0, '2024-05-01 10:00:00', 2, 0)")
    db.commit()
    db.close()
    before = bots_by_name(config)  # readable before migration, with no manager
    assert before["Old"]["start_count"] == 7 and before["Old"]["pid"] is None

    manager = manager_factory(config).wait_ready()
    wait_for(lambda: bots_by_name(config)["Old"]["state"] == "running")
    bots = bots_by_name(config)
    assert bots["Old"]["start_count"] == 8  # preserved -> restored, count continues
    assert bots["Stopped"]["state"] == "stopped"  # stopped by a user in the old tool
    assert manager.stop() == 0
