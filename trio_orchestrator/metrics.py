"""Prometheus metrics: the counters the supervisor keeps, and the text exposition format.

Pure: no I/O. The supervisor feeds :class:`Counters` with every transition and gives
:func:`render` a snapshot of its state; ``trio-orch metrics`` and ``GET /metrics`` both
print what :func:`render` returns (text format 0.0.4).
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Any

import attrs

from trio_orchestrator.runner import BotState, StopReason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from trio_orchestrator.config import GlobalSettings
    from trio_orchestrator.runner import Transition
    from trio_orchestrator.sampler import ManagerUsage

__all__ = [
    "CONTENT_TYPE",
    "EXIT_REASONS",
    "BotMetrics",
    "Counters",
    "exit_label",
    "listen_settings",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = tuple(state.value for state in BotState)
STREAMS = ("stdout", "stderr")
# Why a bot's process ended: by itself (exited: code 0, error: another code, killed: a
# signal we did not send, failed_to_start), or ended by the manager (the rest).
EXIT_REASONS = (
    "exited",
    "error",
    "killed",
    "failed_to_start",
    "stopped",
    "shutdown",
    "reload",
    "update",
    "hung",
    "memory",
)
_STOP_LABELS = {
    StopReason.USER: "stopped",
    StopReason.SHUTDOWN: "shutdown",
    StopReason.RELOAD: "reload",
    StopReason.UPDATE: "update",
    StopReason.HUNG: "hung",
    StopReason.MEMORY: "memory",
}
# States a bot has a process in: a stop from one of them ended a process.
_WITH_PROCESS = (BotState.RUNNING, BotState.PAUSED, BotState.STOPPING)
_ENDS = (BotState.BACKOFF, BotState.EXITED, BotState.FAILED)


def listen_settings(settings: GlobalSettings) -> tuple[str | None, str | None]:
    """``(metrics_listen, web_token)`` of the global settings (None when not set)."""
    return settings.metrics_listen, settings.web_token


def exit_label(transition: Transition, previous: str) -> str | None:
    """The ``reason`` label of the process end that *transition* reports, if it reports one.

    Every process end is reported once: by ``backoff``, ``exited`` or ``failed`` when the
    bot ended by itself (or the manager ended it as hung or over its memory limit), by
    ``stopped`` when the manager stopped it.
    """
    state = transition.state
    if state is BotState.STOPPED:
        if previous not in _WITH_PROCESS:
            return None  # stopped during the restart delay: no process ended
        return _STOP_LABELS.get(transition.stop_reason or StopReason.SHUTDOWN, "stopped")
    if state not in _ENDS:
        return None
    code = transition.exit_code
    for reason in (StopReason.HUNG, StopReason.MEMORY):
        if transition.reason.startswith(reason.words):
            return _STOP_LABELS[reason]
    if code is None:
        return "failed_to_start" if transition.reason else None
    if code < 0:
        return "killed"
    return "exited" if code == 0 else "error"


@attrs.define
class Counters:
    """What the supervisor counts since it started: automatic restarts, process ends."""

    restarts: collections.Counter[str] = attrs.Factory(collections.Counter)
    exits: collections.Counter[tuple[str, str]] = attrs.Factory(collections.Counter)
    # Called after every transition (the status page's live updates).
    listeners: list[Callable[[], None]] = attrs.Factory(list)

    def record(self, name: str, transition: Transition, previous: str) -> None:
        if transition.state is BotState.BACKOFF:
            self.restarts[name] += 1
        label = exit_label(transition, previous)
        if label is not None:
            self.exits[name, label] += 1
        for listener in self.listeners:
            listener()


@attrs.frozen
class BotMetrics:
    """One bot's figures for :func:`render`."""

    name: str
    state: str
    up: bool
    starts: int
    restarts: int
    exits: Mapping[str, int]
    cpu_seconds: float
    memory_bytes: int
    processes: int
    output_lines: Mapping[str, int]
    start_time: float | None  # Unix time the current process started


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{text}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")


