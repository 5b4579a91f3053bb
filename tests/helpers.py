"""Shared test helpers: throwaway bots, configs and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import trio
import yaml

from trio_orchestrator.config import Config
from trio_orchestrator.procfs import proc_stat_fields

CLI = [sys.executable, "-m", "trio_orchestrator"]


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
