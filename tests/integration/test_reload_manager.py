"""Reload (issue 11): only the difference is applied; an invalid config changes nothing."""

from __future__ import annotations

import signal
import sqlite3

import yaml
from helpers import cli, manager_log, pid_alive, wait_for, write_bot, write_config
from test_cli_control import bots_of, wait_state

COUNTER = """
import sys, time
n = 0
while True:
    print(sys.argv[1], n, flush=True)
    n += 1
    time.sleep(0.05)
"""


def bot(tag, **settings):
    return {"script": "main.py", "directory": "bots", "args": [tag], **settings}


def edit(config, change):
    document = yaml.safe_load(config.read_text())
    change(document["bots"])
    config.write_text(yaml.safe_dump(document))


def counts_in_log(config, name, tag):
    text = (config.parent / "logs" / f"{name}.log").read_text()
    return [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if f" {tag} " in line]


def test_reload_applies_only_the_difference(tmp_path, manager_factory):
    write_bot(tmp_path / "bots", COUNTER)
    config = write_config(
        tmp_path / "bot_config.yaml",
        {"Keep": bot("keep"), "Change": bot("change-1"), "Gone": bot("gone")},
        stop_timeout=5,
        command_poll_interval=0.2,
    )
    manager = manager_factory(config).wait_ready()
    for name in ("Keep", "Change", "Gone"):
        wait_state(manager.socket, name, "running")
    before = {name: info["pid"] for name, info in bots_of(manager.socket).items()}

    def change(bots):
        bots["Keep"]["description"] = "only the description changed"
        bots["Change"]["args"] = ["change-2"]
        del bots["Gone"]
        bots["New"] = bot("new")

    edit(config, change)
    result = cli(config, "reload")
    assert result.returncode == 0, result.stderr
    assert "added: New" in result.stdout and "removed: Gone" in result.stdout
    assert "restarted: Change" in result.stdout and "updated: Keep" in result.stdout
    after = bots_of(manager.socket)
    assert set(after) == {"Keep", "Change", "New"}
    assert after["Keep"]["pid"] == before["Keep"]
    assert after["Keep"]["description"] == "only the description changed"
    assert after["Change"]["pid"] not in (None, before["Change"])
    assert not pid_alive(before["Gone"]) and not pid_alive(before["Change"])
    wait_state(manager.socket, "New", "running")
    rows = sqlite3.connect(tmp_path / "bot_states.db").execute("SELECT bot_name FROM bot_states")
    assert {name for (name,) in rows} == {"Keep", "Change", "New"}

    # A config that does not validate is rejected; everything keeps running as it was.
    good = config.read_text()
    config.write_text(good.replace("script: main.py", "script: [not, a, string]", 1))
    rejected = cli(config, "reload")
    assert rejected.returncode == 2
    assert "config error" in rejected.stderr and "Traceback" not in rejected.stderr
    assert {name: info["pid"] for name, info in bots_of(manager.socket).items()} == {
        name: info["pid"] for name, info in after.items()
    } | {"New": bots_of(manager.socket)["New"]["pid"]}

    # SIGHUP reloads too.
    config.write_text(good)
    edit(config, lambda bots: bots["Change"].update(args=["change-3"]))
    changed_pid = bots_of(manager.socket)["Change"]["pid"]
    manager.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: bots_of(manager.socket)["Change"]["pid"] not in (None, changed_pid),
        message="Change restarted by SIGHUP",
    )
    # ... and so does a `reload` line in the command file.
    edit(config, lambda bots: bots.pop("New"))
    with (tmp_path / "bot_commands.txt").open("a") as commands:
        commands.write("reload\n")
    wait_for(lambda: "New" not in bots_of(manager.socket), message="New removed")
    # A reload logs its summary once all of it is done, just after the bots show it.
    wait_for(
        lambda: "config reloaded (command file)" in manager_log(config),
        message="command-file reload logged",
    )

    # The bot that was never touched kept its process and lost no line.
    assert bots_of(manager.socket)["Keep"]["pid"] == before["Keep"]
    assert manager.stop() == 0
    numbers = counts_in_log(config, "Keep", "keep")
    assert numbers == list(range(len(numbers)))
    log = (tmp_path / "logs" / "bot_manager.log").read_text()
    assert "config reloaded (control socket): added: New; removed: Gone" in log
    assert "reload (control socket) rejected; the running config stays" in log
    assert "config reloaded (SIGHUP)" in log and "config reloaded (command file)" in log
