"""Fault injection (issue 6): misbehaving bots, broken files, hostile clients, signals.

Every test runs the real ``trio-orch start_all`` and injects one kind of fault, then checks
what must hold afterwards: the manager still answers, the db matches reality, no process
of a stopped bot is left, and the manager's memory and CPU stay bounded. Figures (peak RSS,
time to answer, CPU) are measured from /proc and printed (``pytest -s`` shows them); the
assertions use generous bounds because the test machine is shared.

Each bot gets a unique marker in its argv, so leftovers are found by scanning /proc, and
the ``marker`` fixture kills whatever a failing test left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import pytest
from helpers import (
    CLI,
    IGNORES_SIGTERM,
    SLEEPER,
    TICKER,
    ask,
    assert_no_traceback,
    bot_log,
    bots_of,
    cli,
    db_rows,
    group_members,
    history_count,
    manager_log,
    pid_alive,
    processes_with,
    report,
    wait_for,
    write_bot,
    write_config,
)
from helpers import bot_entry as bot

from trio_orchestrator.client import socket_address
from trio_orchestrator.errors import OrchestratorError

pytestmark = pytest.mark.faults

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
# The manager's own footprint is ~30 MiB (Python, trio, sqlite); bot output may add a few
# MiB of bounded buffers, never the size of what the bots write.
RSS_LIMIT_MIB = 80


# ----- /proc helpers -----


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (its threads included)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        data = handle.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return sorted(targets)


class RssSampler:
    """Samples VmRSS of *pid* in a thread; ``peak_mib`` also trusts the kernel's VmHWM."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        rss = status_kib(self.pid, "VmRSS")
        hwm = status_kib(self.pid, "VmHWM")
        if rss is not None:
            self.peak_kib = max(self.peak_kib, rss)
        if hwm is not None:
            self.hwm_kib = max(self.hwm_kib, hwm)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    @property
    def peak_mib(self) -> float:
        return max(self.peak_kib, self.hwm_kib) / 1024


# ----- fixtures and small helpers -----


def timed(function, *args, **kwargs):
    started = time.monotonic()
    value = function(*args, **kwargs)
    return value, time.monotonic() - started


def all_logs(config: Path, name: str) -> bytes:
    """A bot's log with its rotated files before it, oldest first."""
    directory = config.parent / "logs"
    rotated = sorted(directory.glob(f"{name}.log.[0-9]*"), key=lambda path: -int(path.suffix[1:]))
    return b"".join(path.read_bytes() for path in rotated) + bot_log(config, name)


def db_matches_reality(config: Path, live: dict[str, dict]) -> None:
    """Every bot's row agrees with the manager's view, and running pids are alive."""
    rows = db_rows(config)
    for name, info in live.items():
        row = rows[name]
        assert row["state"] == info["state"], (name, row, info)
        assert row["pid"] == info["pid"], (name, row, info)
        assert row["start_count"] == info["start_count"], (name, row, info)
        if info["pid"] is not None:
            assert pid_alive(info["pid"]), (name, info)


# ----- bots -----

# Prints nothing: a bot that writes would die of EPIPE once its manager is killed, and
# these tests need orphans that outlive their manager.
SILENT = """
import time
while True:
    time.sleep(1)
"""

EXIT_AT_ONCE = """
import sys
sys.stdout.write("up\\n")
"""

FORKS_GRANDCHILDREN = """
import os, signal, time
for _ in range(3):
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:  # a great-grandchild, its parent gone: reparented to init
            while True:
                time.sleep(1)
        while True:
            time.sleep(1)
print("forked", flush=True)
while True:
    time.sleep(1)
"""

CLOSES_STDOUT = """
import os, sys, time
print("closing stdout", flush=True)
os.close(1)
while True:
    print("still here", file=sys.stderr, flush=True)
    time.sleep(0.5)
"""

EXITS_BEFORE_READ = """
import os
os.write(1, b"said one thing\\n")
os._exit(3)
"""

UNDECODABLE = """
import os, time
os.write(1, b"bad \\xff\\xfe bytes \\x80 here\\nhalf \\xe2\\x82\\n")
os.write(2, b"\\xc3\\x28 on stderr\\n")
while True:
    time.sleep(1)
"""

FLOOD = """
import os, time
line = b"x" * 1023 + b"\\n"
chunk = line * 256  # 256 KiB
for _ in range(400):  # 100 MiB
    view = memoryview(chunk)
    while view:
        view = view[os.write(1, view):]
print("flood done", flush=True)
while True:
    time.sleep(1)
"""

LONG_LINE = """
import os, time
chunk = b"y" * (1024 * 1024)
for _ in range(50):  # 50 MiB, no newline
    view = memoryview(chunk)
    while view:
        view = view[os.write(1, view):]
time.sleep(0.5)
os.write(2, b"long line done\\n")
while True:
    time.sleep(1)
"""

NUMBERED = """
import itertools, sys, time
for i in itertools.count():
    for j in range(200):
        sys.stdout.write(f"line {i * 200 + j} " + "z" * 80 + "\\n")
    sys.stdout.flush()
    time.sleep(0.01)
"""

