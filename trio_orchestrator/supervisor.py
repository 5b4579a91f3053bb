"""The manager: one runner per bot under a root nursery, plus the tasks around them.

Task tree of ``trio-orch start_all``::

    run()
    ├── OutputSink.run            console + log files (outlives the bots)
    ├── StateWriter.run           group commits to SQLite (outlives the bots)
    └── root nursery
        ├── signal handler        SIGINT/SIGTERM: graceful shutdown; again: kill now
        ├── control socket        JSON-lines requests -> execute()
        ├── command file poller   lines -> execute()
        └── BotRunner.run x N     one per started bot

Only this module sees more than one bot, touches the database (through ``to_thread`` and
one writer task) and calls git (through ``to_thread``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trio_orchestrator import gitupdate
from trio_orchestrator.commandfile import CommandFile
from trio_orchestrator.commands import Action, Command
from trio_orchestrator.control import bind_control_socket, serve_control
from trio_orchestrator.errors import ActionFailed, OrchestratorError, StateError
from trio_orchestrator.output import LogFiles, Printer
from trio_orchestrator.runner import (
    BotRunner,
    BotState,
    Transition,
    describe_exit,
    kill_orphan_group,
    process_start_ticks,
    tagged_group_leaders,
)
from trio_orchestrator.sink import ConsoleLogHandler, OutputSink
from trio_orchestrator.state import (
    BotRecord,
    OwnerLock,
    StateStore,
    Write,
    now_iso,
    records_for,
)
from trio_orchestrator.views import Paths, bot_info

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from trio_orchestrator.config import BotConfig, Config

__all__ = ["Paths", "StateWriter", "Supervisor", "bot_info", "run_manager"]

LOGGER = logging.getLogger("trio_orchestrator")

_UP_STATES = {state.value for state in BotState if state.is_up} | {BotState.BACKOFF.value}
SHUTDOWN_ROUNDS = 3
# Set in every bot's environment to the db's path: how the next manager of this db finds
# bots whose pid a killed manager had not recorded yet.
DB_TAG_VARIABLE = "TRIO_ORCH_DB"


class StateWriter:
    """Commits writes in groups: everything queued while a commit runs goes in the next.

    Each caller of :meth:`commit` returns only once its write is durable, so a transition
    is committed before it is reported, yet 100 bots starting at once cost a handful of
    transactions, not 100.
    """

    def __init__(self, store: StateStore, limiter: trio.CapacityLimiter):
        self._store = store
        self._limiter = limiter
        self._queue: list[tuple[Write, trio.Event]] = []
        self._wakeup = trio.Event()
        self._closed = False

    def enqueue(self, write: Write) -> trio.Event:
        """Queue *write* now (keeps callers' order); the event is set once it is committed."""
        done = trio.Event()
        self._queue.append((write, done))
        self._wakeup.set()
        return done

    async def commit(self, write: Write) -> None:
        await self.enqueue(write).wait()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Commit until closed and drained. **Cancellation:** queued writes are lost."""
        task_status.started()
        while self._queue or not self._closed:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                await trio.to_thread.run_sync(
                    self._store.commit, [write for write, _ in batch], limiter=self._limiter
                )
            except StateError as exc:
                LOGGER.error("could not save state: %s", exc)
            for _, done in batch:
                done.set()


@attrs.define(eq=False)
class Supervisor:
    """Runs the configured bots and executes commands on them.

    Args:
        config: the parsed configuration.
        paths: where the db, command file and socket live.
        store: the opened state database.
        sink: where bot output goes.
        update: the git update, ``gitupdate.update_checkout`` or a fake for tests.
        spawn, killpg: passed to every runner (tests inject fakes).
    """

    config: Config
    paths: Paths
    store: StateStore
    sink: OutputSink
    update: Callable[..., gitupdate.UpdateResult] = gitupdate.update_checkout
    spawn: Callable[..., Any] = trio.run_process
    killpg: Callable[[int, int], None] = os.killpg

    records: dict[str, BotRecord] = attrs.Factory(dict)
    runners: dict[str, BotRunner] = attrs.Factory(dict)
    _locks: dict[str, trio.Lock] = attrs.Factory(dict)
    _limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    _writer: StateWriter | None = None
    _root: trio.Nursery | None = None
    _shutting_down: bool = False
    _preserve: set[str] = attrs.Factory(set)
    _messages: dict[str, str] = attrs.Factory(dict)
    # Bots that `update NAME` just updated and is restarting: their next start skips the
    # update that has just run (and keeps its outcome as the bot's last update).
    _freshly_updated: set[str] = attrs.Factory(set)

    def __attrs_post_init__(self) -> None:
        self._writer = StateWriter(self.store, self._limiter)
        for name, bot in self.config.bots.items():
            self.runners[name] = BotRunner(
                bot=bot,
                on_transition=self._on_transition,
                output=self.sink.send_channel,
                before_start=self._update_before_start if bot.updates_enabled else None,
                spawn=self.spawn,
                killpg=self.killpg,
                extra_env=(("TRIO_ORCH_BOT", name), (DB_TAG_VARIABLE, str(self.paths.db))),
            )
            self._locks[name] = trio.Lock()

    # ----- running -----

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Recover, restore, and supervise until a graceful shutdown completes.

        **Cancellation:** abandons the bots' processes without stopping them (they are
        found and ended by the next start, see :meth:`_recover_orphans`); use a signal or
        :meth:`shutdown` to stop.
        """
        assert self._writer is not None
        async with trio.open_nursery() as infrastructure:
            await infrastructure.start(self.sink.run)
            await infrastructure.start(self._writer.run)
            socket_bound = False  # never remove the socket of another manager
            try:
                async with trio.open_nursery() as root:
                    self._root = root
                    await root.start(self._handle_signals)
                    stored = await self._db(self.store.load_all)
                    await self._recover_orphans(stored)
                    listener = await bind_control_socket(self.paths.socket)
                    socket_bound = True
                    await root.start(serve_control, listener, self.execute)
                    commands = CommandFile(self.paths.commands, self._execute_from_file)
                    await root.start(commands.run, self.config.settings.command_poll_interval)
                    LOGGER.info(
                        "trio-orch manager running (pid %d, %d bots configured, socket %s)",
                        os.getpid(),
                        len(self.config.bots),
                        self.paths.socket,
                    )
                    root.start_soon(self._restore, stored)
                    task_status.started()
            finally:
                self._root = None
                if socket_bound:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.paths.socket)
                self._writer.close()
                self.sink.send_channel.close()

    async def _db(self, function: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    async def _recover_orphans(self, stored: dict[str, BotRecord]) -> None:
        """End bots that a killed manager left running, then clear their stale pids."""

        async def end(name: str, pid: int, start_ticks: int | None, why: str) -> None:
            bot = self.config.bots.get(name)
            grace = bot.stop_timeout if bot else self.config.settings.stop_timeout
            if await kill_orphan_group(pid, start_ticks, grace):
                LOGGER.warning("ended %s (pid %d), %s", name, pid, why)

        orphans = [record for record in stored.values() if record.pid is not None]
        # A manager killed between spawning a bot and committing its pid left a bot that
        # no record names: find it by the tag in its environment.
        tag = f"{DB_TAG_VARIABLE}={self.paths.db}"
        recorded = {record.pid for record in orphans}
        untracked = [
            (pid, start_ticks, name)
            for pid, start_ticks, name in await trio.to_thread.run_sync(tagged_group_leaders, tag)
            if pid not in recorded
        ]
        async with trio.open_nursery() as nursery:
            for record in orphans:
                why = "left running by a manager that did not shut down"
                nursery.start_soon(end, record.name, record.pid, record.pid_start_ticks, why)
            for pid, start_ticks, name in untracked:
                why = "started by a manager that died before recording it"
                nursery.start_soon(end, name, pid, start_ticks, why)
        writes = []
        self.records = records_for(self.config.bots, stored)
        for name, stale in self.records.items():
            if stale.pid is not None or stale.state in _UP_STATES:
                record = attrs.evolve(stale, pid=None, pid_start_ticks=None, state="stopped")
                writes.append(Write(record, "recovered", "manager had died"))
                self.records[name] = record
            with contextlib.suppress(ValueError):  # an unknown word in the db: keep "stopped"
                self.runners[name].state = BotState(self.records[name].state)
        if writes:
            await self._db(self.store.commit, writes)

    async def _restore(self, stored: dict[str, BotRecord]) -> None:
        """SPEC 5: start bots running or preserved at the last shutdown, and new autostarts."""
        names = [name for name, bot in self.config.bots.items() if _should_restore(bot, stored)]
        if names:
            LOGGER.info("starting %d bots: %s", len(names), ", ".join(names))
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(
                    partial(self.execute, Command(Action.START, name), source="restore")
                )

    async def _handle_signals(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    LOGGER.info("SIGHUP ignored: restart trio-orch to apply config changes")
                elif not self._shutting_down:
                    LOGGER.info("%s received: stopping all bots", signal.Signals(signum).name)
                    assert self._root is not None
                    self._root.start_soon(self.shutdown)
                else:
                    LOGGER.warning("second signal: killing all bots now")
                    for runner in self.runners.values():
                        runner.kill_now()

    async def shutdown(self) -> None:
        """Stop every bot in parallel, mark them preserved, and end :meth:`run`."""
        self._shutting_down = True
        self._preserve = {name for name, runner in self.runners.items() if runner.active}
        # A command that was starting a bot when the signal came may still complete;
        # go round until nothing is left running.
        for _ in range(SHUTDOWN_ROUNDS):
            active = [runner for runner in self.runners.values() if runner.active]
            if not active:
                break
            async with trio.open_nursery() as nursery:
                for runner in active:
                    nursery.start_soon(self._stop_for_shutdown, runner)
        LOGGER.info("all bots stopped; trio-orch exits")
        if self._root is not None:
            self._root.cancel_scope.cancel()

    async def _stop_for_shutdown(self, runner: BotRunner) -> None:
        with contextlib.suppress(ActionFailed):  # it ended by itself meanwhile
            await runner.stop()

    # ----- transitions -----

    async def _on_transition(self, runner: BotRunner, transition: Transition) -> None:
        name = runner.name
        record = self.records[name]  # every configured bot has one since recovery
        previous_state = record.state
        state = transition.state
        stamp = now_iso()
        changes: dict[str, Any] = {"state": state.value, "restarts": runner.restarts}
        if state.value != record.state:
            changes["state_since"] = stamp
        if state is BotState.STARTING:
            changes.update(is_running=True, preserved_state=False)
        elif state is BotState.RUNNING and previous_state != BotState.PAUSED.value:
            changes.update(
                pid=transition.pid,
                # A procfs read: answered from kernel memory, never blocks.
                pid_start_ticks=process_start_ticks(transition.pid),
                start_count=record.start_count + 1,
                last_start_time=stamp,
                is_running=True,
            )
        if state in (BotState.BACKOFF, BotState.STOPPED, BotState.EXITED, BotState.FAILED):
            changes.update(pid=None, pid_start_ticks=None)
            if transition.exit_code is not None:
                changes.update(last_exit_code=transition.exit_code, last_exit_time=stamp)
        if state in (BotState.STOPPED, BotState.EXITED, BotState.FAILED):
            preserve = self._shutting_down and name in self._preserve
            changes.update(is_running=False, preserved_state=preserve)
        record = attrs.evolve(record, **changes)
        self.records[name] = record
        if transition.message:
            self._messages[name] = transition.message
        assert self._writer is not None
        await self._writer.commit(Write(record, state.value, transition.message or None))
        self._log_transition(name, transition, previous_state, record)

    @staticmethod
    def _log_transition(
        name: str, transition: Transition, previous_state: str, record: BotRecord
    ) -> None:
        state = transition.state
        if state is BotState.RUNNING and previous_state == BotState.PAUSED.value:
            LOGGER.info("%s resumed", name)
        elif state is BotState.RUNNING:
            LOGGER.info("%s running (pid %d, start #%d)", name, record.pid, record.start_count)
        elif state is BotState.FAILED:
            LOGGER.error("%s failed: %s", name, transition.message)
        elif state is BotState.BACKOFF:
            LOGGER.warning("%s %s", name, transition.message)
        elif state is BotState.EXITED:
            LOGGER.info("%s %s", name, transition.message)
        elif state is BotState.PAUSED:
            LOGGER.info("%s paused", name)
        elif state is BotState.STOPPED:
            code = transition.exit_code
            LOGGER.info("%s stopped%s", name, "" if code is None else f" ({describe_exit(code)})")

    async def _update_before_start(self, bot: BotConfig) -> None:
        """The git update before each start (SPEC 7); failures are logged, never raised."""
        if bot.name in self._freshly_updated:
            self._freshly_updated.discard(bot.name)
            return
        await self._run_update(bot)

    async def _run_update(self, bot: BotConfig) -> gitupdate.UpdateResult:
        update = partial(
            self.update,
            bot,
            protected_dirs=(_PACKAGE_ROOT, self.config.directory),
            timeout=self.config.settings.git_timeout,
        )
        result = await _run_cancellable(update)
        log = LOGGER.warning if result.outcome in ("failed", "skipped") else LOGGER.info
        log("%s git update: %s", bot.name, result.message)
        record = attrs.evolve(
            self.records[bot.name],
            update_outcome=result.message,
            update_commit=result.new_commit or result.old_commit,
            update_time=now_iso(),
        )
        self.records[bot.name] = record
        assert self._writer is not None
        await self._writer.commit(Write(record, "update", result.message))
        return result

    # ----- commands -----

    async def _execute_from_file(self, command: Command) -> None:
        await self.execute(command, source="command file")

    async def execute(self, command: Command, source: str = "control socket") -> dict[str, Any]:
        """Run one command from the socket or the command file and describe the outcome.

        The reply has ``ok``, ``code`` (the CLI exit code), ``message``, and ``bot`` or
        ``bots``. Never raises for a bad command: that is a reply with a non-zero code.
        """
        try:
            if command.action in (Action.LIST, Action.STATUS_ALL):
                bots = self.all_info()
                if source == "command file":
                    for info in bots:
                        LOGGER.info("status %s", _one_line_status(info))
                return {"ok": True, "code": 0, "message": "", "bots": bots, "manager": "running"}
            assert command.name is not None
            runner = self._runner(command.name)
            if command.action is Action.STATUS:
                return {"ok": True, "code": 0, "message": "", "bot": self.info(command.name)}
            if command.action is Action.STOP and runner.state is BotState.STARTING:
                # The start holding the lock may wait on a slow git update; stopping
                # cancels that update rather than queueing behind it.
                message = await self._perform(command.action, runner)
            else:
                async with self._locks[command.name]:
                    message = await self._perform(command.action, runner)
        except OrchestratorError as exc:
            LOGGER.warning("command %r from %s rejected: %s", str(command), source, exc)
            return {"ok": False, "code": exc.exit_code, "message": str(exc)}
        LOGGER.info("command %r from %s: %s", str(command), source, message)
        return {"ok": True, "code": 0, "message": message, "bot": self.info(command.name)}

    def _runner(self, name: str) -> BotRunner:
        self.config.bot(name)  # raises UnknownBotError
        return self.runners[name]

    async def _perform(self, action: Action, runner: BotRunner) -> str:
        name = runner.name
        if action is Action.START:
            return await self._start(runner)
        if action is Action.STOP:
            await runner.stop()
            return f"{name} stopped"
        if action is Action.RESTART:
            if runner.active:
                await runner.stop()
            return (await self._start(runner)).replace("started", "restarted")
        if action is Action.PAUSE:
            await runner.pause()
            return f"{name} paused"
        if action is Action.RESUME:
            await runner.resume()
            return f"{name} resumed"
        if action is Action.UPDATE:
            return await self._update_now(runner)
        raise ActionFailed(f"unsupported action {action.value!r}")  # pragma: no cover

    async def _start(self, runner: BotRunner) -> str:
        if self._shutting_down or self._root is None:
            raise ActionFailed("the manager is shutting down")
        if runner.active:
            if runner.state is not BotState.BACKOFF:
                raise ActionFailed(f"{runner.name} is already running (state {runner.state})")
            await runner.stop()  # a user start during the restart delay: start now
        pid = await self._root.start(runner.run)
        if pid is None:
            raise ActionFailed(
                f"{runner.name} could not start: {self._messages.get(runner.name, '')}"
            )
        return f"{runner.name} started (pid {pid})"

    async def _update_now(self, runner: BotRunner) -> str:
        bot = runner.bot
        if bot.repo_url is None:
            raise ActionFailed(f"{bot.name} has no repo_url; nothing to update")
        # An explicit `update NAME` runs even with `auto_update: false`: that setting is
        # about updating before every start, not about refusing a user's request.
        result = await self._run_update(attrs.evolve(bot, auto_update=True))
        if result.outcome == "failed":
            raise ActionFailed(f"{bot.name} update {result.message}")
        if result.changed and runner.active:
            await runner.stop()
            self._freshly_updated.add(bot.name)
            try:
                await self._start(runner)
            finally:
                self._freshly_updated.discard(bot.name)
            return f"{bot.name} {result.message}; restarted"
        return f"{bot.name} {result.message}"

    def info(self, name: str) -> dict[str, Any]:
        return bot_info(self.config.bots[name], self.records[name], self.runners.get(name))

    def all_info(self) -> list[dict[str, Any]]:
        return [self.info(name) for name in self.config.bots]


async def _run_cancellable(
    update: Callable[..., gitupdate.UpdateResult],
) -> gitupdate.UpdateResult:
    """Run *update* in a worker thread; on cancellation, ask it to stop and wait for it.

    Not abandoned: git has side effects on the checkout, so we wait for the thread, but
    the cancel event makes it kill its git command at once instead of running on until
    ``git_timeout``.

    **Cancellation:** returns within a fraction of a second (the update ends "failed").
    """
    cancel = threading.Event()

    async def cancel_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancel.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_cancelled)
        result = await trio.to_thread.run_sync(partial(update, cancel=cancel))
        nursery.cancel_scope.cancel()
    return result


def _should_restore(bot: BotConfig, stored: dict[str, BotRecord]) -> bool:
    record = stored.get(bot.name)
    if record is None:
        return bot.autostart
    return record.is_running or record.preserved_state


def _one_line_status(info: dict[str, Any]) -> str:
    pid = info["pid"] if info["pid"] is not None else "-"
    return (
        f"{info['name']}: {info['state']} pid={pid} starts={info['start_count']} "
        f"restarts={info['restarts']} last_exit={info['last_exit_code']}"
    )


_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_logging(log_directory: Path, sink: OutputSink) -> list[logging.Handler]:
    os.makedirs(log_directory, exist_ok=True)
    file_handler = logging.FileHandler(log_directory / "bot_manager.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console_handler = ConsoleLogHandler(sink)
    console_handler.setFormatter(
        logging.Formatter("%(asctime)s [trio-orch] %(message)s", datefmt="%H:%M:%S")
    )
    root = logging.getLogger("trio_orchestrator")
    root.setLevel(logging.INFO)
    root.propagate = False
    handlers: list[logging.Handler] = [file_handler, console_handler]
    for handler in handlers:
        root.addHandler(handler)
    return handlers


def run_manager(config: Config, paths: Paths, color_mode: str) -> int:
    """``trio-orch start_all``: own the db, run until a signal, exit 0.

    Raises:
        ManagerRunning: another manager owns the db.
        StateError: the db is unusable.
    """
    lock = OwnerLock(paths.db)
    lock.acquire()
    try:
        store = StateStore(paths.db)
        try:
            printer = Printer(
                color=_should_color(color_mode),
            )
            sink = OutputSink(
                printer,
                LogFiles(config.settings.log_directory),
                sys.stdout.buffer,
                sys.stderr.buffer,
            )
            try:
                handlers = _setup_logging(config.settings.log_directory, sink)
            except OSError as exc:
                raise StateError(
                    f"cannot write logs in {config.settings.log_directory}: {exc.strerror}"
                ) from None
            for warning in config.warnings:
                LOGGER.warning("%s", warning)
            supervisor = Supervisor(config=config, paths=paths, store=store, sink=sink)
            try:
                # Until the signal task takes SIGINT over, a Ctrl-C raises
                # KeyboardInterrupt; only at checkpoints, where trio can unwind cleanly
                # (raised anywhere, it can leave a nursery waiting forever).
                trio.run(supervisor.run, restrict_keyboard_interrupt_to_checkpoints=True)
            except BaseExceptionGroup as group:
                _raise_user_error(group)
                if group.split(KeyboardInterrupt)[1] is None:
                    # The nurseries wrapped it; no bot was started yet.
                    raise KeyboardInterrupt from None
                raise
            finally:
                for handler in handlers:
                    logging.getLogger("trio_orchestrator").removeHandler(handler)
                    handler.close()
        finally:
            store.close()
    finally:
        lock.release()
    return 0


def _raise_user_error(group: BaseExceptionGroup) -> None:
    """Raise alone an OrchestratorError that nurseries wrapped (one line, no traceback)."""
    errors, rest = group.split(OrchestratorError)
    if errors is not None and rest is None:
        error: BaseException = errors
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error from None


def _should_color(mode: str) -> bool:
    from trio_orchestrator.output import should_color

    return should_color(mode, sys.stdout, os.environ)
