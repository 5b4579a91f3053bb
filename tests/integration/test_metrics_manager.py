"""Issue 15 end to end: `list`/`status` figures, `trio-orch metrics`, the HTTP listener."""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.error
import urllib.request

import pytest
from helpers import cli, wait_for, write_bot, write_config

parser = pytest.importorskip("prometheus_client.parser")

MIB = 1024 * 1024
ALLOC = """
import time
data = bytearray(48 * 1024 * 1024)
for i in range(0, len(data), 4096):
    data[i] = 1
print("allocated", flush=True)
while True:
    time.sleep(1)
"""
SPIN = """
print("spinning", flush=True)
while True:
    pass
"""
CRASH = """
import sys
print("crash", flush=True)
print("oops", file=sys.stderr, flush=True)
sys.exit(3)
"""
TOKEN = "t0ken-for-tests"


def _config(tmp_path, **settings):
    write_bot(tmp_path / "alloc", ALLOC)
    write_bot(tmp_path / "spin", SPIN)
    write_bot(tmp_path / "crash", CRASH)
    bots = {
        "Alloc": {"script": "main.py", "directory": "alloc"},
        "Spin": {"script": "main.py", "directory": "spin"},
        "Crash": {
            "script": "main.py",
            "directory": "crash",
            "restart_delay": 0.2,
            "max_restart_attempts": 2,
        },
    }
    return write_config(tmp_path / "bot_config.yaml", bots, stop_timeout=3, **settings)


def _address(manager) -> str:
    found = wait_for(
        lambda: re.search(r"/metrics on http://([\d.]+:\d+)/", manager.output()),
        message="the listener's address in the manager's output",
    )
    return found.group(1)