# Per bot: name, type, HELP, and how one bot writes its samples.
_BOT_FAMILIES: tuple[tuple[str, str, str, Callable[[BotMetrics, _Writer, str], object]], ...] = (
    (
        "trio_orch_bot_up",
        "gauge",
        "Whether the bot has a live process (running or paused).",
        lambda b, w, n: w.sample(n, b.up, bot=b.name),
    ),
    (
        "trio_orch_bot_state",
        "gauge",
        "The bot's lifecycle state: 1 for the current state, 0 for the others.",
        lambda b, w, n: [w.sample(n, b.state == s, bot=b.name, state=s) for s in STATES],
    ),
    (
        "trio_orch_bot_starts_total",
        "counter",
        "Starts of the bot's process (user and automatic), as recorded in the state db.",
        lambda b, w, n: w.sample(n, b.starts, bot=b.name),
    ),
    (
        "trio_orch_bot_restarts_total",
        "counter",
        "Automatic restarts of the bot since the manager started.",
        lambda b, w, n: w.sample(n, b.restarts, bot=b.name),
    ),
    (
        "trio_orch_bot_exits_total",
        "counter",
        "Ends of the bot's process since the manager started, by reason.",
        lambda b, w, n: [
            w.sample(n, b.exits.get(r, 0), bot=b.name, reason=r) for r in EXIT_REASONS
        ],
    ),
    (
        "trio_orch_bot_cpu_seconds_total",
        "counter",
        "CPU time (user and system) of the bot's process group, in seconds, while sampled.",
        lambda b, w, n: w.sample(n, b.cpu_seconds, bot=b.name),
    ),
    (
        "trio_orch_bot_memory_bytes",
        "gauge",
        "Resident memory of the bot's process group, in bytes.",
        lambda b, w, n: w.sample(n, b.memory_bytes, bot=b.name),
    ),
    (
        "trio_orch_bot_processes",
        "gauge",
        "Live processes in the bot's process group.",
        lambda b, w, n: w.sample(n, b.processes, bot=b.name),
    ),
    (
        "trio_orch_bot_output_lines_total",
        "counter",
        "Lines the bot wrote, by stream, since the manager started.",
        lambda b, w, n: [
            w.sample(n, b.output_lines.get(s, 0), bot=b.name, stream=s) for s in STREAMS
        ],
    ),
    (
        "trio_orch_bot_start_time_seconds",
        "gauge",
        "Start time of the bot's current process since the Unix epoch, in seconds.",
        lambda b, w, n: None if b.start_time is None else w.sample(n, b.start_time, bot=b.name),
    ),
)


def render(bots: Iterable[BotMetrics], manager: ManagerUsage, version: str = "") -> str:
    """The Prometheus text exposition (format 0.0.4) of the bots and the manager."""
    bots = list(bots)
    out = _Writer()
    for name, kind, help_text, write in _BOT_FAMILIES:
        out.family(name, kind, help_text)
        for bot in bots:
            write(bot, out, name)
    _write_manager(out, manager)
    out.family("trio_orch_build_info", "gauge", "The trio-orch version, as a label; always 1.")
    out.sample("trio_orch_build_info", 1, version=version or "unknown")
    return "\n".join(out.lines) + "\n"


def _write_manager(out: _Writer, manager: ManagerUsage) -> None:
    families: list[tuple[str, str, str, float]] = [
        (
            "trio_orch_manager_cpu_seconds_total",
            "counter",
            "CPU time (user and system) of the manager process, in seconds.",
            manager.cpu_seconds,
        ),
        (
            "trio_orch_manager_resident_memory_bytes",
            "gauge",
            "Resident memory of the manager process, in bytes.",
            manager.memory_bytes,
        ),
        (
            "trio_orch_manager_open_fds",
            "gauge",
            "Open file descriptors of the manager process.",
            manager.open_fds,
        ),
        (
            "trio_orch_manager_start_time_seconds",
            "gauge",
            "Start time of the manager process since the Unix epoch, in seconds.",
            round(manager.start_time, 2),
        ),
        (
            "trio_orch_manager_uptime_seconds",
            "gauge",
            "Seconds since the manager process started.",
            round(manager.uptime, 2),
        ),
    ]
    for name, kind, help_text, value in families:
        out.family(name, kind, help_text)
        out.sample(name, value)


def bot_metrics(
    name: str,
    *,
    state: str,
    pid: int | None,
    record: Any,
    counters: Counters,
    usage: Any,
    cpu_seconds: float,
    line_counts: Mapping[tuple[str, str], int],
    start_time: float | None,
) -> BotMetrics:
    """A :class:`BotMetrics` from the supervisor's pieces (usage: a sampler BotUsage)."""
    return BotMetrics(
        name=name,
        state=state,
        up=pid is not None,
        starts=record.start_count,
        restarts=counters.restarts[name],
        exits={reason: count for (bot, reason), count in counters.exits.items() if bot == name},
        cpu_seconds=cpu_seconds,
        memory_bytes=0 if usage is None else usage.memory_bytes,
        processes=0 if usage is None else usage.processes,
        output_lines={stream: line_counts.get((name, stream), 0) for stream in STREAMS},
        start_time=None if pid is None else start_time,
    )
