"""Day-to-day operation (issue 11) end to end: env files and their secrets, why and when
a bot stopped (status, list --json), history, and `logs` (-n, -f across a rotation)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid

import attrs
import pytest
from helpers import CLI, cli, wait_for, write_bot, write_config

from trio_orchestrator.client import request, socket_address
from trio_orchestrator.config import BotConfig

SLEEPER = """
import time
print("up", flush=True)
while True:
    time.sleep(1)
"""

CONFIG_HAS_ENV_FILE = "env_file" in attrs.fields_dict(BotConfig)


def query(config, *args):
    result = cli(config, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def bots(config) -> dict[str, dict]:
    """Every bot as the running manager shows it (asked directly: faster than the CLI)."""
    with socket_address(config.parent / ".trio-orch.sock") as address:
        document = request(address, {"command": "list"}, timeout=30)
    return {bot["name"]: bot for bot in document["bots"]}


def wait_bot(config, name, predicate, message, timeout=20.0):
    def found():
        bot = bots(config)[name]
        return predicate(bot) and bot

    return wait_for(found, timeout, 0.1, message)


def wait_state(config, name, state, timeout=20.0):
    return wait_bot(config, name, lambda bot: bot["state"] == state, f"{name} {state}", timeout)


# ----- env files -----


@pytest.mark.skipif(not CONFIG_HAS_ENV_FILE, reason="config.py has no env_file key yet")
def test_env_file_values_reach_the_bot_and_are_shown_nowhere(tmp_path, manager_factory):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    bot_dir = write_bot(
        tmp_path / "secret",
        """
        import hashlib, os, time
        token = os.environ["TOKEN"].encode()
        # Never the value itself: its digest, and the variable that env: overrides.
        print("token", hashlib.sha256(token).hexdigest(), "mode", os.environ["MODE"], flush=True)
        while True:
            time.sleep(1)
        """,
    )
    (bot_dir / ".env").write_text(f'# the bot\'s secrets\nexport TOKEN="{secret}"\nMODE=file\n')
    write_bot(tmp_path / "plain", SLEEPER)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "Secret": {
                "script": "main.py",
                "directory": "secret",
                "env_file": ".env",
                "env": {"MODE": "env"},
            },
            "Broken": {"script": "main.py", "directory": "plain", "env_file": "missing.env"},
            "Plain": {"script": "main.py", "directory": "plain"},
        },
        command_poll_interval=0.1,
        stop_timeout=5,
    )
    manager = manager_factory(config).wait_ready()
    wait_state(config, "Secret", "running")
    wait_state(config, "Plain", "running")
    broken = wait_state(config, "Broken", "failed")
    missing = tmp_path / "plain" / "missing.env"
    assert broken["last_exit_reason"] == f"env file {missing}: no such file or directory"
    log = tmp_path / "logs" / "Secret.log"
    wait_for(lambda: log.exists() and f"token {digest} mode env" in log.read_text(), 15)

    start = cli(config, "start", "Broken")
    assert start.returncode == 1
    assert f"Broken could not start: env file {missing}" in start.stderr
    assert bots(config)["Plain"]["state"] == "running"  # the others run

    shown = [
        query(config, "list", "--json"),
        query(config, "list"),
        query(config, "status", "Secret", "--json"),
        query(config, "status", "Secret"),
        query(config, "status_all"),
        query(config, "status_all", "--json"),
        query(config, "history", "Secret", "--json"),
    ]
    (tmp_path / "bot_commands.txt").open("a").write("status_all\n")
    wait_for(lambda: "status Secret" in manager.output(), 15)
    assert manager.stop() == 0
    shown += [manager.output(), query(config, "list", "--json")]
    shown += [path.read_text(errors="replace") for path in (tmp_path / "logs").iterdir()]
    shown.append((tmp_path / "bot_states.db").read_bytes().decode(errors="replace"))
    for text in shown:
        assert secret not in text
    assert digest in (tmp_path / "logs" / "Secret.log").read_text()


# ----- why and when -----

CRASH = """
import os, signal, sys, time
print("up", flush=True)
time.sleep(float(sys.argv[1]))
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture
def ops_config(tmp_path):
    write_bot(tmp_path / "bots", SLEEPER)
    write_bot(tmp_path / "bots", CRASH, name="crash.py")
    never = {"script": "crash.py", "directory": "bots", "restart": "never"}
    return write_config(
        tmp_path / "bot_config.yaml",
        {
            "Sleeper": {"script": "main.py", "directory": "bots"},
            "Other": {"script": "main.py", "directory": "bots"},
            "Crash": {**never, "args": ["0.3", "3"]},
            "Killed": {**never, "args": ["0.3", "kill"]},
            "Backoff": {
                "script": "crash.py",
                "directory": "bots",
                "args": ["0", "1"],
                "restart_delay": 30,
            },
        },
        command_poll_interval=0.1,
        stop_timeout=5,
    )


def status_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


