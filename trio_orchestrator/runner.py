"""One bot's life: spawn, pump output, stop, pause, and restart with a delay.

A :class:`BotRunner` knows nothing of SQLite, git or other bots. It reports every
transition through the ``on_transition`` callback and waits for it, so the supervisor can
commit the transition before anything else happens. The lifecycle task :meth:`BotRunner.run`
lives from a user start until the bot is stopped, exits for good, or fails.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import os
import signal
import subprocess
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_orchestrator.errors import ActionFailed
from trio_orchestrator.output import LineSplitter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio_orchestrator.config import BotConfig

__all__ = [
    "BotRunner",
    "BotState",
    "OutputBatch",
    "Transition",
    "kill_orphan_group",
    "proc_stat_fields",
    "process_start_ticks",
    "should_restart",
    "tagged_group_leaders",
]

LOGGER = logging.getLogger(__name__)

# A pipe of 256 KiB and reads as large: a chatty bot costs a quarter of the wake-ups and
# reads that the default 64 KiB pipe would.
READ_SIZE = 256 * 1024
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, which Python names only from 3.10 on Linux
# After the bot's main process is gone, how long its output pipes may stay open (held by
# a grandchild that left the process group) before we stop reading them.
PUMP_GRACE_SECONDS = 2.0
GROUP_POLL_SECONDS = 0.05


class BotState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    EXITED = "exited"
    FAILED = "failed"

    @property
    def is_up(self) -> bool:
        """The bot has (or is about to have) a process the user would call running."""
        return self in (BotState.STARTING, BotState.RUNNING, BotState.PAUSED, BotState.STOPPING)


@attrs.frozen
class Transition:
    state: BotState
    pid: int | None = None
    exit_code: int | None = None
    message: str = ""


@attrs.frozen
class OutputBatch:
    """Complete lines one bot wrote to one stream, as they came out of one read."""

    name: str
    color: str
    stream: str  # "stdout" or "stderr"
    block: bytes  # the lines joined by b"\n", without the last newline

    @property
    def line_count(self) -> int:
        return self.block.count(b"\n") + 1


def should_restart(policy: str, exit_code: int) -> bool:
    """SPEC 4: on-failure restarts non-zero exits and deaths by signal (negative codes)."""
    if policy == "always":
        return True
    if policy == "on-failure":
        return exit_code != 0
    return False


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def what_ended(exit_code: int | None) -> str:
    return "could not start" if exit_code is None else describe_exit(exit_code)


def proc_stat_fields(pid: int | str) -> list[bytes] | None:
    """Fields 3 and on of /proc/PID/stat (state, ppid, pgrp, ...), or None if no process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ")".
    return data[data.rindex(b")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """The start time of *pid* in clock ticks since boot (/proc/PID/stat field 22).

    Together with the pid it identifies a process: a pid reused by another process has a
    different start time. None if there is no such process.
    """
    fields = proc_stat_fields(pid)
    return None if fields is None else int(fields[19])


def _group_alive(pgid: int, killpg: Callable[[int, int], None]) -> bool:
    try:
        killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also finds zombies: members reparented to init stay zombies until init
    # reaps them (a second or more on some systems), but they have exited.
    return killpg is not os.killpg or _live_member(pgid)


def _live_member(pgid: int) -> bool:
    """Whether group *pgid* has a member that is not a zombie (True if /proc is missing)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        fields = proc_stat_fields(entry) if entry.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _signal_group(pgid: int, sig: int, killpg: Callable[[int, int], None]) -> bool:
    """Send *sig* to the group; False if the group no longer exists."""
    try:
        killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


async def terminate_group(
    pgid: int, grace: float, killpg: Callable[[int, int], None] = os.killpg
) -> bool:
    """SIGCONT + SIGTERM the process group, wait up to *grace* seconds, then SIGKILL it.

    Returns True if SIGKILL was needed. Polls because the group's members are not our
    children (only the leader was), so there is nothing to ``wait()`` on.

    **Cancellation:** cancelling leaves the group as it is at that moment.
    """
    if not _signal_group(pgid, signal.SIGCONT, killpg):
        return False
    _signal_group(pgid, signal.SIGTERM, killpg)
    with trio.move_on_after(grace):
        await _wait_group_gone(pgid, killpg)
        return False
    _signal_group(pgid, signal.SIGKILL, killpg)
    with trio.move_on_after(1.0):
        await _wait_group_gone(pgid, killpg)
    return True


async def _wait_group_gone(pgid: int, killpg: Callable[[int, int], None]) -> None:
    # Polling: the group's members other than the leader are not our children, so
    # there is no exit event to wait for.
    while _group_alive(pgid, killpg):  # noqa: ASYNC110
        await trio.sleep(GROUP_POLL_SECONDS)


async def kill_orphan_group(pid: int, start_ticks: int | None, grace: float) -> bool:
    """End a bot left running by a dead manager, if *pid* is still that bot.

    The identity check (same start time, and still leading its own process group) comes
    before any signal, so a pid reused by an unrelated process is never touched.

    **Cancellation:** as :func:`terminate_group`.
    """
    if start_ticks is None or process_start_ticks(pid) != start_ticks:
        return False
    try:
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    await terminate_group(pid, grace)
    return True


def tagged_group_leaders(tag: str) -> list[tuple[int, int | None, str]]:
    """Processes whose environment holds *tag* (``NAME=value``) and lead their own group.

    Returns ``(pid, start_ticks, bot_name)`` for each, ``bot_name`` from the
    ``TRIO_ORCH_BOT`` variable. A manager tags its bots (``BotRunner.extra_env``), so this
    finds the bots of a dead manager even when it died before recording their pids.
    Processes of other users (unreadable environment) are never reported.
    """
    needle = tag.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
            if needle not in variables or os.getpgid(pid) != pid:
                continue
        except OSError:  # gone, or not ours
            continue
        name = next(
            (v[len(b"TRIO_ORCH_BOT=") :] for v in variables if v.startswith(b"TRIO_ORCH_BOT=")),
            b"?",
        )
        found.append((pid, process_start_ticks(pid), name.decode(errors="replace")))
    return found


@attrs.define(eq=False)
class BotRunner:
    """Runs one bot. Create one per configured bot; it outlives individual processes.

    Args:
        bot: the bot's configuration.
        on_transition: awaited with every state change before the runner goes on.
        output: where the pumps send :class:`OutputBatch` items (a bounded channel).
        before_start: awaited before every start (the git update); must not raise.
        spawn: ``trio.run_process`` or a fake with the same signature, for tests.
        killpg: ``os.killpg`` or a fake, for tests.
        extra_env: variables added to the bot's environment (the supervisor's tags).
    """

    bot: BotConfig
    on_transition: Callable[[BotRunner, Transition], Awaitable[None]]
    output: trio.MemorySendChannel[OutputBatch]
    before_start: Callable[[BotConfig], Awaitable[None]] | None = None
    spawn: Callable[..., Awaitable[Any]] = trio.run_process
    killpg: Callable[[int, int], None] = os.killpg
    extra_env: tuple[tuple[str, str], ...] = ()

    state: BotState = BotState.STOPPED
    pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    started_at: float | None = None  # wall clock, for uptime
    _consecutive: int = 0
    _stop_requested: bool = False
    _done: trio.Event | None = None
    _update_scope: trio.CancelScope | None = None
    _process_scope: trio.CancelScope | None = None
    _backoff_scope: trio.CancelScope | None = None

    @property
    def name(self) -> str:
        return self.bot.name

    @property
    def active(self) -> bool:
        """A lifecycle task is running (the bot is up, starting, stopping or in backoff)."""
        return self._done is not None and not self._done.is_set()

    async def _report(self, state: BotState, **details: Any) -> None:
        self.state = state
        await self.on_transition(self, Transition(state, **details))

    async def run(self, *, task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED):
        """Start the bot and keep it up under its restart policy (a user start).

        ``task_status.started(pid)`` is called once the first process runs, or with
        ``None`` if it could not be spawned (the bot is then ``failed``).

        **Cancellation:** cancelling this task abandons the bot's process without
        stopping it; use :meth:`stop` to stop it.
        """
        self._done = trio.Event()
        self._stop_requested = False
        self.restarts = 0
        self._consecutive = 0
        try:
            await self._supervise(task_status)
        finally:
            self._done.set()

    async def _supervise(self, task_status: trio.TaskStatus[int | None]) -> None:
        policy = self.bot.restart
        while True:
            exit_code = await self._run_once(task_status)
            task_status = trio.TASK_STATUS_IGNORED
            if self._stop_requested:
                await self._report(BotState.STOPPED, exit_code=exit_code, message="stopped")
                return
            if exit_code is None:  # could not spawn
                if self.restarts == 0 and self._consecutive == 0:
                    return
            elif not should_restart(policy, exit_code):
                await self._report(
                    BotState.EXITED,
                    exit_code=exit_code,
                    message=f"{describe_exit(exit_code)}; policy {policy!r}: not restarting",
                )
                return
            if self._consecutive >= self.bot.max_restart_attempts:
                await self._report(
                    BotState.FAILED,
                    exit_code=exit_code,
                    message=f"{what_ended(exit_code)}; gave up after {self._consecutive}"
                    " consecutive restarts",
                )
                return
            self._consecutive += 1
            self.restarts += 1
            delay = self.bot.restart_delay
            what = what_ended(exit_code)
            await self._report(
                BotState.BACKOFF,
                exit_code=exit_code,
                message=f"{what}; restart {self._consecutive}/{self.bot.max_restart_attempts}"
                f" in {delay:g}s",
            )
            with trio.CancelScope() as self._backoff_scope:
                if self._stop_requested:
                    self._backoff_scope.cancel()
                await trio.sleep(delay)
            self._backoff_scope = None
            if self._stop_requested:
                await self._report(BotState.STOPPED, message="stopped during restart delay")
                return

    async def _run_once(self, task_status: trio.TaskStatus[int | None]) -> int | None:
        """Run the bot's process once; return its exit code, None if it did not start."""
        await self._report(BotState.STARTING)
        if self.before_start is not None:
            with trio.CancelScope() as self._update_scope:
                if self._stop_requested:
                    self._update_scope.cancel()
                await self.before_start(self.bot)
            self._update_scope = None
            if self._stop_requested:
                task_status.started(None)
                return None
        self._process_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            try:
                process = await nursery.start(self._run_process)
            except OSError as exc:
                message = f"cannot start: {exc.strerror or exc}"
                if self.restarts == 0 and self._consecutive == 0:
                    await self._report(BotState.FAILED, message=message)
                else:
                    LOGGER.warning("%s: %s", self.name, message)
                task_status.started(None)
                return None
            self.pid = process.pid
            self.started_at = time.time()
            started = trio.current_time()
            await self._report(BotState.RUNNING, pid=process.pid)
            task_status.started(process.pid)
            if self._stop_requested:
                self._process_scope.cancel()
            pump_scopes = (trio.CancelScope(), trio.CancelScope())
            nursery.start_soon(self._pump, process.stdout, "stdout", pump_scopes[0])
            nursery.start_soon(self._pump, process.stderr, "stderr", pump_scopes[1])
            await process.wait()
            # Leftovers of the bot's group (grandchildren) go with it, whatever ended it.
            await terminate_group(process.pid, self.bot.stop_timeout, self.killpg)
            for scope in pump_scopes:
                scope.deadline = trio.current_time() + PUMP_GRACE_SECONDS
        self._process_scope = None
        self.pid = None
        if trio.current_time() - started >= self.bot.healthy_uptime:
            self._consecutive = 0
        self.last_exit_code = process.returncode
        return process.returncode

    async def _run_process(self, *, task_status: trio.TaskStatus[trio.Process]) -> None:
        env = {**os.environ, **dict(self.bot.env), **dict(self.extra_env), "PYTHONUNBUFFERED": "1"}
        with self._process_scope:
            await self.spawn(
                self.bot.argv,
                cwd=self.bot.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                start_new_session=True,
                deliver_cancel=self._deliver_cancel,
                task_status=task_status,
            )

    async def _deliver_cancel(self, process: trio.Process) -> None:
        """Stop = SIGCONT + SIGTERM to the group, ``stop_timeout``, SIGKILL to the group.

        SIGCONT first: a paused (SIGSTOPped) bot cannot act on SIGTERM. No polling here:
        ``run_process`` cancels this as soon as the bot is reaped, and members of the
        group that outlive it are ended by ``_run_once``.
        """
        pgid = process.pid
        _signal_group(pgid, signal.SIGCONT, self.killpg)
        _signal_group(pgid, signal.SIGTERM, self.killpg)
        await trio.sleep(self.bot.stop_timeout)
        _signal_group(pgid, signal.SIGKILL, self.killpg)
        LOGGER.warning(
            "%s did not exit %gs after SIGTERM; sent SIGKILL", self.name, self.bot.stop_timeout
        )

    async def _pump(
        self, stream: trio.abc.ReceiveStream, stream_name: str, scope: trio.CancelScope
    ) -> None:
        """Send the stream's lines to the output channel until EOF or *scope* ends."""
        with contextlib.suppress(OSError, AttributeError):  # a fake stream, or a capped size
            fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, READ_SIZE)
        splitter = LineSplitter()
        send = partial(OutputBatch, self.name, self.bot.color, stream_name)
        with scope:
            async with stream:
                while data := await stream.receive_some(READ_SIZE):
                    if (block := splitter.feed(data)) is not None:
                        await self.output.send(send(block))
                if (block := splitter.flush()) is not None:
                    await self.output.send(send(block))

    async def stop(self) -> None:
        """Stop the bot and wait until its process group is gone.

        Raises:
            ActionFailed: the bot is not running.

        **Cancellation:** the stop goes on in the lifecycle task; only the wait is cancelled.
        """
        if not self.active:
            raise ActionFailed(f"{self.name} is not running (state {self.state})")
        assert self._done is not None
        if not self._stop_requested:
            self._stop_requested = True
            # No pid yet: the process is being spawned. Cancelling run_process now would
            # end it before task_status.started() (a RuntimeError out of nursery.start);
            # _run_once cancels the scope itself as soon as the pid is known.
            process_scope = self._process_scope if self.pid is not None else None
            for scope in (self._update_scope, process_scope, self._backoff_scope):
                if scope is not None:
                    scope.cancel()
            if self.pid is not None:
                await self._report(BotState.STOPPING, pid=self.pid)
        await self._done.wait()

    async def pause(self) -> None:
        """SIGSTOP the bot's process group. Raises: ActionFailed if it is not running."""
        if self.state is not BotState.RUNNING or self.pid is None:
            raise ActionFailed(f"{self.name} is not running (state {self.state})")
        if not _signal_group(self.pid, signal.SIGSTOP, self.killpg):
            raise ActionFailed(f"{self.name} exited before it could be paused")
        await self._report(BotState.PAUSED, pid=self.pid)

    async def resume(self) -> None:
        """SIGCONT the bot's process group. Raises: ActionFailed if it is not paused."""
        if self.state is not BotState.PAUSED or self.pid is None:
            raise ActionFailed(f"{self.name} is not paused (state {self.state})")
        _signal_group(self.pid, signal.SIGCONT, self.killpg)
        await self._report(BotState.RUNNING, pid=self.pid)

    def kill_now(self) -> None:
        """SIGKILL the bot's group at once (second Ctrl-C); the lifecycle task then ends."""
        self._stop_requested = True
        if self.pid is not None:
            _signal_group(self.pid, signal.SIGKILL, self.killpg)
        for scope in (self._update_scope, self._backoff_scope):
            if scope is not None:
                scope.cancel()