CRASHER = """
import sys, time
print("crasher up", flush=True)
time.sleep(0.3)
sys.exit(1)
"""


# ----- bots misbehaving -----


@pytest.mark.slow
def test_crash_loop_of_20_bots(tmp_path, marker, manager_factory):
    write_bot(tmp_path / "b", EXIT_AT_ONCE)
    names = [f"B{i}" for i in range(20)]
    config = write_config(
        tmp_path / "bot_config.yaml",
        {name: bot(tmp_path / "b", marker, restart="always", restart_delay=0.1) for name in names},
        max_restart_attempts=100_000,
        stop_timeout=2,
    )
    manager = manager_factory(config).wait_ready()
    pid = manager.process.pid
    socket_times, cli_times = [], []
    with RssSampler(pid) as rss:
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        while time.monotonic() - started < 10:
            _, elapsed = timed(ask, config, {"command": "status", "name": "B7"})
            socket_times.append(elapsed)
            _, elapsed = timed(ask, config, {"command": "list"})
            socket_times.append(elapsed)
            result, elapsed = timed(cli, config, "list", "--json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["manager"] == "running"
            cli_times.append(elapsed)
            result, elapsed = timed(cli, config, "status", "B3", "--json")
            assert result.returncode == 0, result.stderr
            cli_times.append(elapsed)
            time.sleep(0.3)
        window = time.monotonic() - started
        cpu_window = cpu_seconds(pid) - cpu_before
        starts = sum(info["start_count"] for info in bots_of(config).values())
        # Stopping works in the middle of the loop (a bot is running, starting or in backoff).
        for name in names:
            reply = ask(config, {"command": "stop", "name": name})
            assert reply["ok"], reply
        assert not processes_with(marker)
        # Idle afterwards: no busy loop left behind.
        cpu_before, idle_started = cpu_seconds(pid), time.monotonic()
        time.sleep(2)
        idle_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - idle_started)
        live = bots_of(config)
    assert manager.stop() == 0
    assert_no_traceback(manager.stderr_path.read_text())
    rows = db_rows(config)
    log = manager_log(config)
    for name in names:
        seen = bot_log(config, name).count(f"[{name}] up\n".encode())
        row = rows[name]
        starts_logged = log.count(f" INFO {name} running (pid ")
        assert row["start_count"] == live[name]["start_count"] == starts_logged, (name, row)
        assert history_count(config, name, "running") == row["start_count"]
        # The last process may have been stopped before it could print.
        assert seen <= row["start_count"] <= seen + 1, (name, row, seen)
        assert row["start_count"] - 1 <= row["restarts"] <= row["start_count"], row
        assert row["state"] == "stopped" and row["pid"] is None
    cpu = cpu_window / window
    report(
        "crash loop 20 bots",
        starts=starts,
        starts_per_s=round(starts / window, 1),
        manager_cpu_pct=round(100 * cpu, 1),
        cpu_ms_per_start=round(1000 * cpu_window / max(starts, 1), 2),
        idle_cpu_pct=round(100 * idle_cpu, 2),
        socket_max_s=round(max(socket_times), 3),
        cli_max_s=round(max(cli_times), 3),
        peak_rss_mib=round(rss.peak_mib, 1),
    )
    assert starts > 40  # the loop really ran
    assert max(socket_times) < 2.0
    assert max(cli_times) < 10.0  # mostly the CLI's own start-up on a saturated machine
    assert cpu < 0.9  # some work per restart, never a whole core
    assert idle_cpu < 0.05
    assert rss.peak_mib < RSS_LIMIT_MIB