@pytest.mark.slow
def test_status_reasons_uptime_next_restart_and_history(ops_config, manager_factory):
    config = ops_config
    manager = manager_factory(config).wait_ready()
    crash = wait_state(config, "Crash", "exited")
    assert crash["last_exit_reason"] == "exited with code 3"
    killed = wait_state(config, "Killed", "exited")
    assert killed["last_exit_reason"] == "killed by SIGKILL"
    assert killed["last_exit_code"] == -signal.SIGKILL

    backoff = wait_state(config, "Backoff", "backoff")
    assert backoff["last_exit_reason"] == "exited with code 1"
    assert backoff["pid"] is None and backoff["uptime"] is None
    next_restart = backoff["next_restart"]
    assert next_restart is not None and next_restart > backoff["last_exit_time"]
    status = status_fields(query(config, "status", "Backoff"))
    assert status["next restart"] == next_restart

    sleeper = wait_state(config, "Sleeper", "running")
    assert sleeper["next_restart"] is None
    time.sleep(1.2)
    later = json.loads(query(config, "status", "Sleeper", "--json"))
    assert later["uptime"] >= sleeper["uptime"] + 1  # advancing
    assert later["pid"] == sleeper["pid"]
    text = status_fields(query(config, "status", "Sleeper"))
    assert text["state"] == "running"
    assert text["pid"] == str(sleeper["pid"])
    assert text["last start"] == sleeper["last_start_time"]
    assert text["uptime"].endswith("s")

    stop = cli(config, "stop", "Sleeper")
    assert stop.returncode == 0, stop.stderr
    stopped = bots(config)["Sleeper"]
    assert stopped["last_exit_reason"] == "stopped by user"
    assert stopped["pid"] is None and stopped["uptime"] is None
    assert status_fields(query(config, "status", "Sleeper"))["last exit"] == "stopped by user"

    # history, from the manager
    events = json.loads(query(config, "history", "Sleeper", "--json"))
    assert events["manager"] == "running" and events["name"] == "Sleeper"
    kinds = [event["event"] for event in events["events"]]
    assert kinds == ["starting", "running", "stopping", "stopped"]
    running = events["events"][1]
    assert running["detail"] == f"pid {sleeper['pid']}, start #1"
    assert events["events"][-1]["detail"].startswith("stopped by user")
    last_two = json.loads(query(config, "history", "Sleeper", "-n", "2", "--json"))["events"]
    assert last_two == events["events"][-2:]
    crash_events = json.loads(query(config, "history", "Crash", "--json"))["events"]
    assert crash_events[-1]["event"] == "exited"
    assert "exited with code 3" in crash_events[-1]["detail"]
    text = query(config, "history", "Killed")
    assert "killed by SIGKILL" in text.splitlines()[-1]

    # the manager's shutdown, and everything offline
    assert manager.stop() == 0
    offline = json.loads(query(config, "status", "Other", "--json"))
    assert offline["manager"] == "not running"
    assert offline["last_exit_reason"] == "stopped by the manager's shutdown"
    offline_history = json.loads(query(config, "history", "Sleeper", "-n", "3", "--json"))
    assert offline_history["manager"] == "not running"
    assert offline_history["events"] == events["events"][-3:]
    assert "stopped by user" in query(config, "history", "Sleeper", "-n", "1")
    unknown = cli(config, "history", "Nobody")
    assert unknown.returncode == 2 and "unknown bot 'Nobody'" in unknown.stderr


def test_history_and_logs_without_any_db_or_log(tmp_path):
    write_bot(tmp_path / "bots", SLEEPER)
    config = write_config(
        tmp_path / "bot_config.yaml", {"Sleeper": {"script": "main.py", "directory": "bots"}}
    )
    document = json.loads(query(config, "history", "Sleeper", "--json"))
    assert document == {"manager": "not running", "name": "Sleeper", "events": []}
    result = cli(config, "logs", "Sleeper")
    assert result.returncode == 1 and "no log yet" in result.stderr
    assert cli(config, "logs", "Nobody").returncode == 2


# ----- logs -----


def test_logs_of_a_bot_and_of_the_manager(ops_config, manager_factory, tmp_path):
    config = ops_config
    manager = manager_factory(config).wait_ready()
    wait_state(config, "Sleeper", "running")
    assert query(config, "logs", "Sleeper", "-n", "5").splitlines()[-1].endswith("up")
    manager_log = query(config, "logs")
    assert len(manager_log.splitlines()) <= 20
    assert "Sleeper running" in query(config, "logs", "-n", "100")
    assert manager.stop() == 0
    assert query(config, "logs", "Sleeper", "-n", "1").rstrip().endswith("up")  # no manager


WRITER = """
import os, sys, time
path, total, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
handle = open(path, "ab")
for n in range(total):
    handle.write(b"line %d\\n" % n)
    handle.flush()
    if n % every == every - 1:
        handle.close()
        for index in (2, 1):
            if os.path.exists(f"{path}.{index}"):
                os.replace(f"{path}.{index}", f"{path}.{index + 1}")
        os.rename(path, path + ".1")
        handle = open(path, "ab")
    time.sleep(0.002)
handle.close()
"""


def test_logs_follow_across_rotations_until_ctrl_c(tmp_path):
    write_bot(tmp_path / "bots", SLEEPER)
    config = write_config(
        tmp_path / "bot_config.yaml", {"Writer": {"script": "main.py", "directory": "bots"}}
    )
    log = tmp_path / "logs" / "Writer.log"
    log.parent.mkdir()
    log.write_bytes(b"old 1\nold 2\n")
    follower = subprocess.Popen(
        [*CLI, "--config", str(config), "logs", "Writer", "-n", "1", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout.readline() == b"old 2\n"  # following from here on
        total = 600
        writer = tmp_path / "writer.py"
        writer.write_text(WRITER)
        subprocess.run([sys.executable, str(writer), str(log), str(total), "100"], check=True)
        time.sleep(1.0)  # a few polls to read the last lines
    finally:
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=10)
    assert follower.returncode == 0, err
    assert b"Traceback" not in err
    assert out.decode().splitlines() == [f"line {n}" for n in range(total)]