def _get(url, headers=None, method="GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(text):
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _bots(config):
    result = cli(config, "list", "--json")
    assert result.returncode == 0, result.stderr
    return {bot["name"]: bot for bot in json.loads(result.stdout)["bots"]}


def _at_rest(bot) -> bool:
    return bot["cpu_percent"] is not None and bot["cpu_percent"] < 5


@pytest.mark.slow
def test_list_status_and_metrics_show_the_sampled_figures(tmp_path, manager_factory):
    config = _config(tmp_path)  # no listener: `list` itself makes the sampler look
    manager = manager_factory(config).wait_ready()
    wait_for(lambda: _bots(config)["Crash"]["state"] == "failed", 30, message="Crash failed")
    wait_for(lambda: "allocated" in manager.output(), message="Alloc allocated")
    # Touching its 48 MiB costs Alloc CPU; on a busy machine that can still be in the
    # window of the first sample, so wait for a sample of it sleeping.
    wait_for(lambda: _at_rest(_bots(config)["Alloc"]), message="Alloc idle")
    bots = _bots(config)
    alloc, spin = bots["Alloc"], bots["Spin"]
    assert alloc["processes"] == 1
    assert 48 * MIB < alloc["memory_bytes"] < 48 * MIB + 40 * MIB
    assert spin["cpu_percent"] > 5  # a spinner on a shared machine: measured, not 0
    assert bots["Crash"]["memory_bytes"] is None and bots["Crash"]["cpu_percent"] is None

    table = cli(config, "status", "Alloc")
    assert re.search(r"^cpu:\s+\S+%$", table.stdout, re.M), table.stdout
    assert re.search(r"\d+(\.\d)?MiB", table.stdout), table.stdout

    result = cli(config, "metrics")
    assert result.returncode == 0, result.stderr
    samples = _samples(result.stdout)
    db = sqlite3.connect(tmp_path / "bot_states.db")
    starts = dict(db.execute("SELECT bot_name, start_count FROM bot_states"))
    db.close()
    bots = _bots(config)
    for name in ("Alloc", "Spin", "Crash"):
        key = (("bot", name),)
        start_count = bots[name]["start_count"]
        assert samples["trio_orch_bot_starts_total", key] == starts[name] == start_count
        up = 1 if bots[name]["pid"] else 0
        assert samples["trio_orch_bot_up", key] == up
        state_key = (("bot", name), ("state", bots[name]["state"]))
        assert samples["trio_orch_bot_state", state_key] == 1
    crash = (("bot", "Crash"),)
    assert samples["trio_orch_bot_restarts_total", crash] == 2 == bots["Crash"]["restarts"]
    assert samples["trio_orch_bot_exits_total", (("bot", "Crash"), ("reason", "error"))] == 3
    lines = (("bot", "Crash"), ("stream", "stderr"))
    assert samples["trio_orch_bot_output_lines_total", lines] == 3
    alloc_key = (("bot", "Alloc"),)
    assert samples["trio_orch_bot_memory_bytes", alloc_key] > 48 * MIB
    assert samples["trio_orch_bot_cpu_seconds_total", (("bot", "Spin"),)] > 0
    assert samples["trio_orch_manager_resident_memory_bytes", ()] > 10 * MIB
    assert samples["trio_orch_manager_open_fds", ()] > 3
    # A stop is counted under its reason.
    assert cli(config, "stop", "Alloc").returncode == 0
    samples = _samples(cli(config, "metrics").stdout)
    assert samples["trio_orch_bot_exits_total", (("bot", "Alloc"), ("reason", "stopped"))] == 1
    assert samples["trio_orch_bot_up", alloc_key] == 0
    # No listener configured: h11 was never imported by the manager.
    assert "status page" not in manager.output()
    assert manager.stop() == 0


def test_metrics_without_a_manager_exits_3(tmp_path):
    result = cli(_config(tmp_path), "metrics")
    assert result.returncode == 3
    assert "no manager is running" in result.stderr


@pytest.mark.slow
def test_listener_serves_metrics_and_refuses_actions_without_the_token(tmp_path, manager_factory):
    config = _config(tmp_path, metrics_listen="127.0.0.1:0", web_token=TOKEN)
    manager = manager_factory(config).wait_ready()
    base = f"http://{_address(manager)}"
    wait_for(lambda: _bots(config)["Spin"]["state"] == "running", message="Spin running")
    status, body = _get(f"{base}/metrics")
    assert status == 200
    samples = _samples(body.decode())
    assert samples["trio_orch_bot_up", (("bot", "Spin"),)] == 1
    status, body = _get(f"{base}/api/bots")
    assert {bot["name"] for bot in json.loads(body)["bots"]} == {"Alloc", "Spin", "Crash"}

    assert _get(f"{base}/api/stop/Spin", method="POST")[0] == 403
    wrong = {"Authorization": "Bearer nope"}
    assert _get(f"{base}/api/stop/Spin", wrong, method="POST")[0] == 403
    assert _bots(config)["Spin"]["state"] == "running"
    good = {"Authorization": f"Bearer {TOKEN}"}
    status, body = _get(f"{base}/api/stop/Spin", good, method="POST")
    assert status == 200, body
    assert json.loads(body)["message"] == "Spin stopped"
    assert _bots(config)["Spin"]["state"] == "stopped"
    assert "command 'stop Spin' from status page" in manager.output()
    assert manager.stop() == 0


def test_non_loopback_without_a_token_is_refused_at_start(tmp_path):
    config = _config(tmp_path, metrics_listen="0.0.0.0:0")
    result = cli(config, "start_all", timeout=30)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "metrics_listen" in message and "not a loopback address" in message
    assert "web_token" in message and "Traceback" not in message
    assert not (tmp_path / ".trio-orch.sock").exists()


def test_a_host_name_binds_its_loopback_addresses_only(tmp_path, manager_factory):
    config = _config(tmp_path, metrics_listen="localhost:0")
    manager = manager_factory(config).wait_ready()
    _address(manager)
    line = next(x for x in manager.output().splitlines() if "/metrics on http://" in x)
    addresses = line.split("http://", 1)[1].rstrip("/").split(", ")
    assert all(re.fullmatch(r"(127\.0\.0\.1|\[::1\]):\d+", a) for a in addresses), line
    assert manager.stop() == 0
