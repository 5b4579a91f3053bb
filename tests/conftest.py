from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import CLI, processes_with, wait_for


class Manager:
    """A `trio-orch start_all` process running in the background for one test."""

    def __init__(self, config: Path, extra_args=(), env=None):
        self.config = config
        self.stdout_path = config.parent / "manager.out"
        self.stderr_path = config.parent / "manager.err"
        environ = dict(os.environ if env is None else env)
        if env is None:
            environ.pop("NO_COLOR", None)
        self.process = subprocess.Popen(
            [*CLI, "--config", str(config), *extra_args, "start_all"],
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            env=environ,
        )
        self.socket = config.parent / ".trio-orch.sock"

    def wait_ready(self, timeout: float = 15.0) -> Manager:
        wait_for(
            lambda: self.socket.exists() or self.process.poll() is not None,
            timeout,
            message="manager socket",
        )
        assert self.process.poll() is None, self.output()
        return self

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture
def manager_factory():
    managers: list[Manager] = []

    def start(config: Path, extra_args=(), env=None) -> Manager:
        manager = Manager(config, extra_args, env)
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        if manager.process.poll() is None:
            manager.process.send_signal(signal.SIGINT)
            try:
                manager.process.wait(20)
            except subprocess.TimeoutExpired:
                manager.process.kill()
                manager.process.wait()


@pytest.fixture
def marker():
    """A unique string for this test's bots; kills every process carrying it at the end."""
    value = f"marker-{uuid.uuid4().hex}"
    yield value
    for _ in range(50):
        pids = processes_with(value)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@pytest.fixture
def spawned():
    """Processes a test starts itself (e.g. a manager with stdout=PIPE): asked to stop with
    SIGTERM at the end, killed if they do not within 20 s."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