def test_misbehaving_bots(tmp_path, marker, manager_factory):
    scripts = {
        "Stubborn": (IGNORES_SIGTERM, {"stop_timeout": 1}),
        "Forker": (FORKS_GRANDCHILDREN, {"stop_timeout": 1}),
        "NoStdout": (CLOSES_STDOUT, {}),
        "Early": (EXITS_BEFORE_READ, {"restart": "never"}),
        "Garbled": (UNDECODABLE, {}),
        "Flood": (FLOOD, {"log_max_bytes": 0}),  # 100 MiB: keep it all in one file
        "LongLine": (LONG_LINE, {"log_max_bytes": 0}),
    }
    bots = {}
    for name, (code, settings) in scripts.items():
        write_bot(tmp_path / name, code)
        bots[name] = bot(tmp_path / name, marker, name, **settings)
    config = write_config(tmp_path / "bot_config.yaml", bots, stop_timeout=3)
    manager = manager_factory(config).wait_ready()
    pid = manager.process.pid
    with RssSampler(pid) as rss:
        started = time.monotonic()
        wait_for(
            lambda: (
                b"[Flood] flood done" in bot_log(config, "Flood")
                and b"long line done" in bot_log(config, "LongLine")
            ),
            timeout=60,
            message="the floods to be written",
        )
        flood_seconds = time.monotonic() - started
        wait_for(lambda: b"still here" in bot_log(config, "NoStdout"), message="NoStdout")
        wait_for(lambda: len(processes_with(marker)) >= 6 + 6, message="all bots and grandchildren")
        live, answer = timed(bots_of, config)
        assert live["Early"]["state"] == "exited" and live["Early"]["last_exit_code"] == 3
        for name in ("Stubborn", "Forker", "NoStdout", "Garbled", "Flood", "LongLine"):
            assert live[name]["state"] == "running", live[name]
        forker_group = group_members(live["Forker"]["pid"])
        assert len(forker_group) == 7, forker_group  # the bot, 3 children, 3 grandchildren
        for name in ("Stubborn", "Forker", "NoStdout", "Garbled", "Flood", "LongLine"):
            reply = ask(config, {"command": "stop", "name": name})
            assert reply["ok"], reply
            assert not [p for p in processes_with(f"{marker}\0{name}") if p], name
        assert not processes_with(marker)
        assert not group_members(live["Forker"]["pid"])
        after_stop = bots_of(config)
    assert manager.stop() == 0
    assert_no_traceback(manager.stderr_path.read_text())
    assert all(info["pid"] is None for info in after_stop.values())

    assert b"[Early] said one thing\n" in bot_log(config, "Early")
    garbled = bot_log(config, "Garbled").decode("utf-8")  # valid UTF-8 now
    assert "[Garbled] bad \ufffd\ufffd bytes \ufffd here\n" in garbled
    assert "[Garbled] \ufffd( on stderr\n" in garbled
    flood = all_logs(config, "Flood").count(b"[Flood] " + b"x" * 1023 + b"\n")
    long_lines = [
        line.partition(b"[LongLine] ")[2] for line in all_logs(config, "LongLine").split(b"\n")
    ]
    pieces = [line for line in long_lines if line.startswith(b"yyy")]
    assert max(map(len, pieces)) <= 64 * 1024
    assert flood == 100 * 1024
    assert sum(map(len, pieces)) == 50 * MIB
    assert b"[NoStdout] closing stdout\n" in bot_log(config, "NoStdout")
    log = manager_log(config)
    assert "Stubborn did not exit 1s after SIGTERM; sent SIGKILL" in log
    report(
        "misbehaving bots",
        flood_150mib_s=round(flood_seconds, 1),
        peak_rss_mib=round(rss.peak_mib, 1),
        list_answer_s=round(answer, 3),
    )
    assert rss.peak_mib < RSS_LIMIT_MIB


