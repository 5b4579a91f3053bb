"""How many automatic restarts a bot may have, and how long to wait before each.

Pure and synchronous (no trio, no clock of its own): the runner passes the time in, so
the rules are unit-tested with plain numbers.

Two ways of counting, chosen by ``restart_window``:

- no window (the default, SPEC 4): consecutive restarts; a run that lasts
  ``healthy_uptime`` resets the count.
- a window of W seconds (Erlang's intensity/period): the restarts of the last W seconds;
  older ones are forgotten, however long the runs between them were.

Either way the bot is ``failed`` when the count has reached ``max_restart_attempts`` and it
ends again, and the n-th counted restart waits ``restart_delay * restart_backoff**(n-1)``,
capped at ``max_restart_delay`` (the cap never lowers ``restart_delay`` itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trio_orchestrator.config import BotConfig

__all__ = ["RestartBudget"]


@attrs.define
class RestartBudget:
    """The restart count of one run of a bot (a user start resets it)."""

    max_attempts: int
    delay: float
    backoff: float = 1.0
    max_delay: float = 300.0
    window: float | None = None
    _consecutive: int = attrs.field(init=False, default=0)
    # A list: it never holds more than max_attempts times, and an empty deque costs
    # every bot its first 600-byte block.
    _times: list[float] = attrs.field(init=False, factory=list)

    @classmethod
    def for_bot(cls, bot: BotConfig) -> RestartBudget:
        return cls(
            max_attempts=bot.max_restart_attempts,
            delay=bot.restart_delay,
            backoff=bot.restart_backoff,
            max_delay=bot.max_restart_delay,
            window=bot.restart_window,
        )

    def count(self, now: float) -> int:
        """The restarts that count against ``max_attempts`` at time *now*."""
        if self.window is None:
            return self._consecutive
        start = now - self.window
        self._times = [time for time in self._times if time > start]
        return len(self._times)

    def exhausted(self, now: float) -> bool:
        """No restart left: the bot should become ``failed``."""
        return self.count(now) >= self.max_attempts

    def record(self, now: float) -> float:
        """Count a restart at *now*; return the delay to wait before it."""
        if self.window is None:
            self._consecutive += 1
        else:
            self._times.append(now)
        return self.delay_for(self.count(now))

    def delay_for(self, attempt: int) -> float:
        """The delay before the *attempt*-th counted restart (1-based)."""
        if self.backoff == 1 or attempt <= 1:
            return self.delay
        cap = max(self.max_delay, self.delay)
        try:
            return min(self.delay * self.backoff ** (attempt - 1), cap)
        except OverflowError:
            return cap

    def healthy_run(self) -> None:
        """A run lasted ``healthy_uptime``: without a window, the count starts over."""
        if self.window is None:
            self._consecutive = 0

    def reset(self) -> None:
        """Forget every restart (a retry after ``failed_cooldown``)."""
        self._consecutive = 0
        self._times.clear()

    def describe(self, now: float) -> str:
        """The count in words, for the log: "2/3", or "2/3 within 60s"."""
        within = "" if self.window is None else f" within {self.window:g}s"
        return f"{self.count(now)}/{self.max_attempts}{within}"

    def gave_up(self, now: float) -> str:
        if self.window is None:
            return f"gave up after {self.count(now)} consecutive restarts"
        return f"gave up after {self.count(now)} restarts within {self.window:g}s"
