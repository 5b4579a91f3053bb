"""Human units for the CLI's tables and the runner's exit records. Standard library only
(the CLI stays import-light)."""

from __future__ import annotations

import signal

__all__ = ["human_bytes", "human_percent", "signal_name"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: int | None) -> str:
    """``123456789`` -> ``"118M"``-style text with binary units: ``"117.7MiB"``; None -> "-"."""
    if count is None:
        return "-"
    value = float(count)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_percent(value: float | None) -> str:
    """``12.34`` -> ``"12.3%"``; None (not sampled) -> "-"."""
    return "-" if value is None else f"{value:.1f}%"


def signal_name(number: int) -> str:
    """``15`` -> ``"SIGTERM"``; a number without a name here -> ``"signal 99"``."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