@pytest.mark.slow
def test_stalled_manager_stdout(tmp_path, marker, spawned):
    write_bot(tmp_path / "n", NUMBERED)
    write_bot(tmp_path / "c", CRASHER)
    write_bot(tmp_path / "s", SLEEPER)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "Chatty": bot(tmp_path / "n", marker),
            "Crasher": bot(tmp_path / "c", marker, restart_delay=0.2, max_restart_attempts=1000),
            "Quiet": bot(tmp_path / "s", marker, autostart=False),
        },
        stop_timeout=2,
    )
    stderr_path = tmp_path / "manager.err"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*CLI, "--config", str(config), "start_all"], stdout=subprocess.PIPE, stderr=stderr
        )
    spawned.append(process)
    wait_for((tmp_path / ".trio-orch.sock").exists, message="socket")
    pid = process.pid
    with RssSampler(pid) as rss:
        # Fill the pipe and the console buffer: nobody reads the manager's stdout.
        time.sleep(4)
        before = bots_of(config)
        assert before["Chatty"]["state"] == "running"
        # Crash restarts go on.
        crashes = before["Crasher"]["start_count"]
        wait_for(
            lambda: bots_of(config)["Crasher"]["start_count"] >= crashes + 2,
            timeout=10,
            message="crash restarts while stdout is stalled",
        )
        # Commands over the socket and through the command file.
        reply, answer = timed(ask, config, {"command": "start", "name": "Quiet"})
        assert reply["ok"], reply
        with (tmp_path / "bot_commands.txt").open("a") as commands:
            commands.write("restart Quiet\n")
        wait_for(lambda: bots_of(config)["Quiet"]["start_count"] == 2, message="file command")
        reply = ask(config, {"command": "stop", "name": "Crasher"})
        assert reply["ok"], reply
        assert ask(config, {"command": "stop", "name": "Quiet"})["ok"]
        assert process.poll() is None
        stalled_rss = rss.peak_mib

        # Now read: what was buffered comes out, with a notice of what was dropped.
        output = bytearray()
        reading = threading.Event()
        reading.set()

        def read() -> None:
            fd = process.stdout.fileno()
            while True:
                reading.wait()
                data = os.read(fd, 1 << 16)
                if not data:
                    return
                output.extend(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_for(lambda: b"console too slow" in output, timeout=20, message="drop notice")
        assert ask(config, {"command": "stop", "name": "Chatty"})["ok"]

        # Stall again, then stop the manager while its stdout is stuck: it still exits.
        reading.clear()
        time.sleep(0.5)
        assert ask(config, {"command": "start", "name": "Chatty"})["ok"]
        time.sleep(2)
    process.send_signal(signal.SIGTERM)
    stop_started = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(15)
    exit_seconds = time.monotonic() - stop_started
    reading.set()
    if process.poll() is None:
        time.sleep(2)
    code = process.wait(10)
    reader.join(10)
    stderr_text = stderr_path.read_text(errors="replace")
    assert code == 0, stderr_text
    assert_no_traceback(stderr_text)
    assert not processes_with(marker)

    text = output.decode("utf-8", "replace")
    notices = [line for line in text.splitlines() if "console too slow" in line]
    dropped = sum(int(line.split(": ")[1].split()[0]) for line in notices)
    # The log files have every line the bot wrote, in order.
    numbers = [
        int(line.partition("[Chatty] line ")[2].split()[0])
        for line in all_logs(config, "Chatty").decode().splitlines()
        if "[Chatty] line " in line
    ]
    assert numbers and _restarted_sequence(numbers)
    console_lines = text.count("[Chatty] line ")
    report(
        "stalled stdout",
        chatty_lines_logged=len(numbers),
        console_lines=console_lines,
        dropped_notice_lines=dropped,
        notice=notices[0] if notices else None,
        socket_answer_s=round(answer, 3),
        exit_after_sigterm_s=round(exit_seconds, 1),
        peak_rss_mib=round(rss.peak_mib, 1),
        stalled_rss_mib=round(stalled_rss, 1),
    )
    assert dropped > 0
    assert console_lines + dropped <= len(numbers)
    assert exit_seconds < 10
    assert rss.peak_mib < RSS_LIMIT_MIB


def _restarted_sequence(numbers: list[int]) -> bool:
    """Chatty ran twice: each run numbers its lines from 0 without a gap."""
    expected = 0
    for number in numbers:
        if number == 0 and expected:
            expected = 0
        assert number == expected, (number, expected)
        expected += 1
    return True


# ----- state and files -----


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert_no_traceback(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trio-orch: "), lines
    return lines[0]


@pytest.fixture
def immutable():
    """``chattr +i`` files; undone at the end."""
    paths: list[Path] = []

    def make(path: Path) -> None:
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {result.stderr.strip()}")
        paths.append(path)

    yield make
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.parametrize(
    "fault", ["read-only", pytest.param("locked", marks=pytest.mark.slow), "corrupt"]
)
def test_unusable_db_at_start(tmp_path, marker, fault, immutable):
    from trio_orchestrator.state import StateStore

    write_bot(tmp_path / "s", SLEEPER)
    config = write_config(tmp_path / "bot_config.yaml", {"S": bot(tmp_path / "s", marker)})
    db = tmp_path / "bot_states.db"
    holder = None
    if fault == "corrupt":
        db.write_bytes(random.Random(6).randbytes(64 * 1024))
    else:
        StateStore(db).close()
        if fault == "read-only":
            if os.geteuid() != 0:
                pytest.skip("chattr +i needs root")
            immutable(db)
        else:
            holder = sqlite3.connect(db, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
    try:
        result, elapsed = timed(cli, config, "start_all", timeout=60)
    finally:
        if holder is not None:
            holder.close()
    line = one_line_error(result)
    report(
        f"db {fault} at start", exit_code=result.returncode, seconds=round(elapsed, 1), message=line
    )
    assert result.returncode == 1
    assert str(db) in line
    expected = {"read-only": "readonly", "locked": "locked", "corrupt": "not a database"}[fault]
    assert expected in line
    assert not processes_with(marker)


@pytest.mark.slow
def test_transient_db_lock_while_running(tmp_path, marker, manager_factory):
    write_bot(tmp_path / "s", SLEEPER)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "A": bot(tmp_path / "s", marker, "A"),
            "B": bot(tmp_path / "s", marker, "B"),
            "C": bot(tmp_path / "s", marker, "C", autostart=False),
        },
        stop_timeout=2,
        command_poll_interval=0.1,
    )
    manager = manager_factory(config).wait_ready()
    wait_for(lambda: {i["state"] for n, i in bots_of(config).items() if n != "C"} == {"running"})
    holder = sqlite3.connect(tmp_path / "bot_states.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    locked_at = time.monotonic()
    replies: dict[str, object] = {}

    def run(key, function, *args):
        replies[key] = function(*args)

    threads = [
        threading.Thread(target=run, args=("restart A", cli, config, "restart", "A")),
        threading.Thread(
            target=run, args=("stop B", ask, config, {"command": "stop", "name": "B"})
        ),
    ]
    try:
        for thread in threads:
            thread.start()
        with (tmp_path / "bot_commands.txt").open("a") as commands:
            commands.write("start C\n")
        list_times = []
        while time.monotonic() - locked_at < 6:
            _, elapsed = timed(bots_of, config)
            list_times.append(elapsed)
            time.sleep(0.2)
    finally:
        holder.rollback()
        holder.close()
    released = time.monotonic()
    for thread in threads:
        thread.join(30)
    waited = time.monotonic() - released
    assert replies["restart A"].returncode == 0, replies["restart A"].stderr
    assert replies["stop B"]["ok"], replies["stop B"]
    wait_for(lambda: bots_of(config)["C"]["state"] == "running", message="C started from file")
    live = bots_of(config)
    assert live["A"]["state"] == "running" and live["A"]["start_count"] == 2
    assert live["B"]["state"] == "stopped" and live["B"]["pid"] is None
    assert live["C"]["start_count"] == 1
    db_matches_reality(config, live)
    for name, events in {"A": ("running", "stopped"), "B": ("stopping", "stopped")}.items():
        for event in events:
            assert history_count(config, name, event) >= 1, (name, event)
    assert history_count(config, "A", "running") == 2
    assert "could not save state" in manager_log(config)
    assert "state saved again after" in manager_log(config)
    assert manager.stop() == 0
    assert_no_traceback(manager.stderr_path.read_text())
    assert all(row["pid"] is None for row in db_rows(config).values())
    report(
        "db locked 6 s while running",
        list_max_s=round(max(list_times), 3),
        commands_done_after_release_s=round(waited, 2),
    )
    assert max(list_times) < 3.0  # answered during the 6 s lock, not after it
    assert not processes_with(marker)


@pytest.mark.slow
def test_command_file_faults(tmp_path, marker, manager_factory):
    write_bot(tmp_path / "s", SLEEPER)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"A": bot(tmp_path / "s", marker, "A"), "B": bot(tmp_path / "s", marker, "B")},
        stop_timeout=2,
        command_poll_interval=0.1,
    )
    commands = tmp_path / "bot_commands.txt"
    manager = manager_factory(config).wait_ready()
    pid = manager.process.pid
    wait_for(lambda: bots_of(config)["A"]["start_count"] == 1)
    starts = 1
    figures = {}

    def append(data: bytes) -> None:
        with commands.open("ab") as handle:
            handle.write(data)

    def restart_runs(what: str, timeout: float = 30) -> None:
        nonlocal starts
        starts += 1
        append(b"restart A\n")
        started = time.monotonic()
        wait_for(
            lambda: bots_of(config)["A"]["start_count"] == starts,
            timeout=timeout,
            message=f"restart A after {what}",
        )
        figures[what] = round(time.monotonic() - started, 2)

    def warned(text: str) -> None:
        wait_for(lambda: text in manager_log(config), timeout=10, message=text)

    with RssSampler(pid) as rss:
        append(random.Random(1).randbytes(256 * 1024) + b"\n")
        restart_runs("binary garbage")
        warned("command file: skipped a line that is not text")

        skipped = manager_log(config).count("skipped a line")
        append(b"x" * (10 * MIB) + b"\n")
        restart_runs("10 MB line")
        assert manager_log(config).count("skipped a line") == skipped + 1

        burst = [b"status_all\n"] * 9_800 + [b"pause B\n", b"resume B\n"] * 100
        append(b"".join(burst))
        restart_runs("10,000 commands", timeout=120)
        log = manager_log(config)
        assert log.count(" INFO status B: ") == 9_800
        assert history_count(config, "B", "paused") == 100
        assert bots_of(config)["B"]["state"] == "running"

        for kind in ("symlink", "fifo"):
            replacement = tmp_path / "replacement"
            if kind == "symlink":
                replacement.symlink_to("/dev/zero")
            else:
                os.mkfifo(replacement)
            os.replace(replacement, commands)
            warned("is a symbolic link" if kind == "symlink" else "is not a regular file")
            time.sleep(0.5)  # several polls: none may read /dev/zero or block on the FIFO
            assert stat.S_ISLNK(os.lstat(commands).st_mode) or stat.S_ISFIFO(
                os.lstat(commands).st_mode
            )
            assert manager.process.poll() is None
            commands.unlink()
            wait_for(commands.exists, message="command file recreated")
            restart_runs(f"{kind} replaced back")
        peak = rss.peak_mib
    assert "Traceback" not in manager_log(config)
    assert manager.stop() == 0
    assert_no_traceback(manager.stderr_path.read_text())
    report("command file", peak_rss_mib=round(peak, 1), **figures)
    assert peak < RSS_LIMIT_MIB


