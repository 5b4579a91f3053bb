"""The control plane end to end: ``python -m trio_orchestrator`` against a real manager.

Exit codes (SPEC 6.1), offline ``list``/``status``, the command file under concurrent
writers (SPEC 6.2), and recovery after a SIGKILL of the manager (SPEC 5).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import uuid

import pytest
from helpers import (
    CLI,
    SLEEPER,
    bots_of,
    cli,
    pid_alive,
    processes_with,
    wait_for,
    write_bot,
    write_config,
)

from trio_orchestrator.errors import ManagerNotRunning
from trio_orchestrator.procfs import process_start_ticks
from trio_orchestrator.state import BotRecord, StateStore, Write


@pytest.fixture
def setup(tmp_path):
    """A config with two sleeper bots, each with a unique marker in its argv."""

    def make(directory=tmp_path, **settings):
        directory.mkdir(parents=True, exist_ok=True)
        markers = {name: f"marker-{uuid.uuid4().hex}" for name in ("Alpha", "Beta")}
        write_bot(directory / "bots", SLEEPER)
        bots = {
            "Alpha": {
                "script": "main.py",
                "directory": "bots",
                "args": [markers["Alpha"]],
                "description": "the first",
            },
            "Beta": {
                "script": "main.py",
                "directory": "bots",
                "args": [markers["Beta"]],
                "autostart": False,
            },
        }
        settings = {"command_poll_interval": 0.1, "stop_timeout": 5, **settings}
        config = write_config(directory / "bot_config.yaml", bots, **settings)
        return config, markers

    return make


def wait_manager(socket_path, process=None, timeout: float = 20.0) -> dict[str, dict]:
    """Wait until the manager at *socket_path* answers; return its bots."""

    def answered():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"manager exited with {process.returncode}")
        try:
            return bots_of(socket_path)
        except ManagerNotRunning:
            return None

    return wait_for(answered, timeout, message="the manager")


def wait_state(socket_path, name: str, state: str, timeout: float = 15.0) -> dict:
    return wait_for(
        lambda: (bot := bots_of(socket_path)[name])["state"] == state and bot,
        timeout,
        message=f"{name} {state}",
    )


def no_traceback(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


# ----- exit codes with a manager -----


def test_exit_codes_against_a_running_manager(setup, manager_factory):
    config, _ = setup()
    manager = manager_factory(config).wait_ready()
    wait_state(manager.socket, "Alpha", "running")

    def run(*args):
        result = cli(config, *args)
        no_traceback(result)
        return result

    # 1: the action failed
    for args, words in [
        (("stop", "Beta"), "not running"),
        (("pause", "Beta"), "not running"),
        (("resume", "Alpha"), "not paused"),
        (("start", "Alpha"), "already running"),
    ]:
        result = run(*args)
        assert result.returncode == 1, (args, result)
        assert words in result.stderr
    # 2: unknown bot or bad usage
    for args in [
        ("stop", "Nope"),
        ("restart", "Nope"),
        ("status", "Nope"),
        ("restart",),
        ("frobnicate", "Alpha"),
        ("list", "--bogus"),
        ("stop", "x" * 100_000),  # larger than a request may be
    ]:
        result = run(*args)
        assert result.returncode == 2, (args[:2], result.stderr[-300:])
    assert "unknown bot 'Nope'" in run("stop", "Nope").stderr
    # 0: success, and the effect is visible
    alpha = bots_of(manager.socket)["Alpha"]
    assert run("pause", "Alpha").returncode == 0
    assert bots_of(manager.socket)["Alpha"]["state"] == "paused"
    assert run("resume", "Alpha").returncode == 0
    restarted = run("restart", "Alpha")
    assert restarted.returncode == 0, restarted.stderr
    assert "restarted" in restarted.stdout
    after = bots_of(manager.socket)["Alpha"]
    assert after["start_count"] == alpha["start_count"] + 1
    assert after["pid"] != alpha["pid"]
    assert not pid_alive(alpha["pid"])
    assert run("start", "Beta").returncode == 0
    assert run("stop", "Alpha").returncode == 0
    stopped = bots_of(manager.socket)["Alpha"]
    assert (stopped["state"], stopped["pid"]) == ("stopped", None)
    status = run("status", "Beta", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["state"] == "running"
    assert manager.process.poll() is None


def test_second_manager_on_the_same_db_exits_1_naming_the_owner(setup, manager_factory):
    config, _ = setup()
    first = manager_factory(config).wait_ready()
    wait_state(first.socket, "Alpha", "running")
    second = cli(config, "start_all", timeout=30)
    no_traceback(second)
    assert second.returncode == 1
    assert f"pid {first.process.pid}" in second.stderr
    assert first.process.poll() is None
    assert bots_of(first.socket)["Alpha"]["state"] == "running"
    assert cli(config, "list").returncode == 0


def test_second_manager_on_the_same_socket_leaves_it_alone(setup, manager_factory, tmp_path):
    config, _ = setup()
    first = manager_factory(config).wait_ready()
    wait_state(first.socket, "Alpha", "running")
    other, _ = setup(tmp_path / "other")
    second = cli(other, "--socket", str(first.socket), "start_all", timeout=30)
    no_traceback(second)
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    # The first manager's socket was neither stolen nor removed.
    assert first.socket.exists()
    assert bots_of(first.socket)["Alpha"]["state"] == "running"


# ----- without a manager -----


def test_no_manager_no_db(setup):
    config, _ = setup()
    db = config.parent / "bot_states.db"
    listing = cli(config, "list")
    assert listing.returncode == 0, listing.stderr
    assert "not running" in listing.stdout
    assert "Alpha" in listing.stdout
    assert "Beta" in listing.stdout
    document = json.loads(cli(config, "list", "--json").stdout)
    assert document["manager"] == "not running"
    assert [bot["name"] for bot in document["bots"]] == ["Alpha", "Beta"]
    for bot in document["bots"]:
        assert bot["pid"] is None
        assert bot["start_count"] == 0
        assert bot["restarts"] == 0
        assert bot["last_exit_code"] is None
    status = cli(config, "status", "Alpha", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["manager"] == "not running"
    assert cli(config, "status", "Nope").returncode == 2
    for action in ("start", "stop", "restart", "pause", "resume"):
        result = cli(config, action, "Alpha")
        no_traceback(result)
        assert result.returncode == 3, (action, result.stderr)
        assert "no manager is running" in result.stderr
        unknown = cli(config, action, "Nope")
        assert unknown.returncode == 2, (action, unknown.stderr)
        assert "unknown bot 'Nope'" in unknown.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    "content",
    [None, "bots: [unclosed\n", "bots:\n  A:\n    directory: x\n", "bots:\n  'bad name!': {}\n"],
    ids=["missing", "yaml-syntax", "missing-script", "bad-name"],
)
def test_invalid_config_exits_2(tmp_path, content):
    config = tmp_path / "bot_config.yaml"
    if content is not None:
        config.write_text(content)
    for args in (("list",), ("status", "A"), ("stop", "A"), ("check",), ("start_all",)):
        result = cli(config, *args, timeout=30)
        no_traceback(result)
        assert result.returncode == 2, (args, result.stderr)
        assert str(config) in result.stderr


def test_list_json_schema_and_graceful_shutdown_clears_pids(setup, manager_factory):
    config, _ = setup()
    manager = manager_factory(config).wait_ready()
    wait_state(manager.socket, "Alpha", "running")
    assert stat.S_IMODE(manager.socket.stat().st_mode) == 0o600
    result = cli(config, "list", "--json")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["manager"] == "running"
    bots = {bot["name"]: bot for bot in document["bots"]}
    assert set(bots) == {"Alpha", "Beta"}
    types = {
        "name": str,
        "state": str,
        "pid": (int, type(None)),
        "start_count": int,
        "restarts": int,
        "last_exit_code": (int, type(None)),
        "description": str,
    }
    for bot in bots.values():
        for key, kind in types.items():
            assert isinstance(bot[key], kind), (key, bot)
    assert bots["Alpha"]["state"] == "running"
    assert isinstance(bots["Alpha"]["pid"], int)
    assert bots["Alpha"]["start_count"] == 1
    assert bots["Alpha"]["description"] == "the first"
    assert bots["Beta"]["pid"] is None
    assert bots["Beta"]["start_count"] == 0
    # Human output too.
    table = cli(config, "list").stdout
    assert "manager: running" in table
    assert str(bots["Alpha"]["pid"]) in table

    assert manager.stop(signal.SIGTERM) == 0
    assert not manager.socket.exists()
    assert not pid_alive(bots["Alpha"]["pid"])
    after = json.loads(cli(config, "list", "--json").stdout)
    assert after["manager"] == "not running"
    assert all(bot["pid"] is None for bot in after["bots"]), after
    assert cli(config, "stop", "Alpha").returncode == 3


def test_socket_path_override(setup, manager_factory, tmp_path):
    config, _ = setup(tmp_path / "conf")
    custom = tmp_path / "run" / "custom.sock"
    custom.parent.mkdir()
    manager = manager_factory(config, extra_args=("--socket", str(custom)))
    wait_manager(custom, manager.process)
    wait_state(custom, "Alpha", "running")
    assert not manager.socket.exists()  # the default place stays empty
    assert cli(config, "--socket", str(custom), "restart", "Alpha").returncode == 0
    listing = json.loads(cli(config, "--socket", str(custom), "list", "--json").stdout)
    assert listing["manager"] == "running"
    # Without the option the client looks in the default place.
    assert json.loads(cli(config, "list", "--json").stdout)["manager"] == "not running"
    assert cli(config, "restart", "Alpha").returncode == 3
    assert manager.stop() == 0
    assert not custom.exists()


def test_very_long_config_directory(setup, manager_factory, tmp_path):
    directory = tmp_path / ("a" * 70) / ("b" * 70)
    config, _ = setup(directory)
    assert len(os.fsencode(directory / ".trio-orch.sock")) > 108
    manager = manager_factory(config).wait_ready()
    wait_state(manager.socket, "Alpha", "running")
    result = cli(config, "restart", "Alpha")
    assert result.returncode == 0, result.stderr
    listing = json.loads(cli(config, "list", "--json").stdout)
    assert listing["manager"] == "running"
    assert {bot["name"]: bot for bot in listing["bots"]}["Alpha"]["start_count"] == 2
    assert manager.stop() == 0
    assert not manager.socket.exists()


# ----- the command file, end to end -----

WRITER = """
import random, sys, time
path, count, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
i = 0
while i < count:
    for _ in range(rng.randint(1, 15)):
        if i == count:
            break
        with open(path, "a") as handle:  # echo "..." >> bot_commands.txt
            handle.write(f"stop Ghost{i}\\n")
            if i % every == every - 1:
                handle.write("restart Alpha\\n")
        i += 1
    time.sleep(rng.random() * 0.01)
