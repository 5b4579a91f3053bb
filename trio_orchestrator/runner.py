"""One bot's life: spawn, pump output, stop, pause, and restart with a delay.

A :class:`BotRunner` knows nothing of SQLite, git or other bots. It reports every
transition through the ``on_transition`` callback and waits for it, so the supervisor can
commit the transition before anything else happens.

A user start begins a :class:`Run`: the lifecycle task :meth:`BotRunner.run` hands it out
through ``task_status.started()`` and keeps the bot up under its restart policy until the
bot exits for good, fails, or the run is stopped. Stopping is cancelling the run's one
cancel scope with a reason (:meth:`Run.stop`); ``trio.run_process`` then delivers the stop
to the process group, shielded, and the runner reports ``stopped`` with that reason.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_orchestrator import watchdog
from trio_orchestrator.backoff import RestartBudget
from trio_orchestrator.envfile import EnvFileError, read_env_file
from trio_orchestrator.errors import ActionFailed
from trio_orchestrator.fdlimit import SPARE_FDS, START_FDS, TIGHT_FDS, free_fds
from trio_orchestrator.output import LineSplitter
from trio_orchestrator.pipereader import BotPipes
from trio_orchestrator.procfs import group_has_live_member
from trio_orchestrator.units import signal_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from pathlib import Path

    from trio_orchestrator.config import BotConfig

__all__ = [
    "BotRunner",
    "BotState",
    "Run",
    "StopReason",
    "Transition",
    "describe_exit",
    "should_restart",
    "spawn_group",
    "terminate_group",
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
# Spawn failures that say the machine is short of something (fds, processes, memory) for
# now: they go through backoff like a crash instead of failing the bot at once.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM}
# Starts while descriptors are short, one at a time (one manager per process).
_TIGHT_STARTS = trio.Lock()
# After SIGKILL, how long we wait for the group to disappear before giving up on it.
SIGKILL_WAIT_SECONDS = 1.0


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


class StopReason(enum.StrEnum):
    """Why a run or a process was ended by the manager rather than by itself."""

    USER = "user"
    SHUTDOWN = "shutdown"
    RELOAD = "reload"
    UPDATE = "update"
    HUNG = "hung"
    MEMORY = "memory"

    @property
    def words(self) -> str:
        return _STOP_WORDS[self]


_STOP_WORDS = {
    StopReason.USER: "stopped by user",
    StopReason.SHUTDOWN: "stopped by the manager's shutdown",
    StopReason.RELOAD: "stopped by a config reload",
    StopReason.UPDATE: "stopped for a git update",
    StopReason.HUNG: "hung",
    StopReason.MEMORY: "memory",  # as "hung": the reason is its first word
}


@attrs.frozen
class Transition:
    """A state change, with the exit that caused it and a reason in words."""

    state: BotState
    pid: int | None = None
    exit_code: int | None = None
    reason: str = ""  # why the process ended, e.g. "exited with code 3", "stopped by user"
    message: str = ""  # the whole log line after the bot's name
    stop_reason: StopReason | None = None  # set when the manager ended the run


def should_restart(policy: str, exit_code: int) -> bool:
    """SPEC 4: on-failure restarts non-zero exits and deaths by signal (negative codes)."""
    if policy == "always":
        return True
    if policy == "on-failure":
        return exit_code != 0
    return False


def describe_exit(code: int | None) -> str:
    """A process's end in words: "exited with code 3", "killed by SIGKILL"."""
    if code is None:
        return "could not start"
    if code < 0:
        return f"killed by {signal_name(-code)}"
    return f"exited with code {code}"