def _drop_read_override() -> None:
    """In the child: give up root's power to read anything (CAP_DAC_*) for its exec."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def test_command_file_without_read_permission(tmp_path, marker, spawned):
    write_bot(tmp_path / "s", SLEEPER)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"A": bot(tmp_path / "s", marker, "A")},
        stop_timeout=2,
        command_poll_interval=0.1,
    )
    commands = tmp_path / "bot_commands.txt"
    commands.write_text("# nothing yet\n")
    commands.chmod(0)
    preexec = None
    if os.geteuid() == 0:
        # Root reads anything through CAP_DAC_OVERRIDE: run the manager without it.
        probe = subprocess.run(["cat", str(commands)], preexec_fn=_drop_read_override, check=False)
        if probe.returncode == 0:
            pytest.skip("cannot drop CAP_DAC_OVERRIDE here; root reads any file")
        preexec = _drop_read_override
    with (tmp_path / "manager.out").open("wb") as out:
        process = subprocess.Popen(
            [*CLI, "--config", str(config), "start_all"],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,  # noqa: PLW1509 - the test's threads hold no locks here
        )
    spawned.append(process)
    wait_for((tmp_path / ".trio-orch.sock").exists, message="socket")
    wait_for(lambda: bots_of(config)["A"]["start_count"] == 1)
    wait_for(lambda: "Permission denied" in manager_log(config), timeout=10, message="warning")
    time.sleep(0.5)
    assert process.poll() is None
    assert manager_log(config).count("Permission denied") == 1  # once, not every poll
    commands.chmod(0o644)
    with commands.open("a") as handle:
        handle.write("restart A\n")
    wait_for(lambda: bots_of(config)["A"]["start_count"] == 2, message="restart after chmod")
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert_no_traceback((tmp_path / "manager.out").read_text())
    assert not processes_with(marker)


# ----- control socket -----


def raw_request(path: Path, data: bytes, *, close_write: bool = True, timeout=20.0) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    with sock, socket_address(path) as address:
        sock.connect(address)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_control_socket_faults(tmp_path, marker, manager_factory):
    write_bot(tmp_path / "s", SLEEPER)
    config = write_config(tmp_path / "bot_config.yaml", {"A": bot(tmp_path / "s", marker)})
    manager = manager_factory(config).wait_ready()
    path = manager.socket
    pid = manager.process.pid
    wait_for(lambda: bots_of(config)["A"]["state"] == "running")
    a_pid = bots_of(config)["A"]["pid"]
    # The bot's log file is opened at its first line: count the manager's fds after that.
    wait_for(lambda: b"[A] up" in bot_log(config, "A"), message="A's first line")
    fds_before = open_fds(pid)
    with RssSampler(pid) as rss:
        for garbage in (b"{not json\n", b"[1, 2]\n", b'{"command": 7}\n', b"\xff\xfe\n"):
            reply = json.loads(raw_request(path, garbage))
            assert reply["ok"] is False and reply["code"] == 2, (garbage, reply)
        reply = ask(config, {"command": "list", "pad": "x" * (4 * MIB)})
        assert reply["ok"] is False and "larger than" in reply["message"], reply
        for _ in range(20):  # disconnect mid-request
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with sock, socket_address(path) as address:
                sock.connect(address)
                sock.sendall(b'{"command": "li')

        # Clients that never finish their request, while 100 valid clients come at once.
        idle = []
        for _ in range(50):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with socket_address(path) as address:
                sock.connect(address)
            sock.sendall(b'{"command": "list"}')
            idle.append(sock)
        idle_since = time.monotonic()
        results: list[tuple[dict | Exception, float]] = []
        lock = threading.Lock()

        barrier = threading.Barrier(100)

        def client(i: int) -> None:
            message = {"command": "status", "name": "A"} if i % 2 else {"command": "list"}
            barrier.wait(30)
            try:
                value = timed(ask, config, message, timeout=30)
            except Exception as exc:
                value = (exc, 0.0)
            with lock:
                results.append(value)

        barrier_threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
        started = time.monotonic()
        for thread in barrier_threads:
            thread.start()
        for thread in barrier_threads:
            thread.join(60)
        burst_seconds = time.monotonic() - started
        assert len(results) == 100
        failures = [value for value, _ in results if not isinstance(value, dict) or not value["ok"]]
        assert not failures, failures[:3]
        slowest = max(elapsed for _, elapsed in results)

        # The idle clients are timed out by the server, not left hanging.
        idle_replies = []
        for sock in idle:
            sock.settimeout(30)
            with sock:
                data = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := sock.recv(65536):
                        data += chunk
                idle_replies.append(data)
        idle_seconds = time.monotonic() - idle_since
        assert all(b"no complete request" in data for data in idle_replies), idle_replies[:2]
        wait_for(
            lambda: open_fds(pid) <= fds_before,
            timeout=10,
            message=f"fds released: {fd_targets(pid)}",
        )
        fds_after = open_fds(pid)
    info = bots_of(config)["A"]
    assert info["state"] == "running" and info["pid"] == a_pid
    assert manager.stop() == 0
    assert_no_traceback(manager.stderr_path.read_text())
    report(
        "control socket",
        concurrent_100_total_s=round(burst_seconds, 2),
        slowest_answer_s=round(slowest, 3),
        idle_clients_dropped_after_s=round(idle_seconds, 1),
        fds_before=fds_before,
        fds_after=fds_after,
        peak_rss_mib=round(rss.peak_mib, 1),
    )
    assert slowest < 5
    assert idle_seconds < 20
    assert rss.peak_mib < RSS_LIMIT_MIB


# ----- signals and crashes -----


def _signal_config(tmp_path: Path, marker: str, count: int = 4, **settings) -> Path:
    write_bot(tmp_path / "s", SLEEPER)
    bots = {f"S{i}": bot(tmp_path / "s", marker, f"S{i}") for i in range(count)}
    return write_config(tmp_path / "bot_config.yaml", bots, **settings)


def _ready_or_exited(ready, process: subprocess.Popen) -> bool:
    return bool(ready(process)) or process.poll() is not None


def _after_log(tmp_path: Path, delay: float, process: subprocess.Popen) -> bool:
    """Ready *delay* seconds after the manager log appeared (just before ``trio.run``)."""
    if not (tmp_path / "logs" / "bot_manager.log").exists():
        return False
    time.sleep(delay)
    return True


def _startup_traceback_only(text: str) -> None:
    """No traceback, except a Ctrl-C inside the interpreter's own start-up (site)."""
    if (
        "Traceback" in text
        and "<frozen site>" in text
        and text.rstrip().endswith("KeyboardInterrupt")
    ):
        return
    assert_no_traceback(text)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_startup(tmp_path, marker, signum, spawned):
    config = _signal_config(tmp_path, marker, stop_timeout=2)
    codes = {}
    # Moments by progress, not by time: the machine may be slow or fast.
    moments = {
        "at spawn": lambda process: True,
        "log opened": lambda process: (tmp_path / "logs" / "bot_manager.log").exists(),
        "trio starting": partial(_after_log, tmp_path, 0.03),
        "supervisor starting": partial(_after_log, tmp_path, 0.08),
        "socket bound": lambda process: (tmp_path / ".trio-orch.sock").exists(),
        "first bot spawned": lambda process: processes_with(marker),
    }
    for moment, ready in moments.items():
        stderr_path = tmp_path / f"manager-{moment}.err"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [*CLI, "--config", str(config), "start_all"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        spawned.append(process)
        wait_for(partial(_ready_or_exited, ready, process), interval=0.002)
        process.send_signal(signum)
        codes[moment] = process.wait(20)
        _startup_traceback_only(stderr_path.read_text())
        # 0 after a graceful stop, 130 for a Ctrl-C before the manager runs, or the
        # signal's default action before Python or trio installed a handler (then no
        # bot has been spawned yet).
        assert codes[moment] in (0, 130, -signum), (moment, codes[moment])
        assert not processes_with(marker), moment
        if moment in ("socket bound", "first bot spawned"):
            assert codes[moment] == 0, moment
        if (tmp_path / "bot_states.db").exists():
            assert all(row["pid"] is None for row in db_rows(config).values()), moment
        with contextlib.suppress(FileNotFoundError):
            (tmp_path / "logs" / "bot_manager.log").unlink()
    report(f"{signal.Signals(signum).name} during start-up", exit_codes=codes)


def test_second_sigint_kills_at_once(tmp_path, marker, manager_factory):
    write_bot(tmp_path / "stubborn", IGNORES_SIGTERM)
    write_bot(tmp_path / "forker", FORKS_GRANDCHILDREN)
    bots = {f"S{i}": bot(tmp_path / "stubborn", marker) for i in range(3)}
    bots["Forker"] = bot(tmp_path / "forker", marker)
    config = write_config(tmp_path / "bot_config.yaml", bots, stop_timeout=60)
    manager = manager_factory(config).wait_ready()
    wait_for(lambda: len(processes_with(marker)) == 3 + 7, message="bots and grandchildren")
    manager.process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert manager.process.poll() is None  # graceful: waiting for the stubborn bots
    started = time.monotonic()
    manager.process.send_signal(signal.SIGINT)
    code = manager.process.wait(20)
    elapsed = time.monotonic() - started
    assert code == 0
    assert_no_traceback(manager.stderr_path.read_text())
    assert not processes_with(marker)
    rows = db_rows(config)
    assert all(row["pid"] is None and row["preserved_state"] for row in rows.values()), rows
    assert "second signal: killing all bots now" in manager_log(config)
    report("second SIGINT", exit_after_second_s=round(elapsed, 2), exit_code=code)
    assert elapsed < 15  # not stop_timeout (60 s), even on a loaded machine


def test_sighup_reloads_and_leaves_an_unchanged_bot_alone(tmp_path, marker, manager_factory):
    write_bot(tmp_path / "t", TICKER)
    config = write_config(tmp_path / "bot_config.yaml", {"T": bot(tmp_path / "t", marker)})
    manager = manager_factory(config).wait_ready()
    wait_for(lambda: b"tick 1\n" in bot_log(config, "T"))
    before = bots_of(config)["T"]
    manager.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded (SIGHUP)" in manager_log(config), message="SIGHUP reload")
    ticks = bot_log(config, "T").count(b"tick")
    time.sleep(0.6)
    assert manager.process.poll() is None
    after = bots_of(config)["T"]
    assert after["pid"] == before["pid"] and after["start_count"] == before["start_count"]
    assert bot_log(config, "T").count(b"tick") > ticks  # the bot goes on
    assert manager.stop() == 0
    assert not processes_with(marker)
    report("SIGHUP", manager_alive=True, bot_pid_unchanged=after["pid"] == before["pid"])


def _answering(config: Path, process: subprocess.Popen) -> None:
    """Wait until the manager answers (a killed manager leaves its socket file behind)."""

    def answers() -> bool:
        assert process.poll() is None, f"manager exited with {process.returncode}"
        try:
            bots_of(config)
        except OrchestratorError:
            return False
        return True

    wait_for(answers, timeout=20, message="the manager to answer")


def _same(before: dict, after: dict) -> bool:
    keys = ("state", "pid", "start_count")
    return all(before[key] == after[key] for key in keys)


def _settled(config: Path) -> dict[str, dict]:
    """The bots once none is starting, stopping or waiting to restart, and no command waits."""
    commands = config.parent / "bot_commands.txt"

    def check():
        live = bots_of(config)
        if any(i["state"] in ("starting", "stopping", "backoff") for i in live.values()):
            return None
        if commands.with_name(commands.name + ".processing").exists():
            return None
        if commands.exists() and any(
            line and not line.startswith("#") for line in commands.read_text().splitlines()
        ):
            return None
        time.sleep(0.3)
        again = bots_of(config)
        return live if all(_same(live[name], again[name]) for name in live) else None

    return wait_for(check, timeout=30, interval=0.1, message="a settled manager")


def _one_instance_each(config: Path, marker: str, live: dict[str, dict]) -> None:
    db_matches_reality(config, live)
    for name, info in live.items():
        processes = processes_with(f"{marker}\0{name}\0")
        if info["state"] in ("running", "paused"):
            assert processes == [info["pid"]], (name, info, processes)
        else:
            assert processes == [], (name, info, processes)


def _burst(
    config: Path, names: list[str], done: threading.Event, via_cli: bool, seed: float, issued
) -> None:
    """Issue random restart/stop/start commands until *done* (CLI or command file)."""
    rng = random.Random(seed)
    commands = config.parent / "bot_commands.txt"
    while not done.is_set():
        action = rng.choice(["restart", "stop", "start", "restart"])
        name = rng.choice(names)
        if via_cli:
            subprocess.run(
                [*CLI, "--config", str(config), action, name], capture_output=True, timeout=60
            )
        else:
            with commands.open("a") as handle:
                handle.write(f"{action} {name}\n")
            time.sleep(0.02)
        issued.append(1)


@pytest.mark.slow
def test_sigkill_during_command_burst(tmp_path, marker, manager_factory):
    names = ["K0", "K1", "K2", "K3"]
    write_bot(tmp_path / "s", SILENT)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {name: bot(tmp_path / "s", marker, name) for name in names},
        stop_timeout=1,
        restart_delay=0.2,
        command_poll_interval=0.05,
    )
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    issued: list[int] = []
    checks = 0
    for _ in range(5):
        manager = manager_factory(config)
        _answering(config, manager.process)
        done = threading.Event()
        threads = [
            threading.Thread(
                target=_burst,
                args=(config, names, done, via_cli, rng.random(), issued),
                daemon=True,
            )
            for via_cli in (True, True, False)
        ]
        for thread in threads:
            thread.start()
        try:
            # Never two instances of a bot at any moment, orphans of a killed manager
            # included.
            deadline = time.monotonic() + rng.uniform(0.3, 2.0)
            while time.monotonic() < deadline:
                for name in names:
                    assert len(processes_with(f"{marker}\0{name}\0")) <= 1, name
                checks += 1
            manager.process.kill()
            manager.process.wait()
        finally:
            done.set()
            for thread in threads:
                thread.join(60)
    manager = manager_factory(config)
    _answering(config, manager.process)
    live = _settled(config)
    _one_instance_each(config, marker, live)
    assert manager.stop() == 0
    assert not processes_with(marker)
    report("SIGKILL x5 during bursts", seed=seed, commands_issued=len(issued), proc_scans=checks)


def test_sigkill_while_bots_spawn(tmp_path, marker, spawned):
    """Killed between spawning a bot and recording its pid: still no duplicate."""
    names = [f"D{i}" for i in range(8)]
    write_bot(tmp_path / "s", SILENT)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {name: bot(tmp_path / "s", marker, name) for name in names},
        stop_timeout=1,
    )
    argv = [*CLI, "--config", str(config), "start_all"]
    for _ in range(6):
        before = set(processes_with(marker))
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spawned.append(process)
        wait_for(
            lambda: set(processes_with(marker)) - before or process.poll() is not None,  # noqa: B023
            interval=0.001,
        )
        process.kill()
        process.wait()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spawned.append(process)
    _answering(config, process)
    live = _settled(config)
    _one_instance_each(config, marker, live)
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert not processes_with(marker)
    unrecorded = manager_log(config).count("died before recording it")
    report("SIGKILL while bots spawn", kills=6, unrecorded_bots_ended=unrecorded)
