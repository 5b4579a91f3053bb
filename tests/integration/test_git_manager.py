"""Git auto-update end to end (SPEC 4, 6, 7): the real `trio-orch` CLI and manager, real git,
and local bare repositories as origin."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from gitrepo import Remote, isolated_git_env
from helpers import cli, history, manager_log, pid_alive, status, wait_for, write_config

pytestmark = [
    pytest.mark.git,
    pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable"),
]

# Prints the version committed in the repository, then idles until stopped.
BOT_CODE = textwrap.dedent(
    """\
    import pathlib, time
    print("version", pathlib.Path("VERSION").read_text().strip(), flush=True)
    while True:
        time.sleep(1)
    """
)
PLAIN_BOT_CODE = textwrap.dedent(
    """\
    import time
    print("hello", flush=True)
    while True:
        time.sleep(1)
    """
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment for git, the CLI and the manager: no user or system git config."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") and key != "NO_COLOR"
    }
    return environ | isolated_git_env(tmp_path / "home")


def release(remote: Remote, version: str, files: dict[str, str] | None = None) -> str:
    """Commit VERSION=*version* (and *files*), push it to origin, return its sha."""
    return remote.commit({**(files or {}), "VERSION": f"{version}\n"}, version)


@pytest.fixture
def remote(tmp_path: Path, env: dict[str, str]) -> Remote:
    files = {"main.py": BOT_CODE, "VERSION": "v1\n"}
    return Remote.create(tmp_path / "remote", files, env=env, message="v1")


def git_bot(directory: Path, repo_url: str, **settings: object) -> dict:
    return {"script": "main.py", "directory": str(directory), "repo_url": repo_url, **settings}


def test_new_commit_is_checked_out_before_the_bot_starts(
    tmp_path: Path, remote: Remote, env: dict[str, str], manager_factory
) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    old = remote.git(bot_dir, "rev-parse", "HEAD")
    new = release(remote, "v2")
    config = write_config(tmp_path / "bot_config.yaml", {"Git": git_bot(bot_dir, remote.url)})

    manager = manager_factory(config, env=env).wait_ready()
    wait_for(lambda: "[Git] version" in manager.output(), message="the bot's first line")

    assert "[Git] version v2" in manager.output()
    assert "[Git] version v1" not in manager.output()
    assert f"Git git update: updated {old[:7]} -> {new[:7]}" in manager_log(config)
    # SPEC 6: the outcome and the commit are reported, live ...
    info = status(config, "Git", env)
    assert info["manager"] == "running"
    assert info["last_update"].startswith("updated ")
    assert info["commit"] == new
    table = cli(config, "status", "Git", env=env, timeout=15).stdout
    assert "last update:" in table and info["last_update"] in table  # status NAME: key: value
    assert new[:12] in table
    # ... stored in the db, and still shown once the manager is gone.
    assert manager.stop() == 0
    assert ("update", info["last_update"]) in history(config, "Git")
    offline = status(config, "Git", env)
    assert offline["manager"] == "not running"
    assert (offline["last_update"], offline["commit"]) == (info["last_update"], new)


def hanging_bot(
    tmp_path: Path, remote: Remote, env: dict[str, str], others: dict, git_timeout: float
) -> tuple[Path, Path]:
    """Bot "Hang", whose origin never answers (a fake ssh on PATH), plus *others*.

    Returns the config path and the file where each fake ssh writes its pid.
    """
    hang_dir = remote.clone(tmp_path / "hang")
    url = "ssh://git.example.invalid/repo.git"
    remote.git(hang_dir, "remote", "set-url", "origin", url)
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    ssh_pids = tmp_path / "ssh.pids"
    (fake_bin / "ssh").write_text(f"#!/bin/sh\necho $$ >> {ssh_pids}\nexec sleep 60\n")
    (fake_bin / "ssh").chmod(0o755)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"Hang": git_bot(hang_dir, url), **others},
        git_timeout=git_timeout,
    )
    return config, ssh_pids


@pytest.mark.slow
def test_hanging_remote_delays_only_its_own_bot(
    tmp_path: Path, remote: Remote, env: dict[str, str], manager_factory
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / "main.py").write_text(PLAIN_BOT_CODE)
    # Room for two CLI calls on a loaded machine while the hang is in progress.
    timeout = 8
    config, ssh_pids = hanging_bot(
        tmp_path,
        remote,
        env,
        {"Other": {"script": "main.py", "directory": "other"}},
        git_timeout=timeout,
    )

    started = time.monotonic()
    manager = manager_factory(config, env=env).wait_ready()
    wait_for(lambda: "[Other] hello" in manager.output(), timeout=10, message="Other's line")
    wait_for(ssh_pids.exists, timeout=5, message="git to reach the remote")

    # The hang is in progress: Other runs, and the control socket answers (Hang is
    # still starting after Other's status came back, so the reply did not wait for git).
    assert status(config, "Other", env)["state"] == "running"
    assert status(config, "Hang", env)["state"] == "starting"
    assert "[Hang]" not in manager.output()
    reply = cli(config, "update", "Other", env=env, timeout=15)
    assert reply.returncode == 1
    assert reply.stderr.strip() == "Other has no repo_url; nothing to update"

    # After the timeout the bot starts on the code it has, and the failure is logged.
    wait_for(lambda: "[Hang] version v1" in manager.output(), timeout=timeout + 10)
    assert time.monotonic() - started >= timeout
    assert f"Hang git update: failed: git pull timed out after {timeout}s" in manager_log(config)
    hang = status(config, "Hang", env)
    assert hang["state"] == "running"
    assert hang["last_update"] == f"failed: git pull timed out after {timeout}s"
    # The killed update leaves no helper behind.
    pids = [int(line) for line in ssh_pids.read_text().split()]
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=5, message="ssh to end")


@pytest.mark.parametrize("how", ["stop command", "SIGTERM"])
def test_stop_and_shutdown_cancel_a_hanging_update(
    tmp_path: Path, remote: Remote, env: dict[str, str], manager_factory, how: str
) -> None:
    config, ssh_pids = hanging_bot(tmp_path, remote, env, {}, git_timeout=60)
    manager = manager_factory(config, env=env).wait_ready()
    wait_for(ssh_pids.exists, timeout=10, message="git to reach the remote")
    started = time.monotonic()
    if how == "stop command":
        reply = cli(config, "stop", "Hang", env=env, timeout=30)
        assert reply.returncode == 0, reply.stderr
        assert status(config, "Hang", env)["state"] == "stopped"
    else:
        assert manager.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 20  # not git_timeout (60 s), even on a loaded machine
    assert "[Hang]" not in manager.output()  # cancelled before the bot ran
    pids = [int(line) for line in ssh_pids.read_text().split()]
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=5, message="ssh to end")


def test_update_command_restarts_only_when_there_is_a_new_commit(
    tmp_path: Path, remote: Remote, env: dict[str, str], manager_factory
) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"Git": git_bot(bot_dir, remote.url)},
        command_poll_interval=0.2,
    )
    manager = manager_factory(config, env=env).wait_ready()
    wait_for(lambda: "[Git] version v1" in manager.output(), message="v1")
    first_pid = status(config, "Git", env)["pid"]

    # Nothing new: the bot keeps running.
    reply = cli(config, "update", "Git", env=env, timeout=30)
    assert reply.returncode == 0, reply.stderr
    assert "up-to-date" in reply.stdout
    assert "restarted" not in reply.stdout
    info = status(config, "Git", env)
    assert (info["state"], info["pid"]) == ("running", first_pid)
    assert info["last_update"].startswith("up-to-date")

    # A new commit: pulled, and the bot is restarted on it.
    v2 = release(remote, "v2")
    reply = cli(config, "update", "Git", env=env, timeout=30)
    assert reply.returncode == 0, reply.stderr
    assert f"-> {v2[:7]}; restarted" in reply.stdout
    info = status(config, "Git", env)
    assert info["state"] == "running"
    assert info["pid"] not in (None, first_pid)
    assert info["commit"] == v2
    assert info["last_update"].startswith("updated ")  # the restart did not update again
    assert not pid_alive(first_pid)
    wait_for(lambda: "[Git] version v2" in manager.output(), message="v2")
    second_pid = info["pid"]

    # The same through the command file.
    commands = config.parent / "bot_commands.txt"
    with commands.open("a") as file:
        file.write("update Git\n")
    wait_for(lambda: "command 'update Git' from command file" in manager_log(config))
    assert status(config, "Git", env)["pid"] == second_pid  # up to date: not restarted
    v3 = release(remote, "v3")
    with commands.open("a") as file:
        file.write("update Git\n")
    wait_for(lambda: "[Git] version v3" in manager.output(), message="v3")
    info = status(config, "Git", env)
    assert info["pid"] not in (None, second_pid)
    assert info["commit"] == v3
    # One update per command (the restart after it runs none), each stored in the db.
    updates = [detail.split()[0] for event, detail in history(config, "Git") if event == "update"]
    assert updates == ["up-to-date", "up-to-date", "updated", "up-to-date", "updated"]


def test_automatic_restart_updates_first(
    tmp_path: Path, remote: Remote, env: dict[str, str], manager_factory
) -> None:
    # v1 crashes at once; the fix (v2) is pushed while it is in its restart loop.
    crashing = BOT_CODE.replace(
        "while True:",
        'if "v1" in pathlib.Path("VERSION").read_text():\n    raise SystemExit(1)\nwhile True:',
    )
    release(remote, "v1", {"main.py": crashing})
    bot_dir = remote.clone(tmp_path / "bot")
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"Git": git_bot(bot_dir, remote.url, restart_delay=0.2, max_restart_attempts=50)},
    )
    manager = manager_factory(config, env=env).wait_ready()
    wait_for(lambda: "[Git] version v1" in manager.output(), message="v1")

    v2 = release(remote, "v2")

    wait_for(lambda: "[Git] version v2" in manager.output(), message="v2 after a restart")
    info = status(config, "Git", env)
    assert info["state"] == "running"
    assert info["restarts"] >= 1
    assert info["commit"] == v2
    assert "Git git update: updated " in manager_log(config)


def test_check_never_runs_git(tmp_path: Path, remote: Remote, env: dict[str, str]) -> None:
    bot_dir = remote.clone(tmp_path / "bot")
    release(remote, "v2")
    marker = tmp_path / "git-ran"
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    real_git = shutil.which("git")
    (fake_bin / "git").write_text(f'#!/bin/sh\ntouch {marker}\nexec {real_git} "$@"\n')
    (fake_bin / "git").chmod(0o755)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    config = write_config(tmp_path / "bot_config.yaml", {"Git": git_bot(bot_dir, remote.url)})

    completed = cli(config, "check", env=env, timeout=30)

    assert completed.returncode == 0, completed.stderr
    assert not marker.exists()
    assert (bot_dir / "VERSION").read_text() == "v1\n"
    # The fake is the git that would run.
    subprocess.run(["git", "--version"], env=env, check=True, capture_output=True)
    assert marker.exists()


def test_directory_that_is_or_contains_the_config_directory_is_never_updated(
    tmp_path: Path, remote: Remote, env: dict[str, str], manager_factory
) -> None:
    outer = remote.clone(tmp_path / "outer")
    inner = remote.clone(outer / "inner")  # the config's directory
    release(remote, "v2")
    config = write_config(
        inner / "bot_config.yaml",
        {"Outer": git_bot(Path(".."), remote.url), "Inner": git_bot(Path("."), remote.url)},
    )

    manager = manager_factory(config, env=env).wait_ready()
    wait_for(
        lambda: all(f"[{name}] version" in manager.output() for name in ("Outer", "Inner")),
        message="both bots' first lines",
    )

    output, log = manager.output(), manager_log(config)
    for name, directory in (("Outer", outer), ("Inner", inner)):
        assert f"[{name}] version v1" in output
        assert (directory / "VERSION").read_text() == "v1\n"
        assert f"{name} git update: skipped: " in log
        assert status(config, name, env)["last_update"].startswith("skipped: ")
    assert "contains protected directory" in log
