"""The metrics text: Prometheus' own parser reads it; exit reasons map to a small label set."""

from __future__ import annotations

import pytest

from trio_orchestrator.metrics import (
    EXIT_REASONS,
    BotMetrics,
    Counters,
    exit_label,
    listen_settings,
    render,
)
from trio_orchestrator.runner import BotState, StopReason, Transition
from trio_orchestrator.sampler import ManagerUsage

parser = pytest.importorskip("prometheus_client.parser")

MANAGER = ManagerUsage(
    cpu_seconds=1.5, memory_bytes=30_000_000, open_fds=17, start_time=1e9, uptime=42.0
)


def _bot(name="A", **changes):
    values = dict(
        name=name,
        state="running",
        up=True,
        starts=3,
        restarts=2,
        exits={"error": 2, "stopped": 1},
        cpu_seconds=12.5,
        memory_bytes=123_456_789,
        processes=2,
        output_lines={"stdout": 10, "stderr": 1},
        start_time_seconds=1.7e9,
    )
    values.update(changes)
    return BotMetrics(**values)


def _families(text):
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def _value(families, family, sample_name=None, **labels):
    for sample in families[family].samples:
        if (sample_name is None or sample.name == sample_name) and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            return sample.value
    raise KeyError((family, labels))


def test_text_is_read_by_prometheus_parser():
    stopped = _bot("B.2", state="stopped", up=False, start_time_seconds=None)
    text = render([_bot(), stopped], MANAGER, "0.1.0")
    families = _families(text)
    # Counters: the family name without _total, samples with it (Prometheus conventions).
    for name in ("starts", "restarts", "exits", "cpu_seconds", "output_lines"):
        family = families[f"trio_orch_bot_{name}"]
        assert family.type == "counter", name
        assert all(s.name == f"trio_orch_bot_{name}_total" for s in family.samples)
    for name in ("up", "state", "memory_bytes", "processes", "start_time_seconds"):
        assert families[f"trio_orch_bot_{name}"].type == "gauge", name
    assert families["trio_orch_manager_cpu_seconds"].type == "counter"
    for family in families.values():
        assert family.documentation, family.name
    assert _value(families, "trio_orch_bot_up", bot="A") == 1
    assert _value(families, "trio_orch_bot_up", bot="B.2") == 0
    assert _value(families, "trio_orch_bot_state", bot="A", state="running") == 1
    assert _value(families, "trio_orch_bot_state", bot="A", state="stopped") == 0
    states = families["trio_orch_bot_state"].samples
    assert sum(s.value for s in states if s.labels["bot"] == "A") == 1
    assert _value(families, "trio_orch_bot_starts", bot="A") == 3
    assert _value(families, "trio_orch_bot_restarts", bot="A") == 2
    assert _value(families, "trio_orch_bot_exits", bot="A", reason="error") == 2
    assert _value(families, "trio_orch_bot_exits", bot="A", reason="memory") == 0
    reasons = {s.labels["reason"] for s in families["trio_orch_bot_exits"].samples}
    assert reasons == set(EXIT_REASONS)
    assert _value(families, "trio_orch_bot_cpu_seconds", bot="A") == 12.5
    assert _value(families, "trio_orch_bot_memory_bytes", bot="A") == 123_456_789
    assert _value(families, "trio_orch_bot_output_lines", bot="A", stream="stderr") == 1
    # No start time for a bot without a process.
    assert {s.labels["bot"] for s in families["trio_orch_bot_start_time_seconds"].samples} == {"A"}
    assert _value(families, "trio_orch_manager_resident_memory_bytes") == 30_000_000
    assert _value(families, "trio_orch_manager_open_fds") == 17
    assert _value(families, "trio_orch_manager_uptime_seconds") == 42.0
    assert _value(families, "trio_orch_build_info", version="0.1.0") == 1


def test_label_values_are_escaped():
    text = render([_bot('we"ird\\name\n')], MANAGER)
    assert _value(_families(text), "trio_orch_bot_up", bot='we"ird\\name\n') == 1


def _end(state, code=None, reason="", stop=None):
    return Transition(state, None, code, reason, reason, stop)


@pytest.mark.parametrize(
    ("transition", "previous", "label"),
    [
        (_end(BotState.BACKOFF, 1, "exited with code 1"), "running", "error"),
        (_end(BotState.EXITED, 0, "exited with code 0"), "running", "exited"),
        (_end(BotState.FAILED, -9, "killed by SIGKILL"), "running", "killed"),
        (_end(BotState.FAILED, None, "cannot start: No such file"), "starting", "failed_to_start"),
        (_end(BotState.BACKOFF, -15, "hung (killed by SIGTERM)"), "running", "hung"),
        (_end(BotState.BACKOFF, -9, "memory: uses 80 MB (SIGKILL)"), "running", "memory"),
        (_end(BotState.STOPPED, -15, "stopped by user", StopReason.USER), "stopping", "stopped"),
        (_end(BotState.STOPPED, 0, "x", StopReason.SHUTDOWN), "paused", "shutdown"),
        (_end(BotState.STOPPED, 0, "x", StopReason.UPDATE), "stopping", "update"),
        # Stopped while waiting to restart: the process had ended already (counted then).
        (_end(BotState.STOPPED, 1, "stopped by user", StopReason.USER), "backoff", None),
        (Transition(BotState.RUNNING, pid=5), "starting", None),
        (Transition(BotState.STARTING), "stopped", None),
    ],
)
def test_exit_labels(transition, previous, label):
    assert exit_label(transition, previous) == label


def test_counters():
    counters = Counters()
    calls = []
    counters.listeners.append(lambda: calls.append(1))
    counters.record("A", _end(BotState.BACKOFF, 1, "exited with code 1"), "running")
    counters.record("A", _end(BotState.FAILED, 1, "exited with code 1"), "running")
    assert counters.restarts["A"] == 1
    assert counters.exits["A", "error"] == 2
    assert len(calls) == 2


def test_listen_settings(tmp_path):
    from helpers import make_config

    settings = make_config(tmp_path, {}, metrics_listen="127.0.0.1:9464").settings
    assert listen_settings(settings) == ("127.0.0.1:9464", None)