@attrs.define(eq=False)
class Run:
    """One user start of a bot, until it is stopped, exits for good, or fails.

    Handed out by :meth:`BotRunner.run` through ``task_status.started()``. Its one cancel
    scope covers the git update, the process and the restart delays: :meth:`stop` cancels
    it, and ``trio.run_process`` delivers the stop to the process (shielded) before the
    runner reports ``stopped``.
    """

    scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    done: trio.Event = attrs.field(init=False, factory=trio.Event)
    # Set once the first process is running (``pid`` set) or could not be started.
    first_start: trio.Event = attrs.field(init=False, factory=trio.Event)
    pid: int | None = attrs.field(init=False, default=None)
    reason: StopReason | None = attrs.field(init=False, default=None)

    def stop(self, reason: StopReason) -> None:
        """Cancel the run; the first reason given is the one recorded."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()

    async def wait(self) -> None:
        await self.done.wait()


def _signal_group(pgid: int, sig: int, killpg: Callable[[int, int], None]) -> bool:
    """Send *sig* to the group; False if the group no longer exists."""
    try:
        killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


async def _group_alive(pgid: int, killpg: Callable[[int, int], None]) -> bool:
    try:
        killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if killpg is not os.killpg:  # a fake group in tests
        return True
    return await trio.to_thread.run_sync(group_has_live_member, pgid)


async def _wait_group_gone(pgid: int, killpg: Callable[[int, int], None]) -> None:
    # Polling: the group's members other than the leader are not our children, so
    # there is no exit event to wait for.
    while await _group_alive(pgid, killpg):  # noqa: ASYNC110
        await trio.sleep(GROUP_POLL_SECONDS)


async def terminate_group(
    pgid: int,
    grace: float,
    killpg: Callable[[int, int], None] = os.killpg,
    stop_signal: int = signal.SIGTERM,
) -> bool:
    """SIGCONT + *stop_signal* to the process group, wait up to *grace* s, then SIGKILL.

    Returns True if SIGKILL was needed.

    **Cancellation:** cancelling leaves the group as it is at that moment.
    """
    if not _signal_group(pgid, signal.SIGCONT, killpg):
        return False
    _signal_group(pgid, stop_signal, killpg)
    with trio.move_on_after(grace):
        await _wait_group_gone(pgid, killpg)
        return False
    _signal_group(pgid, signal.SIGKILL, killpg)
    with trio.move_on_after(SIGKILL_WAIT_SECONDS):
        await _wait_group_gone(pgid, killpg)
    return True


async def spawn_group(
    spawn: Callable[..., Awaitable[Any]],
    argv: Sequence[str],
    cwd: Path | None,
    env: Mapping[str, str],
    *,
    merge_stderr: bool = False,
    deliver_cancel: Callable[[trio.Process], Awaitable[None]],
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run *argv* as the manager runs every bot and hook, with *spawn*
    (``trio.run_process`` or a wrapper that registers the child).

    The child leads a new session and process group, so that a stop can signal everything
    it started; it gets no stdin; its output is piped (stderr into stdout with
    *merge_stderr*); its exit status is for the caller to read, never an exception.
    """
    await spawn(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        check=False,
        start_new_session=True,
        deliver_cancel=deliver_cancel,
        task_status=task_status,
    )


@contextlib.asynccontextmanager
async def _fd_gate():
    """Let a start through unless it would leave the manager short of descriptors.

    With plenty free (the usual case) starts run in parallel. Below TIGHT_FDS free they go
    one at a time, and only while SPARE_FDS would stay free after the start's peak, so the
    control socket, the db and the log files keep working.

    Raises:
        OSError: EMFILE, as a start that ran out of descriptors would (backoff follows).
    """
    free = await trio.to_thread.run_sync(free_fds)
    if free is None or free >= TIGHT_FDS:
        yield
        return
    async with _TIGHT_STARTS:
        free = free_fds()  # a low limit: few descriptors to count
        if free is not None and free < SPARE_FDS + START_FDS:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        yield


