"""Shared test helpers: throwaway bots, configs, a CLI runner, and ways to look at a
manager (its socket, its db, its log) and at processes (/proc)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
import yaml

from trio_orchestrator.client import request, socket_address
from trio_orchestrator.config import Config
from trio_orchestrator.procfs import proc_stat_fields

CLI = [sys.executable, "-m", "trio_orchestrator"]

# ----- bots (one copy of each) -----

# Prints "up" and its arguments (a test's marker, found later in /proc), then idles.
SLEEPER = """
import sys, time
print("up", *sys.argv[1:], flush=True)
while True:
    time.sleep(1)
"""

# A line every 0.2 s; says goodbye and exits 0 on SIGTERM.
TICKER = """
import itertools, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (print("goodbye", flush=True), sys.exit(0)))
for i in itertools.count():
    print(f"tick {i}", flush=True)
    time.sleep(0.2)
"""

# Only SIGKILL ends it.
IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn up", flush=True)
while True:
    time.sleep(1)
"""


def write_bot(directory: Path, code: str, name: str = "main.py") -> Path:
    """Write a bot script (dedented *code*) into *directory* and return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(textwrap.dedent(code))
    return directory


def write_config(path: Path, bots: dict, **settings) -> Path:
    """Write a bot_config.yaml with *bots* and global *settings*."""
    document = {"bots": bots, "global_settings": {"log_directory": "logs", **settings}}
    path.write_text(yaml.safe_dump(document))
    return path


def bot_entry(directory: Path, *args: str, **settings) -> dict:
    """A bot's config entry: ``main.py`` in *directory*, with *args* (often a marker)."""
    entry = {"script": "main.py", "directory": str(directory), **settings}
    if args:
        entry["args"] = list(args)
    return entry


def make_config(tmp_path: Path, bots: dict, **settings) -> Config:
    document = {"bots": bots, "global_settings": {"log_directory": "logs", **settings}}
    return Config.from_mapping(document, tmp_path / "bot_config.yaml")


def cli(config: Path, *args: str, timeout: float = 60, env: dict | None = None):
    """Run `trio-orch --config CONFIG ARGS...` to completion."""
    return subprocess.run(
        [*CLI, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# ----- a manager, by its config file -----


def ask(config_or_socket: Path, message: dict, timeout: float = 60) -> dict:
    """One request to the manager: at a socket path, or beside a config file."""
    path = config_or_socket
    if path.suffix in (".yaml", ".yml"):
        path = path.parent / ".trio-orch.sock"
    with socket_address(path) as address:
        return request(address, message, timeout=timeout)


def bots_of(config_or_socket: Path) -> dict[str, dict]:
    """The running manager's ``list``, by bot name."""
    return {info["name"]: info for info in ask(config_or_socket, {"command": "list"})["bots"]}


def _read_db(config: Path, query: str, parameters=()) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{config.parent / 'bot_states.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(query, parameters).fetchall()
    finally:
        db.close()


def db_rows(config: Path) -> dict[str, dict]:
    """Every row of ``bot_states`` in the db beside *config*, by bot name."""
    return {row["bot_name"]: dict(row) for row in _read_db(config, "SELECT * FROM bot_states")}


def history(config: Path, name: str) -> list[tuple[str, str]]:
    """The bot's history events, oldest first: ``(event, detail or "")``."""
    query = "SELECT event, detail FROM bot_history WHERE bot_name = ? ORDER BY id"
    return [(row["event"], row["detail"] or "") for row in _read_db(config, query, (name,))]


def history_count(config: Path, name: str, event: str) -> int:
    return sum(1 for seen, _ in history(config, name) if seen == event)


def manager_log(config: Path) -> str:
    """``logs/bot_manager.log`` beside *config* ("" before it exists)."""
    path = config.parent / "logs" / "bot_manager.log"
    return path.read_text(errors="replace") if path.exists() else ""


def bot_log(config: Path, name: str) -> bytes:
    """``logs/<name>.log`` beside *config* (b"" before it exists)."""
    path = config.parent / "logs" / f"{name}.log"
    return path.read_bytes() if path.exists() else b""


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "Fatal Python error" not in text, text


def status(config: Path, name: str, env: dict[str, str] | None = None) -> dict:
    """``trio-orch status NAME --json``, through the CLI."""
    completed = cli(config, "status", name, "--json", env=env, timeout=15)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


# ----- processes -----


def pid_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie."""
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes, other than this one, with *marker* in their command line."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if needle in cmdline and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, message: str = ""):
    """Poll *predicate* until it returns a truthy value (which is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


async def until(predicate, interval: float = 0.01):
    """Poll *predicate* until it returns a truthy value (returned); the caller bounds the
    wait with ``trio.fail_after``."""
    while not (value := predicate()):
        await trio.sleep(interval)
    return value


def state_letter(pid: int) -> bytes | None:
    """The process's state in /proc (b"S", b"R", b"T" stopped, b"Z"), None once gone."""
    fields = proc_stat_fields(pid)
    return None if fields is None else fields[0]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is *pgid*."""
    members = []
    for entry in os.listdir("/proc"):
        fields = proc_stat_fields(entry) if entry.isdigit() else None
        if fields is not None and fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def report(name: str, **figures) -> None:
    """One ``FAULT name: key=value, ...`` line in the test output (pytest -s shows them)."""
    text = ", ".join(f"{key}={value}" for key, value in figures.items())
    print(f"\nFAULT {name}: {text}")


@contextlib.contextmanager
def small_tmpfs(directory, size="1m"):
    """A tmpfs of *size* mounted on *directory* (root only), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
