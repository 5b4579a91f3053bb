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


_FAMILY = "trio_orch.metric"


@attrs.frozen
class _Family:
    """How a :class:`BotMetrics` field is exposed: type, HELP, and the label it is split by."""

    kind: str
    help_text: str
    # (label, its values): one sample per value, from a mapping of counts (0 when absent)
    # or, for a text field, 1 for the value it holds and 0 for the others.
    split_by: tuple[str, tuple[str, ...]] | None


def _counter(help_text: str, split_by: tuple[str, tuple[str, ...]] | None = None) -> Any:
    return attrs.field(metadata={_FAMILY: _Family("counter", help_text, split_by)})


def _gauge(help_text: str, split_by: tuple[str, tuple[str, ...]] | None = None) -> Any:
    return attrs.field(metadata={_FAMILY: _Family("gauge", help_text, split_by)})


@attrs.frozen
class BotMetrics:
    """One bot's figures for :func:`render`.

    Every field but the name is the family ``trio_orch_bot_<field>`` (``_total`` added to
    a counter's name), in this order.
    """

    name: str
    up: bool = _gauge("Whether the bot has a live process (running or paused).")
    state: str = _gauge(
        "The bot's lifecycle state: 1 for the current state, 0 for the others.",
        ("state", STATES),
    )
    starts: int = _counter(
        "Starts of the bot's process (user and automatic), as recorded in the state db."
    )
    restarts: int = _counter("Automatic restarts of the bot since the manager started.")
    exits: Mapping[str, int] = _counter(
        "Ends of the bot's process since the manager started, by reason.",
        ("reason", EXIT_REASONS),
    )
    cpu_seconds: float = _counter(
        "CPU time (user and system) of the bot's process group, in seconds, while sampled."
    )
    memory_bytes: int = _gauge("Resident memory of the bot's process group, in bytes.")
    processes: int = _gauge("Live processes in the bot's process group.")
    output_lines: Mapping[str, int] = _counter(
        "Lines the bot wrote, by stream, since the manager started.", ("stream", STREAMS)
    )
    # Unix time the current process started; None (no sample) without a process.
    start_time_seconds: float | None = _gauge(
        "Start time of the bot's current process since the Unix epoch, in seconds."
    )


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

    def bot_family(self, field: attrs.Attribute, bots: list[BotMetrics]) -> None:
        family: _Family = field.metadata[_FAMILY]
        name = f"trio_orch_bot_{field.name}" + ("_total" if family.kind == "counter" else "")
        self.family(name, family.kind, family.help_text)
        for bot in bots:
            value = getattr(bot, field.name)
            if family.split_by is None:
                if value is not None:
                    self.sample(name, value, bot=bot.name)
                continue
            label, label_values = family.split_by
            for each in label_values:
                count = value == each if isinstance(value, str) else value.get(each, 0)
                self.sample(name, count, bot=bot.name, **{label: each})


def render(bots: Iterable[BotMetrics], manager: ManagerUsage, version: str = "") -> str:
    """The Prometheus text exposition (format 0.0.4) of the bots and the manager."""
    bots = list(bots)
    out = _Writer()
    for field in attrs.fields(BotMetrics):
        if _FAMILY in field.metadata:
            out.bot_family(field, bots)
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
        start_time_seconds=None if pid is None else start_time,
    )
