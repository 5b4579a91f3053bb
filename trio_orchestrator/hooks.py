"""Event hooks: a user's command run when a bot exits, restarts, fails or is updated.

How users get an alert (Discord, Telegram, e-mail): the command gets the event's details in
its environment (``TRIO_ORCH_EVENT``, ``TRIO_ORCH_BOT``, ``TRIO_ORCH_REASON``,
``TRIO_ORCH_EXIT_CODE``, ``TRIO_ORCH_COMMIT``, ``TRIO_ORCH_PREVIOUS_COMMIT``,
``TRIO_ORCH_TIME``). Hooks never block supervision: :meth:`HookRunner.fire` only schedules
the command in the hook nursery. Each hook runs in its own session, with
``hook_timeout``, after which its whole process group is killed; at most
:data:`MAX_RUNNING` run at once and at most :data:`MAX_PENDING` wait, beyond which events
are dropped and counted (a crash loop with a slow hook cannot pile up processes). Failures
(cannot start, non-zero exit, timeout) are logged as warnings with the hook's output.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_orchestrator.runner import BotState, Transition, spawn_group

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from trio_orchestrator.config import Hooks

__all__ = [
    "MAX_PENDING",
    "MAX_RUNNING",
    "HookEvent",
    "HookRunner",
    "transition_events",
]

LOGGER = logging.getLogger(__name__)

MAX_RUNNING = 8
MAX_PENDING = 64
# The first bytes of a hook's output that reach the log.
OUTPUT_LIMIT = 2000
# At manager exit, how long hooks still running may go on before they are killed.
SHUTDOWN_GRACE = 5.0
# Which Hooks field runs for which event.
_HOOK_FIELDS = {
    "exit": "on_exit",
    "restart": "on_restart",
    "failed": "on_failed",
    "update": "on_update",
    "rollback": "on_update",
}


@attrs.frozen
class HookEvent:
    """What happened to which bot; becomes the hook's ``TRIO_ORCH_*`` variables."""

    event: str  # exit, restart, failed, update, rollback
    bot: str
    reason: str = ""
    exit_code: int | None = None
    commit: str | None = None
    previous_commit: str | None = None
    time: str = attrs.field(
        factory=lambda: datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    )

    def environment(self) -> dict[str, str]:
        return {
            "TRIO_ORCH_EVENT": self.event,
            "TRIO_ORCH_BOT": self.bot,
            "TRIO_ORCH_REASON": self.reason,
            "TRIO_ORCH_EXIT_CODE": "" if self.exit_code is None else str(self.exit_code),
            "TRIO_ORCH_COMMIT": self.commit or "",
            "TRIO_ORCH_PREVIOUS_COMMIT": self.previous_commit or "",
            "TRIO_ORCH_TIME": self.time,
        }


def transition_events(transition: Transition) -> list[str]:
    """The hook events a transition stands for.

    ``exit`` when the bot's process ended without a user or the manager asking (a crash,
    a clean exit, or a watchdog restart), then ``restart`` when an automatic restart is
    scheduled or ``failed`` when the bot gave up.
    """
    state = transition.state
    if state not in (BotState.BACKOFF, BotState.EXITED, BotState.FAILED):
        return []
    events = ["exit"] if transition.exit_code is not None else []
    if state is BotState.BACKOFF:
        events.append("restart")
    elif state is BotState.FAILED:
        events.append("failed")
    return events


def _kill_group(process: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _deliver_kill(process: trio.Process) -> None:
    _kill_group(process)


@attrs.define(eq=False)
class HookRunner:
    """Runs hook commands in the background. Use :meth:`running` around the bots.

    Args:
        timeout: seconds a hook may run (``hook_timeout``).
        cwd: where hooks run (the config's directory, so relative paths work).
        spawn: ``trio.run_process`` or a wrapper (the reaper registers the pids).
    """

    timeout: float
    cwd: Path | None = None
    spawn: Callable[..., Any] = trio.run_process
    max_running: int = MAX_RUNNING
    max_pending: int = MAX_PENDING
    pending: int = attrs.field(init=False, default=0)
    dropped: int = attrs.field(init=False, default=0)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.max_running)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HookRunner]:
        """Accept hooks inside the block; on leaving, hooks still running get
        :data:`SHUTDOWN_GRACE` seconds (within their timeout) before they are killed.

        **Cancellation:** cancelling kills the running hooks' process groups.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                self._nursery = None
                nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE

    def fire(self, hooks: Hooks, event: HookEvent) -> bool:
        """Schedule the hook configured for *event*, if any; never waits.

        Returns True if a command was scheduled.
        """
        argv = getattr(hooks, _HOOK_FIELDS[event.event])
        if argv is None or self._nursery is None:
            return False
        if self.pending >= self.max_pending:
            self.dropped += 1
            LOGGER.warning(
                "%s %s hook dropped: %d hooks already waiting (%d dropped so far)",
                event.bot,
                event.event,
                self.pending,
                self.dropped,
            )
            return False
        self.pending += 1
        self._nursery.start_soon(self._run, tuple(argv), event)
        return True

    async def _run(self, argv: tuple[str, ...], event: HookEvent) -> None:
        try:
            async with self._limiter:
                await self._run_one(argv, event)
        finally:
            self.pending -= 1

    async def _run_one(self, argv: tuple[str, ...], event: HookEvent) -> None:
        what = f"{event.bot} {event.event} hook {argv[0]!r}"
        env = {**os.environ, **event.environment()}
        output = bytearray()
        process: trio.Process | None = None
        with trio.move_on_after(self.timeout) as scope:
            async with trio.open_nursery() as nursery:
                try:
                    group = partial(spawn_group, merge_stderr=True, deliver_cancel=_deliver_kill)
                    process = await nursery.start(group, self.spawn, argv, self.cwd, env)
                except OSError as exc:
                    LOGGER.warning("%s could not start: %s", what, exc.strerror or exc)
                    return
                await _read_limited(process.stdout, output)
        assert process is not None
        text = output.decode(errors="replace").strip()
        shown = f": {text[:OUTPUT_LIMIT]}" if text else ""
        if scope.cancelled_caught:
            _kill_group(process)  # the hook exited but left members holding the pipe
            LOGGER.warning("%s timed out after %gs; killed%s", what, self.timeout, shown)
        elif process.returncode != 0:
            LOGGER.warning("%s failed with exit code %s%s", what, process.returncode, shown)
        else:
            LOGGER.info("%s done%s", what, shown)


async def _read_limited(stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
    """Read *stream* to EOF, keeping its first OUTPUT_LIMIT bytes."""
    if stream is None:
        return
    async with stream:
        while data := await stream.receive_some(65536):
            if len(into) < OUTPUT_LIMIT:
                into.extend(data[: OUTPUT_LIMIT - len(into)])
