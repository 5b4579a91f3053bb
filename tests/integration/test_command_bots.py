"""Any program as a bot (issue 12): `command:` bots, PATH lookup, and `stop_signal`."""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import (
    bot_log,
    bots_of,
    cli,
    group_members,
    pid_alive,
    wait_for,
    write_bot,
    write_config,
)
from test_cli_control import wait_state

INTERRUPTIBLE = """
import time
print("waiting", flush=True)
try:
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    print("interrupted cleanly", flush=True)
"""


def bot_text(config, name):
    return bot_log(config, name).decode()


def test_command_bots_run_modules_programs_and_path_lookups(tmp_path, manager_factory):
    package = tmp_path / "bots" / "pkg"
    write_bot(
        package, 'import time\nprint("module up", flush=True)\ntime.sleep(60)\n', "__main__.py"
    )
    script = tmp_path / "bots" / "run.sh"
    script.write_text("#!/bin/sh\necho shell up\nexec sleep 60\n")
    script.chmod(0o755)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "Module": {"command": [sys.executable, "-m", "pkg"], "directory": "bots"},
            "Local": {"command": "run.sh", "directory": "bots"},  # found in the directory
            "OnPath": {"command": "sh -c 'echo from PATH; exec sleep 60'", "directory": "bots"},
            "Missing": {"command": "no-such-program --flag", "directory": "bots"},
        },
        stop_timeout=5,
    )
    checked = cli(config, "check")
    assert checked.returncode == 0, checked.stderr
    assert f"Local: {script}" in checked.stdout
    assert "OnPath: /" in checked.stdout and "(found on PATH)" in checked.stdout
    assert "executable 'no-such-program' not found" in checked.stderr

    manager = manager_factory(config).wait_ready()
    for name, line in [("Module", "module up"), ("Local", "shell up"), ("OnPath", "from PATH")]:
        wait_state(manager.socket, name, "running")
        wait_for(lambda name=name, line=line: f"[{name}] {line}" in bot_text(config, name))
    bots = bots_of(manager.socket)
    with open(f"/proc/{bots['Local']['pid']}/cmdline", "rb") as cmdline:
        assert cmdline.read().split(b"\0")[0] == b"sleep"  # the pid is the program itself
    missing = wait_state(manager.socket, "Missing", "failed")
    assert "executable 'no-such-program' not found" in missing["last_exit_reason"]
    assert manager.stop() == 0
    assert not any(pid_alive(bot["pid"]) for bot in bots.values() if bot["pid"])


def test_stop_signal_int_lets_a_python_bot_handle_keyboard_interrupt(tmp_path, manager_factory):
    write_bot(tmp_path / "bots", INTERRUPTIBLE)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"Polite": {"script": "main.py", "directory": "bots", "stop_signal": "INT"}},
        stop_timeout=10,
    )
    manager = manager_factory(config).wait_ready()
    wait_state(manager.socket, "Polite", "running")
    wait_for(lambda: "waiting" in bot_text(config, "Polite"))
    stopped = cli(config, "stop", "Polite")
    assert stopped.returncode == 0, stopped.stderr
    assert "[Polite] interrupted cleanly" in bot_text(config, "Polite")
    bot = bots_of(manager.socket)["Polite"]
    assert bot["last_exit_code"] == 0 and bot["last_exit_reason"] == "stopped by user"
    assert manager.stop() == 0
    assert "SIGKILL" not in (config.parent / "logs" / "bot_manager.log").read_text()
    assert os.path.exists(config.parent / "logs" / "bot_manager.log")


def test_gunicorn_with_workers_runs_as_a_command_bot(tmp_path, manager_factory):
    """examples/gunicorn as it is, on a free port and with this environment's gunicorn:
    a real server whose workers share the bot's group."""
    pytest.importorskip("gunicorn", reason="gunicorn is in the dev extra")
    example = Path(__file__).parents[2] / "examples" / "gunicorn"
    shutil.copytree(example, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "bot_config.yaml"
    text = config.read_text()
    assert "command: gunicorn app:app --workers 2 --bind 127.0.0.1:8000" in text
    here = Path(sys.executable).parent / "gunicorn"  # the dev extra's, beside this Python
    config.write_text(text.replace("gunicorn app:app", f"{here} app:app").replace(":8000", ":0"))
    manager = manager_factory(config).wait_ready()
    bot = wait_state(manager.socket, "Web", "running")
    wait_for(lambda: bot_text(config, "Web").count("Booting worker") == 2, timeout=30)
    port = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", bot_text(config, "Web")).group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert response.read().startswith(b"hello from worker")
    assert len(group_members(bot["pid"])) == 3  # the master is the bot; its workers too
    stopped = cli(config, "stop", "Web")
    assert stopped.returncode == 0, stopped.stderr
    assert group_members(bot["pid"]) == []
    assert "Shutting down: Master" in bot_text(config, "Web")  # a graceful stop, not SIGKILL
    assert manager.stop() == 0
