"""Issue 13 end to end with the real `trio-orch` manager: a hung bot's reason in status, log,
history and hooks (with a slow hook that does not delay the restart); rollback to the
previous commit with a real local repository; a double-forked daemon adopted, ended at
stop, and reaped."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gitrepo import Remote
from helpers import (
    cli,
    history,
    manager_log,
    pid_alive,
    processes_with,
    status,
    wait_for,
    write_bot,
    write_config,
)
from test_git_manager import BOT_CODE, git_bot

from trio_orchestrator.procfs import proc_stat_fields

RECORDER = textwrap.dedent(
    """\
    import json, os, sys
    with open(sys.argv[1], "a") as out:
        variables = {k: v for k, v in os.environ.items() if k.startswith("TRIO_ORCH_")}
        out.write(json.dumps(variables) + "\\n")
    """
)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def zombie_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        fields = proc_stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == pid and fields[0] == b"Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_hung_bot_reason_reaches_status_log_history_and_hooks(tmp_path, manager_factory):
    bot = write_bot(tmp_path / "idle", "import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    (tmp_path / "record.py").write_text(RECORDER)
    record = [sys.executable, "record.py", "events.jsonl"]
    slow = ["sh", "-c", f"{sys.executable} record.py events.jsonl; exec sleep 29.75"]
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "Idle": {
                "script": "main.py",
                "directory": str(bot),
                "heartbeat_timeout": 1,
                "max_restart_attempts": 1,
                "restart_delay": 0.2,
                "stop_timeout": 1,
                "hooks": {"on_restart": slow},
            }
        },
        hooks={"on_exit": record, "on_failed": record, "on_restart": ["false"]},
        hook_timeout=1,
    )
    manager = manager_factory(config).wait_ready()
    started = time.monotonic()
    info = wait_for(
        lambda: (s := status(config, "Idle"))["state"] == "failed" and s,
        timeout=25,
        message="Idle failed as hung",
    )
    # Two hangs of ~1.2 s each and a 0.2 s delay: the 30 s restart hook did not wait (each
    # look is a CLI call, slow on a loaded machine: the bound leaves room for that).
    assert time.monotonic() - started < 20
    assert info["last_exit_reason"].startswith("hung: no heartbeat for ")
    log = manager_log(config)
    assert "Idle no heartbeat for" in log and "restarting it" in log
    assert "Idle failed: hung: no heartbeat" in log
    backoff = [detail for event, detail in history(config, "Idle") if event == "backoff"]
    assert backoff and backoff[0].startswith("hung: no heartbeat")
    seen = wait_for(lambda: len(e := events(tmp_path / "events.jsonl")) >= 4 and e, timeout=5)
    kinds = sorted(e["TRIO_ORCH_EVENT"] for e in seen)
    assert kinds == ["exit", "exit", "failed", "restart"]  # the bot's on_restart wins
    for event in seen:
        assert event["TRIO_ORCH_BOT"] == "Idle"
        assert event["TRIO_ORCH_REASON"].startswith("hung: no heartbeat")
        assert event["TRIO_ORCH_EXIT_CODE"] == "-15"
    # The slow hook was killed at hook_timeout.
    wait_for(lambda: not processes_with("29.75"), timeout=5, message="slow hook killed")
    assert "restart hook 'sh' timed out after 1s; killed" in manager_log(config)
    assert manager.stop() == 0


DAEMON_BOT = """
import os, time

child = os.fork()
if child == 0:
    os.setsid()                      # a new session: out of the bot's process group
    if os.fork() == 0:               # the daemon, orphaned when its parent exits
        with open("daemon.pid", "w") as out:
            out.write(str(os.getpid()))
        time.sleep(600)
    os._exit(0)                      # not waited for by the bot: a zombie until adopted
time.sleep(0.3)
print("forked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_double_forked_daemon_is_adopted_and_gone_after_stop(tmp_path, manager_factory):
    bot = write_bot(tmp_path / "daemon", DAEMON_BOT)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"Forker": {"script": "main.py", "directory": str(bot), "stop_timeout": 2}},
    )
    manager = manager_factory(config).wait_ready()
    pid_file = bot / "daemon.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), message="daemon pid")
    daemon = int(pid_file.read_text())
    # Reparented to the manager (a subreaper), not to init.
    wait_for(lambda: int(proc_stat_fields(daemon)[1]) == manager.process.pid, timeout=5)
    wait_for(lambda: "adopted pid" in manager_log(config), timeout=5)
    assert f"adopted pid {daemon}, a descendant of Forker" in manager_log(config)

    completed = cli(config, "stop", "Forker")
    assert completed.returncode == 0, completed.stderr
    wait_for(lambda: not pid_alive(daemon), timeout=5, message="daemon ended")
    assert "Forker left 1 processes outside its group" in manager_log(config)
    # Its zombie (and the intermediate child's) are reaped by the manager.
    wait_for(lambda: not zombie_children(manager.process.pid), timeout=5, message="no zombies")
    assert manager.process.poll() is None
    assert manager.stop() == 0