"""


def test_command_file_with_a_concurrent_writer_exactly_once(setup, manager_factory):
    """Numbered commands appended in bursts by another process, no lock: each one is
    executed exactly once and in order; every `restart Alpha` starts Alpha exactly once."""
    config, markers = setup(command_poll_interval=0.05)
    manager = manager_factory(config).wait_ready()
    wait_state(manager.socket, "Alpha", "running")
    commands = config.parent / "bot_commands.txt"
    log = config.parent / "logs" / "bot_manager.log"
    count, every = 1000, 50
    subprocess.run(
        [sys.executable, "-c", WRITER, str(commands), str(count), str(every)],
        check=True,
        timeout=60,
    )
    pattern = re.compile(r"command 'stop Ghost(\d+)' from command file rejected")

    def ghosts() -> list[int]:
        return [int(n) for n in pattern.findall(log.read_text(errors="replace"))]

    wait_for(lambda: len(ghosts()) >= count, 60, message="all numbered commands")
    # A last line, then the processing file finished: every line before it has run, and
    # anything run twice is in the log by now.
    with commands.open("a") as handle:
        handle.write("stop GhostEnd\n")
    processing = commands.with_name(commands.name + ".processing")
    wait_for(
        lambda: "'stop GhostEnd' from command file" in log.read_text() and not processing.exists(),
        30,
        message="the last line and the processing file finished",
    )
    assert ghosts() == list(range(count))
    restarts = count // every
    alpha = wait_for(
        lambda: (
            (bot := bots_of(manager.socket)["Alpha"])["start_count"] == 1 + restarts
            and bot["state"] == "running"
            and bot
        ),
        30,
        message="every restart",
    )
    assert processes_with(markers["Alpha"]) == [alpha["pid"]]
    assert log.read_text().count("command 'restart Alpha' from command file") == restarts


def test_command_file_survives_a_manager_restart(setup, manager_factory):
    """Lines executed by one manager are not executed again by the next."""
    config, _ = setup()
    commands = config.parent / "bot_commands.txt"
    log = config.parent / "logs" / "bot_manager.log"
    manager = manager_factory(config).wait_ready()
    wait_state(manager.socket, "Alpha", "running")
    with commands.open("a") as handle:
        handle.write("stop Ghost1\nrestart Alpha\n")
    wait_for(lambda: bots_of(manager.socket)["Alpha"]["start_count"] == 2, message="restart")
    # The restart is done (and its line recorded as executed) once it is logged; a stop
    # before that interrupts the command, and the next manager rightly runs it again.
    wait_for(lambda: "command 'restart Alpha' from command file" in log.read_text())
    assert manager.stop() == 0
    second = manager_factory(config).wait_ready()
    wait_state(second.socket, "Alpha", "running")
    with commands.open("a") as handle:
        handle.write("stop Ghost2\n")
    wait_for(lambda: "Ghost2" in log.read_text(), message="Ghost2")
    assert log.read_text().count("'stop Ghost1'") == 1
    assert bots_of(second.socket)["Alpha"]["start_count"] == 3  # restored, not re-restarted


# ----- recovery after SIGKILL -----


def test_sigkill_of_the_manager_leaves_no_duplicates(setup, manager_factory):
    config, markers = setup()
    first = manager_factory(config).wait_ready()
    wait_state(first.socket, "Alpha", "running")
    assert cli(config, "start", "Beta").returncode == 0
    before = bots_of(first.socket)
    orphans = {name: before[name]["pid"] for name in ("Alpha", "Beta")}
    for name in orphans:  # printed already: a print after the kill would hit a broken pipe
        log = config.parent / "logs" / f"{name}.log"
        wait_for(lambda log=log: log.exists() and "up marker-" in log.read_text(), message=name)

    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    for name, pid in orphans.items():
        assert pid_alive(pid), f"{name} died with its manager"
        assert processes_with(markers[name]) == [pid]
    # The dead manager's socket is stale: clients say so.
    assert first.socket.exists()
    offline = cli(config, "list", "--json")
    assert offline.returncode == 0
    assert json.loads(offline.stdout)["manager"] == "not running"
    assert cli(config, "stop", "Alpha").returncode == 3

    second = manager_factory(config)
    wait_manager(second.socket, second.process)
    for name in orphans:
        wait_state(second.socket, name, "running")
    after = bots_of(second.socket)
    for name, pid in orphans.items():
        wait_for(lambda pid=pid: not pid_alive(pid), 10, message=f"orphan {name} ended")
        assert after[name]["pid"] != pid
        assert processes_with(markers[name]) == [after[name]["pid"]]
        assert after[name]["start_count"] == before[name]["start_count"] + 1
    assert "left running by a manager" in second.output()


def test_pid_reuse_never_kills_an_unrelated_process(setup, manager_factory):
    config, markers = setup()
    # An unrelated process that happens to have the recorded pid, leading its own group.
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ticks = process_start_ticks(stranger.pid)
        store = StateStore(config.parent / "bot_states.db")
        try:
            store.commit(
                [
                    Write(
                        BotRecord(
                            name="Alpha",
                            is_running=True,
                            state="running",
                            pid=stranger.pid,
                            pid_start_ticks=ticks + 1000,
                            start_count=5,
                        )
                    ),
                    Write(  # a db of the original tool: a pid without start time
                        BotRecord(
                            name="Beta",
                            is_running=True,
                            state="running",
                            pid=stranger.pid,
                            start_count=2,
                        )
                    ),
                ]
            )
        finally:
            store.close()
        manager = manager_factory(config).wait_ready()
        for name in ("Alpha", "Beta"):
            wait_state(manager.socket, name, "running")
        bots = bots_of(manager.socket)
        assert stranger.poll() is None, "an unrelated process was killed"
        assert bots["Alpha"]["start_count"] == 6
        assert bots["Beta"]["start_count"] == 3
        assert processes_with(markers["Alpha"]) == [bots["Alpha"]["pid"]]
    finally:
        stranger.kill()
        stranger.wait()


def test_cli_module_entry_point():
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "start_all" in result.stdout


# ----- several bots per command (issue 12) -----


def test_actions_on_several_bots_and_all(setup, manager_factory):
    config, _ = setup()
    manager = manager_factory(config).wait_ready()
    wait_state(manager.socket, "Alpha", "running")

    started = cli(config, "start", "Beta", "Alpha")  # Alpha already runs: that one fails
    no_traceback(started)
    assert started.returncode == 1
    assert re.search(r"^Beta started \(pid \d+\)$", started.stdout + started.stderr, re.M)
    assert "Alpha is already running" in started.stdout + started.stderr

    pids = {name: bot["pid"] for name, bot in bots_of(manager.socket).items()}
    restarted = cli(config, "restart", "all")
    assert restarted.returncode == 0, restarted.stderr
    assert len(restarted.stdout.strip().splitlines()) == 2
    after = bots_of(manager.socket)
    assert all(after[name]["pid"] not in (None, pids[name]) for name in pids)

    unknown = cli(config, "stop", "Alpha", "Nope")  # checked before anything is done
    assert unknown.returncode == 2 and "Nope" in unknown.stderr
    assert bots_of(manager.socket)["Alpha"]["state"] == "running"

    stopped = cli(config, "stop", "Alpha")
    assert stopped.returncode == 0
    again = cli(config, "stop", "Alpha")  # SPEC 6.1: stopping a stopped bot fails
    assert again.returncode == 1
    stop_all = cli(config, "stop", "all")  # ... but not as part of `all`
    assert stop_all.returncode == 0, stop_all.stderr
    assert "Alpha already stopped" in stop_all.stdout
    assert "Beta stopped" in stop_all.stdout
    assert {bot["state"] for bot in bots_of(manager.socket).values()} == {"stopped"}

    with (config.parent / "bot_commands.txt").open("a") as commands:
        commands.write("start Alpha Beta\n")
    for name in ("Alpha", "Beta"):
        wait_state(manager.socket, name, "running")
    assert manager.stop() == 0