def _pipe_reader(stream: trio.abc.ReceiveStream, pipes: BotPipes) -> Callable[[], Awaitable[bytes]]:
    """Reads of up to READ_SIZE from a bot's pipe (see :mod:`~trio_orchestrator.pipereader`);
    the stream still owns (and closes) the descriptor."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
    except AttributeError:  # a fake stream in tests
        return partial(stream.receive_some, READ_SIZE)
    return pipes.reader(fd, READ_SIZE).read


def _shared_environ() -> dict[str, str]:
    """A copy of ``os.environ`` whose strings every bot shares.

    ``os.environ`` decodes new strings at each read, and ``run_process`` keeps the
    environment it was given until the process exits: 100 bots would hold 100 copies of
    every variable (~4 KiB a bot with a small environment).
    """
    return {sys.intern(name): sys.intern(value) for name, value in os.environ.items()}


@attrs.define(eq=False)
class _Pumps:
    """What the two output pumps of one process share: their scopes, shielded (a stop must not
    lose output) until the process has exited, then given PUMP_GRACE_SECONDS to drain;
    and the pipes, whose readers hold nothing back once the process has exited."""

    pipes: BotPipes = attrs.field(factory=BotPipes)
    scopes: tuple[trio.CancelScope, trio.CancelScope] = attrs.field(
        factory=lambda: (trio.CancelScope(shield=True), trio.CancelScope(shield=True))
    )

    def drain_within(self, seconds: float) -> None:
        for scope in self.scopes:
            scope.deadline = trio.current_time() + seconds


@attrs.define(eq=False)
class BotRunner:
    """Runs one bot. Create one per configured bot; it outlives individual runs.

    Args:
        bot: the bot's configuration.
        on_transition: awaited with every state change before the runner goes on.
        output: gives each pump the writer of its stream, ``output(bot, "stdout")``
            (``OutputSink.stream_writer``); a writer takes a block of complete lines
            joined by ``\n`` and returns once it is written (or queued, within bounds).
        before_start: awaited before every start (the git update); must not raise.
        spawn: ``trio.run_process`` or a fake with the same signature, for tests.
        killpg: ``os.killpg`` or a fake, for tests.
        extra_env: variables added to the bot's environment (the supervisor's tags).
        heartbeat_file: the file the watchdog watches (``heartbeat_timeout``); the runner
            touches it at each start.
        after_exit: awaited after each process and its group are gone (the supervisor
            ends the bot's escaped descendants there); must not raise.
    """

    bot: BotConfig
    on_transition: Callable[[BotRunner, Transition], Awaitable[None]]
    output: Callable[[BotConfig, str], Callable[[bytes], Awaitable[None]]]
    before_start: Callable[[BotConfig], Awaitable[None]] | None = None
    spawn: Callable[..., Awaitable[Any]] = trio.run_process
    killpg: Callable[[int, int], None] = os.killpg
    extra_env: tuple[tuple[str, str], ...] = ()
    heartbeat_file: Path | None = None
    after_exit: Callable[[BotConfig], Awaitable[None]] | None = None
    watch_interval: float = watchdog.CHECK_INTERVAL

    state: BotState = attrs.field(init=False, default=BotState.STOPPED)
    pid: int | None = attrs.field(init=False, default=None)
    restarts: int = attrs.field(init=False, default=0)
    last_exit_code: int | None = attrs.field(init=False, default=None)
    started_at: float | None = attrs.field(init=False, default=None)  # wall clock, for uptime
    # Wall-clock time of the next automatic restart, while in backoff.
    next_restart: float | None = attrs.field(init=False, default=None)
    run_handle: Run | None = attrs.field(init=False, default=None)
    _budget: RestartBudget | None = attrs.field(init=False, default=None)
    _started_clock: float = attrs.field(init=False, default=0.0)  # trio clock, for health
    _spawn_error: str = attrs.field(init=False, default="")
    _spawn_short_of_resources: bool = attrs.field(init=False, default=False)
    # The current process's own scope: cancelled to restart it as a failure (hung, memory).
    _process_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _process_reason: StopReason | None = attrs.field(init=False, default=None)
    _process_detail: str = attrs.field(init=False, default="")
    # Set unless the user paused the bot: a restart delay waits for it (issue 13).
    _unpaused: trio.Event = attrs.field(init=False, factory=trio.Event)
    _watchdog: watchdog.Watchdog | None = attrs.field(init=False, default=None)

    @property
    def name(self) -> str:
        return self.bot.name

    @property
    def active(self) -> bool:
        """A run is in progress (the bot is up, starting, stopping or in backoff)."""
        return self.run_handle is not None and not self.run_handle.done.is_set()

    async def _report(self, transition: Transition) -> None:
        """Record the transition and wait for the supervisor to commit it.

        Shielded: a transition that happened is reported even while the run is being
        cancelled, so the db never misses a state the bot went through.
        """
        self.state = transition.state
        if transition.state not in (BotState.BACKOFF, BotState.FAILED):
            self.next_restart = None
        with trio.CancelScope(shield=True):
            await self.on_transition(self, transition)

    async def run(self, *, task_status: trio.TaskStatus[Run] = trio.TASK_STATUS_IGNORED):
        """Start the bot and keep it up under its restart policy (a user start).

        ``task_status.started(run)`` hands out the :class:`Run` at once; its
        ``first_start`` event is set when the first process runs (``run.pid``) or could
        not be spawned (``run.pid`` is None and the bot is ``failed``).

        **Cancellation:** stop the bot with ``run.stop(reason)``, which ends the process
        group and reports ``stopped``. Cancelling this task from outside does the same
        (``trio.run_process`` delivers the stop, shielded) but records no reason.
        """
        run = self.run_handle = Run()
        self.restarts = 0
        self._budget = RestartBudget.for_bot(self.bot)
        self._unpaused.set()
        task_status.started(run)
        final = None
        try:
            with run.scope:
                final = await self._supervise(run)
        finally:
            if final is None:  # stopped: by run.stop(), or by the manager's root scope
                reason = run.reason or StopReason.SHUTDOWN
                final = Transition(
                    BotState.STOPPED,
                    exit_code=self.last_exit_code,
                    reason=reason.words,
                    message=reason.words,
                    stop_reason=reason,
                )
            await self._report(final)
            run.first_start.set()
            run.done.set()

    async def _supervise(self, run: Run) -> Transition:
        """Run processes until the policy says stop; return the final transition."""
        bot = self.bot
        budget = self._budget
        assert budget is not None
        while True:
            exit_code = await self._run_once(run)
            reason = self._end_reason(exit_code)
            now = trio.current_time()
            first_attempt = self.restarts == 0 and budget.count(now) == 0
            if exit_code is None and first_attempt and not self._spawn_short_of_resources:
                return Transition(BotState.FAILED, reason=reason, message=reason)
            # A process we ended (hung, over memory) failed, whatever its exit code says.
            ended_by_us = self._process_reason is not None
            if (
                exit_code is not None
                and not ended_by_us
                and not should_restart(bot.restart, exit_code)
            ):
                message = f"{reason}; policy {str(bot.restart)!r}: not restarting"
                return Transition(BotState.EXITED, None, exit_code, reason, message)
            if budget.exhausted(now):
                message = f"{reason}; {budget.gave_up(now)}"
                failed = Transition(BotState.FAILED, None, exit_code, reason, message)
                if bot.failed_cooldown is None:
                    self.next_restart = None
                    return failed
                await self._cool_down(failed, bot.failed_cooldown)
                continue
            delay = budget.record(now)
            self.restarts += 1
            if exit_code is None and self._spawn_short_of_resources:
                # Out of fds or processes: bots failing together retry apart, so the
                # ones the limit allows do get to run.
                delay *= random.uniform(0.5, 1.5)
            message = f"{reason}; restart {budget.describe(now)} in {delay:g}s"
            if not self._unpaused.is_set():
                message += " after resume (paused)"
            self.next_restart = time.time() + delay
            await self._report(Transition(BotState.BACKOFF, None, exit_code, reason, message))
            run.first_start.set()
            await self._unpaused.wait()  # while paused, no restart timer runs
            await trio.sleep(delay)

    async def _cool_down(self, failed: Transition, cooldown: float) -> None:
        """``failed``, then a fresh start after *cooldown* s (the run goes on, so a stop
        cancels the wait like any restart delay)."""
        message = f"{failed.message}; retrying in {cooldown:g}s (failed_cooldown)"
        self.next_restart = time.time() + cooldown
        await self._report(attrs.evolve(failed, message=message))
        await trio.sleep(cooldown)
        assert self._budget is not None
        self._budget.reset()
        self.restarts += 1

    def _end_reason(self, exit_code: int | None) -> str:
        if exit_code is None:
            return self._spawn_error
        if self._process_reason is not None:
            detail = f": {self._process_detail}" if self._process_detail else ""
            return f"{self._process_reason.words}{detail} ({describe_exit(exit_code)})"
        return describe_exit(exit_code)

    async def _run_once(self, run: Run) -> int | None:
        """Run the bot's process once; return its exit code, None if it did not start.

        **Cancellation:** a stop of the run ends the process through ``deliver_cancel``
        and raises ``Cancelled`` once it is reaped and its output read.
        """
        self._process_reason = None
        self._process_detail = ""
        await self._report(Transition(BotState.STARTING))
        if self.before_start is not None:
            await self.before_start(self.bot)
        await self._prepare_watchdog()
        async with trio.open_nursery() as nursery:
            try:
                file_env = await self._read_env_file()
                # Shielded: a stop that arrives during the spawn waits for the pid, then
                # ends the process; cancelling the spawn itself could leave it unkillable.
                # Fakes (tests, with a fake killpg) open no descriptors: no gate, no thread
                # trip (it would let autojump_clock jump).
                gate = _fd_gate() if self.killpg is os.killpg else contextlib.nullcontext()
                with trio.CancelScope(shield=True):
                    async with gate:
                        process = await nursery.start(self._run_process, file_env)
            except (OSError, EnvFileError) as exc:
                if isinstance(exc, EnvFileError):
                    self._spawn_error = str(exc)  # names the file and why, never a value
                else:
                    self._spawn_error = f"cannot start: {(exc.strerror or str(exc)).lower()}"
                self._spawn_short_of_resources = getattr(exc, "errno", None) in _RESOURCE_ERRNOS
                if self.restarts:
                    LOGGER.warning("%s: %s", self.name, self._spawn_error)
                if not self._spawn_short_of_resources:
                    run.first_start.set()  # else once the backoff (and its reason) is recorded
                return None
            pumps = _Pumps()
            nursery.start_soon(self._pump, process.stdout, "stdout", pumps.scopes[0], pumps.pipes)
            nursery.start_soon(self._pump, process.stderr, "stderr", pumps.scopes[1], pumps.pipes)
            watching = trio.CancelScope()
            try:
                await self._running(run, process)
                if self._watchdog is not None:
                    nursery.start_soon(self._watch, process.pid, self._watchdog, watching)
                await process.wait()
            finally:
                watching.cancel()
                await self._after_exit(run, process, pumps)
        return process.returncode

    async def _prepare_watchdog(self) -> None:
        """A watchdog for the next process, if the bot has a heartbeat or memory limit;
        the heartbeat file is touched now, so the grace period starts with the process."""
        self._watchdog = watchdog.Watchdog.for_bot(self.bot, self.heartbeat_file)
        if self._watchdog is None:
            return
        if self._watchdog.heartbeat_timeout is not None and self.heartbeat_file is not None:
            try:
                await trio.to_thread.run_sync(watchdog.touch, self.heartbeat_file)
            except OSError as exc:
                LOGGER.warning("%s: cannot create heartbeat file: %s", self.name, exc)
        self._watchdog.restart_clock()

    async def _watch(self, pgid: int, dog: watchdog.Watchdog, scope: trio.CancelScope) -> None:
        """Every ``watch_interval`` s, end the process if it is hung or over its memory
        limit; a paused bot is not checked (its grace restarts on resume).

        **Cancellation:** cancelled through *scope* when the process has ended.
        """
        with scope:
            while True:
                await trio.sleep(self.watch_interval)
                if self.state is not BotState.RUNNING:
                    continue
                verdict = await trio.to_thread.run_sync(dog.check, pgid)
                if verdict is not None and self.state is BotState.RUNNING:
                    LOGGER.warning("%s %s: restarting it", self.name, verdict.detail)
                    self.end_process(StopReason(verdict.reason), verdict.detail)
                    return

    async def _running(self, run: Run, process: trio.Process) -> None:
        self.pid = process.pid
        self.started_at = time.time()
        self._started_clock = trio.current_time()
        await self._report(Transition(BotState.RUNNING, pid=process.pid))
        if run.pid is None:
            run.pid = process.pid
        run.first_start.set()

    async def _after_exit(self, run: Run, process: trio.Process, pumps: _Pumps) -> None:
        """Wait for the process (being stopped, if the run was cancelled), end what is
        left of its group, and give the pumps a grace period to drain the pipes."""
        with trio.CancelScope(shield=True):
            if process.returncode is None and run.scope.cancel_called:
                await self._report(Transition(BotState.STOPPING, pid=process.pid))
            await process.wait()
            pumps.pipes.process_exited()
            # Leftovers of the bot's group (grandchildren) go with it, whatever ended it.
            await terminate_group(
                process.pid, self.bot.stop_timeout, self.killpg, self.bot.stop_signal
            )
            pumps.drain_within(PUMP_GRACE_SECONDS)
            if self.after_exit is not None:
                await self.after_exit(self.bot)
        self.pid = None
        self._process_scope = None
        self.last_exit_code = process.returncode
        if trio.current_time() - self._started_clock >= self.bot.healthy_uptime:
            assert self._budget is not None
            self._budget.healthy_run()

    async def _argv(self) -> list[str]:
        """The argv to spawn: a command's first word resolved now (directory, then PATH).

        Raises:
            FileNotFoundError: a command whose program is nowhere to be found.
        """
        argv = self.bot.argv
        if self.bot.is_python:
            return argv
        program = await trio.to_thread.run_sync(self.bot.executable)
        if program is None:
            where = self.bot.directory if "/" in argv[0] else f"{self.bot.directory} or on PATH"
            raise FileNotFoundError(errno.ENOENT, f"executable {argv[0]!r} not found in {where}")
        return [program, *argv[1:]]

    async def _read_env_file(self) -> dict[str, str]:
        """The bot's env file, read afresh for every start (in a worker thread).

        Raises:
            EnvFileError: missing, unreadable or malformed; the message never holds a value.

        **Cancellation:** a stop during the read waits for the (short) read to end in
        its thread, then raises ``Cancelled``.
        """
        path = self.bot.env_file
        if path is None:
            return {}
        return await trio.to_thread.run_sync(read_env_file, path)

    async def _run_process(
        self, file_env: dict[str, str], *, task_status: trio.TaskStatus[trio.Process]
    ) -> None:
        # os.environ < env_file < env < the manager's tags. Never logged: it holds secrets.
        env = {
            **_shared_environ(),
            **file_env,
            **dict(self.bot.env),
            **dict(self.extra_env),
            "PYTHONUNBUFFERED": "1",
        }
        argv = await self._argv()
        with trio.CancelScope() as self._process_scope:
            await spawn_group(
                self.spawn,
                argv,
                self.bot.directory,
                env,
                deliver_cancel=self._deliver_cancel,
                task_status=task_status,
            )

    async def _deliver_cancel(self, process: trio.Process) -> None:
        """Stop = SIGCONT + stop signal to the group, ``stop_timeout``, SIGKILL to the group.

        SIGCONT first: a paused (SIGSTOPped) bot cannot act on SIGTERM. ``run_process``
        runs this shielded and cancels it as soon as the bot is reaped; members of the
        group that outlive the bot are ended by :meth:`_after_exit`.
        """
        pgid = process.pid
        _signal_group(pgid, signal.SIGCONT, self.killpg)
        _signal_group(pgid, self.bot.stop_signal, self.killpg)
        await trio.sleep(self.bot.stop_timeout)
        _signal_group(pgid, signal.SIGKILL, self.killpg)
        LOGGER.warning(
            "%s did not exit %gs after %s; sent SIGKILL",
            self.name,
            self.bot.stop_timeout,
            self.bot.stop_signal.name,
        )

    async def _pump(
        self,
        stream: trio.abc.ReceiveStream,
        stream_name: str,
        scope: trio.CancelScope,
        pipes: BotPipes,
    ) -> None:
        """Write the stream's lines through the output until EOF or *scope* ends."""
        with contextlib.suppress(OSError, AttributeError):  # a fake stream, or a capped size
            fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, READ_SIZE)
        splitter = LineSplitter()
        write = self.output(self.bot, stream_name)
        read = _pipe_reader(stream, pipes)
        with scope:
            async with stream:
                while data := await read():
                    if (block := splitter.feed(data)) is not None:
                        await write(block)
                if (block := splitter.flush()) is not None:
                    await write(block)

    async def stop(self, reason: StopReason = StopReason.USER) -> None:
        """Stop the bot and wait until its process group is gone.

        Raises:
            ActionFailed: the bot is not running.

        **Cancellation:** the stop goes on in the lifecycle task; only the wait is cancelled.
        """
        run = self.run_handle
        if run is None or run.done.is_set():
            raise ActionFailed(f"{self.name} is not running (state {self.state})")
        run.stop(reason)
        await run.wait()

    def end_process(self, reason: StopReason, detail: str = "") -> bool:
        """End the current process as a failure (hung, over memory); the policy decides
        whether it comes back. *detail* joins the reason in the exit record. Returns
        False if no process is running."""
        if self._process_scope is None or self.pid is None:
            return False
        self._process_reason = reason
        self._process_detail = detail
        self._process_scope.cancel()
        return True

    async def pause(self) -> None:
        """SIGSTOP the bot's process group. Raises: ActionFailed if it is not running."""
        if self.state is not BotState.RUNNING or self.pid is None:
            raise ActionFailed(f"{self.name} is not running (state {self.state})")
        if not _signal_group(self.pid, signal.SIGSTOP, self.killpg):
            raise ActionFailed(f"{self.name} exited before it could be paused")
        self._unpaused = trio.Event()
        await self._report(Transition(BotState.PAUSED, pid=self.pid))

    async def resume(self) -> None:
        """SIGCONT the bot's process group, or, if it died while paused, let its restart
        delay begin. Raises: ActionFailed if it is not paused."""
        if self.state is BotState.BACKOFF and not self._unpaused.is_set():
            self._unpaused.set()  # its process died while paused; the restart may go on
            return
        if self.state is not BotState.PAUSED or self.pid is None:
            raise ActionFailed(f"{self.name} is not paused (state {self.state})")
        _signal_group(self.pid, signal.SIGCONT, self.killpg)
        self._unpaused.set()
        if self._watchdog is not None:
            self._watchdog.restart_clock()
        await self._report(Transition(BotState.RUNNING, pid=self.pid))

    def kill_now(self) -> None:
        """SIGKILL the bot's group at once (second Ctrl-C) and end its run."""
        if self.pid is not None:
            _signal_group(self.pid, signal.SIGKILL, self.killpg)
        if self.run_handle is not None:
            self.run_handle.stop(StopReason.SHUTDOWN)