pytest_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")


def git_env(tmp_path: Path) -> dict[str, str]:
    """Environment for git, the CLI and the manager: no user or system git config."""
    home = tmp_path / "home"
    home.mkdir()
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") and key != "NO_COLOR"
    }
    environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1")
    for role in ("AUTHOR", "COMMITTER"):
        environ[f"GIT_{role}_NAME"] = "Test"
        environ[f"GIT_{role}_EMAIL"] = "test@example.invalid"
    return environ


BROKEN_BOT = "import sys\nprint('broken', flush=True)\nsys.exit(1)\n"


@pytest.mark.slow
@pytest.mark.git
@pytest_git
def test_failed_update_is_rolled_back_to_the_previous_commit(
    tmp_path: Path, manager_factory
) -> None:
    env = git_env(tmp_path)
    files = {"main.py": BOT_CODE, "VERSION": "v1\n"}
    remote = Remote.create(tmp_path / "remote", files, env=env, message="v1")
    bot_dir = remote.clone(tmp_path / "bot")
    good = remote.git(bot_dir, "rev-parse", "HEAD")
    (tmp_path / "record.py").write_text(RECORDER)
    record = [sys.executable, "record.py", "events.jsonl"]
    config = write_config(
        tmp_path / "bot_config.yaml",
        {
            "Git": git_bot(
                bot_dir,
                remote.url,
                rollback_on_failure=True,
                max_restart_attempts=1,
                restart_delay=0.2,
                hooks={"on_update": record},
            )
        },
    )
    manager = manager_factory(config, env=env).wait_ready()
    wait_for(lambda: "[Git] version v1" in manager.output(), message="v1 running")

    bad = remote.commit({"main.py": BROKEN_BOT}, "v2")
    completed = cli(config, "update", "Git", env=env, timeout=30)
    assert completed.returncode == 0, completed.stderr

    wait_for(
        lambda: manager.output().count("[Git] version v1") == 2,
        timeout=20,
        message="v1 started again after the rollback",
    )
    info = status(config, "Git", env)
    assert info["commit"] == good
    assert info["state"] == "running"
    message = f"rolled back {bad[:7]} -> {good[:7]} because it failed within 600s of the update"
    assert info["last_update"] == message
    assert remote.git(bot_dir, "rev-parse", "HEAD") == good
    assert f"Git {message}" in manager_log(config)
    assert ("rollback", message) in history(config, "Git")
    seen = wait_for(lambda: len(e := events(tmp_path / "events.jsonl")) >= 2 and e, timeout=5)
    by_kind = {e["TRIO_ORCH_EVENT"]: e for e in seen}
    assert by_kind["update"]["TRIO_ORCH_COMMIT"] == bad
    assert by_kind["update"]["TRIO_ORCH_PREVIOUS_COMMIT"] == good
    assert by_kind["rollback"]["TRIO_ORCH_COMMIT"] == good
    assert by_kind["rollback"]["TRIO_ORCH_PREVIOUS_COMMIT"] == bad
    assert by_kind["rollback"]["TRIO_ORCH_REASON"] == message

    # Automatic restarts update before each start: the remote still has the bad commit,
    # which is rolled back at once instead of being run again.
    completed = cli(config, "restart", "Git", env=env, timeout=30)
    assert completed.returncode == 0, completed.stderr
    wait_for(lambda: manager.output().count("[Git] version v1") == 3, timeout=20)
    assert "broken" not in manager.output().split("[Git] version v1")[-1]
    assert remote.git(bot_dir, "rev-parse", "HEAD") == good
    assert "because it was rolled back before" in manager_log(config)
    assert manager.stop() == 0

    # The db remembers the bad commit: a new manager restores the bot, whose update brings
    # the bad commit again, and it is rolled back before it runs.
    manager = manager_factory(config, env=env).wait_ready()
    wait_for(lambda: "[Git] version v1" in manager.output(), timeout=20, message="v1 restored")
    assert "broken" not in manager.output()
    assert remote.git(bot_dir, "rev-parse", "HEAD") == good
    assert manager_log(config).count("because it was rolled back before") == 2
    assert manager.stop() == 0
