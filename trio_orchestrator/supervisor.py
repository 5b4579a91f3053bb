"""The manager: one runner per bot under a root nursery, plus the tasks around them.

Task tree of ``trio-orch start_all``::

    run()                         control socket bound, orphans ended: before any nursery
    ├── OutputSink.run            console + log files (outlives the bots)
    ├── StateWriter.run           group commits to SQLite (outlives the bots)
    └── root nursery
        ├── signal handler        SIGINT/SIGTERM: graceful shutdown; again: kill now
        ├── control socket        JSON-lines requests -> execute()
        ├── command file poller   lines -> execute()   (in the intake scope)
        └── BotRunner.run x N     one per started bot

Only this module sees more than one bot, touches the database (through ``to_thread`` and
one writer task) and calls git (through ``to_thread``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import signal
import sys
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import trio

from trio_orchestrator import gitupdate, heartbeat, metrics
from trio_orchestrator.allocator import keep_blocks_in_heap
from trio_orchestrator.commandfile import CommandFile
from trio_orchestrator.commands import Action, Command
from trio_orchestrator.config import load_config
from trio_orchestrator.control import ControlSocket
from trio_orchestrator.errors import ActionFailed, ConfigError, OrchestratorError, StateError
from trio_orchestrator.fdlimit import raise_fd_limit
from trio_orchestrator.hooks import HookEvent, HookRunner, transition_events
from trio_orchestrator.output import LogFileHandler, LogFiles, Printer, should_color
from trio_orchestrator.procfs import process_start_ticks
from trio_orchestrator.reaper import Reaper, become_subreaper, end_escaped, owned_spawn
from trio_orchestrator.recovery import DB_TAG_VARIABLE, end_orphans, reset_records, restored_state
from trio_orchestrator.reload import ConfigDiff
from trio_orchestrator.runner import (
    BotRunner,
    BotState,
    Run,
    StopReason,
    Transition,
    describe_exit,
)
from trio_orchestrator.sampler import NOT_SAMPLED, Sampler, read_manager_usage
from trio_orchestrator.sink import ConsoleLogHandler, OutputSink
from trio_orchestrator.state import BotRecord, OwnerLock, StateStore, Write, now_iso
from trio_orchestrator.statewriter import StateWriter
from trio_orchestrator.views import bot_info, one_line_status

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from trio_orchestrator.config import BotConfig, Config, GlobalSettings
    from trio_orchestrator.fdlimit import FdLimit
    from trio_orchestrator.views import Paths

__all__ = ["Supervisor", "run_manager"]

LOGGER = logging.getLogger("trio_orchestrator")

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENDED = (BotState.STOPPED, BotState.EXITED, BotState.FAILED)
_MANAGER_LOG_NAME = "bot_manager"  # logs/bot_manager.log, beside the bots' logs
# Ours, and trio's accept loop of the control socket ("accept returned EMFILE; sleeping").
_LOGGERS = ("trio_orchestrator", "trio.serve_listeners")
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
# Beside the db: one heartbeat file per bot, named in its TRIO_ORCH_HEARTBEAT_FILE.
HEARTBEAT_DIRECTORY = ".trio-orch-heartbeats"


@attrs.define(eq=False)
class Supervisor:
    """Runs the configured bots and executes commands on them.

    Args:
        config: the parsed configuration.
        paths: where the db, command file and socket live.
        store: the opened state database.
        stored: the db's records as loaded at start-up (before any nursery opened).
        sink: where bot output goes.
        update: the git update, ``gitupdate.update_checkout`` or a fake for tests.
        spawn, killpg: passed to every runner (tests inject fakes).
        adopt_orphans: become a child subreaper and reap the bots' orphans (the CLI's
            manager; off in tests that run a supervisor inside pytest).
    """

    config: Config
    paths: Paths
    store: StateStore
    stored: dict[str, BotRecord]
    sink: OutputSink
    update: Callable[..., gitupdate.UpdateResult] = gitupdate.update_checkout
    spawn: Callable[..., Any] = trio.run_process
    killpg: Callable[[int, int], None] = os.killpg
    adopt_orphans: bool = False

    records: dict[str, BotRecord] = attrs.field(init=False, factory=dict)
    runners: dict[str, BotRunner] = attrs.field(init=False, factory=dict)
    _locks: dict[str, trio.Lock] = attrs.field(init=False, factory=dict)
    _limiter: trio.CapacityLimiter = attrs.field(
        init=False, factory=lambda: trio.CapacityLimiter(1)
    )
    _writer: StateWriter = attrs.field(init=False)
    _root: trio.Nursery | None = attrs.field(init=False, default=None)
    _intake: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _shutting_down: bool = attrs.field(init=False, default=False)
    _messages: dict[str, str] = attrs.field(init=False, factory=dict)
    _reload_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    # Bots that `update NAME` just updated and is restarting: their next start skips the
    # update that has just run (and keeps its outcome as the bot's last update).
    _freshly_updated: set[str] = attrs.field(init=False, factory=set)
    # Issue 15: CPU/memory sampling, counters for the metrics (see metrics.py, web.py).
    sampler: Sampler = attrs.field(init=False)
    counters: metrics.Counters = attrs.field(init=False, factory=metrics.Counters)
    _hooks: HookRunner = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._writer = StateWriter(self.store, self._limiter)
        self.sampler = Sampler(lambda: {n: r.pid for n, r in self.runners.items() if r.pid})
        self._hooks = HookRunner(
            timeout=self.config.settings.hook_timeout,
            cwd=self.config.directory,
            spawn=owned_spawn(trio.run_process),
        )
        for bot in self.config.bots.values():
            self._add_runner(bot)

    def _add_runner(self, bot: BotConfig) -> BotRunner:
        beats = self.paths.db.parent / HEARTBEAT_DIRECTORY / bot.name
        runner = self.runners[bot.name] = BotRunner(
            bot=bot,
            on_transition=self._on_transition,
            output=self.sink.stream_writer,
            before_start=self._update_before_start if bot.updates_enabled else None,
            spawn=owned_spawn(self.spawn),
            killpg=self.killpg,
            extra_env=(
                ("TRIO_ORCH_BOT", bot.name),
                (DB_TAG_VARIABLE, str(self.paths.db)),
                (heartbeat.ENV_VARIABLE, str(beats)),
            ),
            heartbeat_file=beats,
            after_exit=self._end_escaped,
        )
        self._locks.setdefault(bot.name, trio.Lock())
        return runner

    # ----- running -----

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Bind the socket, end orphans, restore, and supervise until shutdown completes.

        Raises:
            OrchestratorError: the control socket cannot be bound (before any bot runs).

        **Cancellation:** every running bot is stopped (``trio.run_process`` delivers the
        stop, shielded) and recorded as stopped by the manager's shutdown.
        """
        # Signals first: from here on, SIGINT and SIGTERM mean a graceful shutdown.
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            await self._serve(signals, task_status)

    async def _serve(self, signals: AsyncIterator[int], task_status: trio.TaskStatus[None]) -> None:
        control = await ControlSocket.bind(self.paths.socket)
        try:
            web = await self._bind_web()  # before any nursery: errors are one plain line
            await self._recover()
            async with trio.open_nursery() as infrastructure:
                await infrastructure.start(self.sink.run)
                await infrastructure.start(self._writer.run)
                try:
                    async with self._hooks.running(), trio.open_nursery() as root:
                        self._root = root
                        root.start_soon(self._handle_signals, signals)
                        if self.adopt_orphans and become_subreaper():
                            await root.start(Reaper(self._main_pids).run)
                        await root.start(control.serve, self.execute)
                        await root.start(self.sampler.run)
                        if web is not None:
                            await root.start(web)
                        await root.start(self._read_command_file)
                        LOGGER.info(
                            "trio-orch manager running (pid %d, %d bot%s configured, socket %s)",
                            os.getpid(),
                            len(self.config.bots),
                            "" if len(self.config.bots) == 1 else "s",
                            self.paths.socket,
                        )
                        root.start_soon(self._restore)
                        task_status.started()
                finally:
                    self._root = None
                    self._writer.close()
                    self.sink.close()
        finally:
            control.unlink()

    async def _recover(self) -> None:
        """End what a dead manager left running, then clear its stale pids in the db."""
        await end_orphans(self.config, self.paths.db, self.stored)
        self.records, writes = reset_records(self.config, self.stored)
        for name, record in self.records.items():
            self.runners[name].state = restored_state(record)
        if writes:
            await self._db(self.store.commit, writes)

    def _main_pids(self) -> set[int]:
        return {runner.pid for runner in self.runners.values() if runner.pid is not None}

    async def _end_escaped(self, bot: BotConfig) -> None:
        """After each exit of *bot*: end its descendants that left its process group."""
        await end_escaped(f"{DB_TAG_VARIABLE}={self.paths.db}", bot.name, bot.stop_timeout)

    async def _db(self, function: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    async def _read_command_file(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        commands = CommandFile(self.paths.commands, self._execute_from_file)
        with self._intake:
            await commands.run(self.config.settings.command_poll_interval, task_status=task_status)

    async def _restore(self) -> None:
        """SPEC 5: start bots running or preserved at the last shutdown, and new autostarts."""
        names = [name for name, bot in self.config.bots.items() if self._should_restore(bot)]
        if names:
            LOGGER.info("starting %d bots: %s", len(names), ", ".join(names))
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(
                    partial(self.execute, Command(Action.START, name), source="restore")
                )

    def _should_restore(self, bot: BotConfig) -> bool:
        record = self.stored.get(bot.name)
        if record is None:
            return bot.autostart
        return record.is_running or record.preserved_state

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGUSR1:  # logrotate's postrotate
                self.sink.reopen_logs()
                LOGGER.info("SIGUSR1 received: log files reopened")
            elif signum == signal.SIGHUP:
                assert self._root is not None
                self._root.start_soon(self.reload, "SIGHUP")
            elif not self._shutting_down:
                LOGGER.info("%s received: stopping all bots", signal.Signals(signum).name)
                assert self._root is not None
                self._root.start_soon(self.shutdown)
            else:
                LOGGER.warning("second signal: killing all bots now")
                for runner in self.runners.values():
                    runner.kill_now()

    async def shutdown(self) -> None:
        """Close command intake, stop every bot once, in parallel, and end :meth:`run`.

        Bots stopped here are marked preserved, so the next ``start_all`` restores them.
        """
        self._shutting_down = True  # the socket now answers "shutting down" to actions
        self._intake.cancel()  # the command file is no longer read
        runs = [runner.run_handle for runner in self.runners.values() if runner.active]
        for run in runs:
            assert run is not None
            run.stop(StopReason.SHUTDOWN)
        for run in runs:
            assert run is not None
            await run.wait()
        LOGGER.info("all bots stopped; trio-orch exits")
        if self._root is not None:
            # A start that raced with the signal is ended by this cancel (and recorded
            # as stopped by the shutdown, see BotRunner.run).
            self._root.cancel_scope.cancel()

    # ----- reload -----

    async def reload(self, source: str) -> dict[str, Any]:
        """Re-read the config and apply only the difference (see :mod:`.reload`).

        A config that does not validate is rejected and the running one stays in force.
        The reply's message lists what was added, removed, restarted and left alone.

        **Cancellation:** bots already stopped or started stay so; the config in force is
        the new one once any bot has been acted on.
        """
        async with self._reload_lock:
            if self._shutting_down:
                return {"ok": False, "code": 1, "message": "the manager is shutting down"}
            try:
                new = await trio.to_thread.run_sync(load_config, self.paths.config)
            except ConfigError as exc:
                LOGGER.warning("reload (%s) rejected; the running config stays: %s", source, exc)
                return {"ok": False, "code": exc.exit_code, "message": str(exc)}
            diff = ConfigDiff.between(self.config, new)
            for warning in new.warnings:
                LOGGER.warning("%s", warning)
            await self._each(self._remove_bot, diff.removed)
            self.config = new
            self._hooks.timeout = new.settings.hook_timeout
            self.sink.log_files.get(_MANAGER_LOG_NAME, new.settings)  # its rotation limits
            for name in diff.updated:
                self.runners[name].bot = new.bots[name]
            for name in diff.added:
                self._add_runner(new.bots[name])
                self.records[name] = BotRecord(name=name)
            await self._each(self._replace_bot, diff.restarted)
            await self._each(self._start_added, diff.added)
        summary = diff.summary()
        LOGGER.info("config reloaded (%s): %s", source, "; ".join(summary))
        return {"ok": True, "code": 0, "message": "\n".join(summary), "reload": attrs.asdict(diff)}

    @staticmethod
    async def _each(action: Callable[[str], Awaitable[None]], names: tuple[str, ...]) -> None:
        """Run *action* on every name in parallel; a failure is logged, not raised."""

        async def act(name: str) -> None:
            try:
                await action(name)
            except OrchestratorError as exc:
                LOGGER.warning("reload: %s: %s", name, exc)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(act, name)

    async def _remove_bot(self, name: str) -> None:
        async with self._locks[name]:
            runner = self.runners[name]
            if runner.active:
                await runner.stop(StopReason.RELOAD)
            del self.runners[name]
            record = self.records.pop(name)
            await self._save(Write(record, "reload", "removed from the config", forget=True))

    async def _replace_bot(self, name: str) -> None:
        async with self._locks[name]:
            old = self.runners[name]
            was_up = old.active
            if was_up:
                await old.stop(StopReason.RELOAD)
            runner = self._add_runner(self.config.bots[name])
            runner.state = old.state
            detail = "settings changed" + ("; restarting" if was_up else "")
            await self._save(Write(self.records[name], "reload", detail))
            if not was_up:
                return
            run = await self._begin(runner)
        await self._started(runner, run, "restarted")

    async def _start_added(self, name: str) -> None:
        await self._save(Write(self.records[name], "reload", "added to the config"))
        if self.config.bots[name].autostart:
            await self._start(self.runners[name])

    async def _save(self, write: Write) -> None:
        try:
            await self._writer.commit(write)
        except StateError as exc:
            LOGGER.warning("%s: %s not saved: %s", write.record.name, write.event, exc)

    # ----- transitions -----

    async def _on_transition(self, runner: BotRunner, transition: Transition) -> None:
        """Commit the transition to the db, then log it."""
        name = runner.name
        previous = self.records[name]  # every configured bot has one since recovery
        record = attrs.evolve(previous, **self._record_changes(runner, transition, previous))
        self.records[name] = record
        self.counters.record(name, transition, previous.state)
        if transition.message:
            self._messages[name] = transition.message
        if transition.state is BotState.BACKOFF or transition.state in _ENDED:
            # No process, no output: give its descriptor back (a later line reopens it).
            self.sink.log_files.get(name, runner.bot).close()
        detail = self._event_detail(transition, previous.state, record)
        await self._save(Write(record, transition.state.value, detail))
        self._log_transition(name, transition, previous.state, record)
        for event in transition_events(transition):
            hook_event = HookEvent(
                event, name, transition.reason, transition.exit_code, record.update_commit
            )
            self._hooks.fire(runner.bot.hooks, hook_event)
        if transition.state is BotState.FAILED and self._should_roll_back(runner.bot, record):
            assert self._root is not None and record.update_commit is not None
            self._root.start_soon(self._roll_back, runner, record.update_commit)

    def _record_changes(
        self, runner: BotRunner, transition: Transition, record: BotRecord
    ) -> dict[str, Any]:
        state = transition.state
        stamp = now_iso()
        changes: dict[str, Any] = {"state": state.value, "restarts": runner.restarts}
        if state.value != record.state:
            changes["state_since"] = stamp
        if state is BotState.STARTING:
            changes.update(is_running=True, preserved_state=False)
        elif state is BotState.RUNNING and record.state != BotState.PAUSED:
            changes.update(
                pid=transition.pid,
                # A procfs read: answered from kernel memory, never blocks.
                pid_start_ticks=process_start_ticks(transition.pid),
                start_count=record.start_count + 1,
                last_start_time=stamp,
                is_running=True,
            )
        if state is BotState.BACKOFF or state in _ENDED:
            changes.update(pid=None, pid_start_ticks=None)
            if transition.exit_code is not None or transition.reason:
                changes.update(
                    last_exit_code=transition.exit_code,
                    last_exit_reason=transition.reason,
                    last_exit_time=stamp,
                )
        if state in _ENDED:
            preserve = transition.stop_reason is StopReason.SHUTDOWN
            changes.update(is_running=False, preserved_state=preserve)
        return changes

    @staticmethod
    def _event_detail(transition: Transition, previous: str, record: BotRecord) -> str | None:
        """The history entry's detail: the pid of a start, the reason of an exit."""
        state = transition.state
        if state is BotState.RUNNING and previous == BotState.PAUSED:
            return f"resumed (pid {record.pid})"
        if state is BotState.RUNNING:
            return f"pid {record.pid}, start #{record.start_count}"
        if state in (BotState.PAUSED, BotState.STOPPING):
            return f"pid {transition.pid}"
        if state is BotState.STOPPED and transition.exit_code is not None:
            return f"{transition.reason or 'stopped'} ({describe_exit(transition.exit_code)})"
        return transition.message or None

    @staticmethod
    def _log_transition(name: str, transition: Transition, previous: str, record: BotRecord):
        state = transition.state
        if state is BotState.RUNNING and previous == BotState.PAUSED:
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
            ended = "" if code is None else f" ({describe_exit(code)})"
            LOGGER.info("%s %s%s", name, transition.reason or "stopped", ended)

    # ----- git -----

    async def _update_before_start(self, bot: BotConfig) -> None:
        """The git update before each start (SPEC 7); failures are logged, never raised."""
        if bot.name in self._freshly_updated:
            self._freshly_updated.discard(bot.name)
            return
        result = await self._run_update(bot)
        bad = self.records[bot.name].rolled_back_from
        if bad is not None and result.changed and result.new_commit == bad:
            # The remote still has the commit we rolled back from: stay where we were.
            assert result.old_commit is not None
            await self._apply_rollback(bot, result.old_commit, "it was rolled back before")

    async def _run_update(self, bot: BotConfig) -> gitupdate.UpdateResult:
        update = partial(
            self.update,
            bot,
            protected_dirs=(_PACKAGE_ROOT, self.config.directory),
            timeout=self.config.settings.git_timeout,
        )
        return await _run_cancellable(update, partial(self._record_update, bot))

    async def _record_update(self, bot: BotConfig, result: gitupdate.UpdateResult) -> None:
        """Log and save an update's outcome, and fire the on_update hook."""
        log = LOGGER.warning if result.outcome in ("failed", "skipped") else LOGGER.info
        log("%s git update: %s", bot.name, result.message)
        changes: dict[str, Any] = {}
        if result.changed:
            changes.update(update_previous_commit=result.old_commit, update_changed_time=now_iso())
        record = attrs.evolve(
            self.records[bot.name],
            update_outcome=result.message,
            update_commit=result.new_commit or result.old_commit,
            update_time=now_iso(),
            **changes,
        )
        self.records[bot.name] = record
        await self._save(Write(record, "update", result.message))
        if result.changed:
            event = HookEvent(
                "update", bot.name, result.message, None, result.new_commit, result.old_commit
            )
            self._hooks.fire(bot.hooks, event)

    # ----- rollback (issue 13.5) -----

    def _should_roll_back(self, bot: BotConfig, record: BotRecord) -> bool:
        """The bot failed on a commit that its last update brought, within rollback_window
        of that update, and that commit was not rolled back from before."""
        if not bot.rollback_on_failure or self._shutting_down or self._root is None:
            return False
        if record.update_previous_commit is None or record.update_commit is None:
            return False
        if record.rolled_back_from == record.update_commit:
            return False
        if record.update_changed_time is None:
            return False
        changed = datetime.datetime.fromisoformat(record.update_changed_time)
        age = (datetime.datetime.now().astimezone() - changed).total_seconds()
        return age <= bot.rollback_window

    async def _roll_back(self, runner: BotRunner, bad: str) -> None:
        """Reset a failed bot to the commit before its last update and start it again."""
        bot = runner.bot
        async with self._locks[bot.name]:
            record = self.records[bot.name]
            if record.update_commit != bad or record.update_previous_commit is None:
                return  # updated or rolled back meanwhile
            if runner.active and runner.state is not BotState.FAILED:
                return  # the user started it again meanwhile
            window = f"{bot.rollback_window:g}s"
            if not await self._apply_rollback(
                bot, record.update_previous_commit, f"it failed within {window} of the update"
            ):
                return
            try:
                run = await self._restart_updated(runner)
            except ActionFailed:
                return
        with contextlib.suppress(ActionFailed):
            await self._started(runner, run, "started")

    async def _apply_rollback(self, bot: BotConfig, target: str, why: str) -> bool:
        """Reset the checkout to *target*; record, log and report it (hook on_update,
        event ``rollback``). Returns False if git failed."""
        rollback = partial(
            gitupdate.rollback_checkout,
            bot,
            target,
            protected_dirs=(_PACKAGE_ROOT, self.config.directory),
            timeout=self.config.settings.git_timeout,
        )
        result = await _run_cancellable(rollback, partial(self._record_rollback, bot, why))
        return result.outcome == "rolled-back"

    async def _record_rollback(
        self, bot: BotConfig, why: str, result: gitupdate.UpdateResult
    ) -> None:
        ok = result.outcome == "rolled-back"
        message = f"{result.message} because {why}" if ok else f"rollback {result.message}"
        (LOGGER.warning if ok else LOGGER.error)("%s %s", bot.name, message)
        changes: dict[str, Any] = {"update_outcome": message, "update_time": now_iso()}
        if ok:
            changes.update(
                update_commit=result.new_commit,
                update_previous_commit=None,
                rolled_back_from=result.old_commit,
            )
        record = self.records[bot.name] = attrs.evolve(self.records[bot.name], **changes)
        await self._save(Write(record, "rollback", message))
        if ok:
            event = HookEvent(
                "rollback", bot.name, message, None, result.new_commit, result.old_commit
            )
            self._hooks.fire(bot.hooks, event)

    # ----- commands -----

    async def _execute_from_file(self, command: Command) -> None:
        await self.execute(command, source="command file")

    async def execute(self, command: Command, source: str = "control socket") -> dict[str, Any]:
        """Run one command from the socket or the command file and describe the outcome.

        The reply has ``ok``, ``code`` (the CLI exit code: the worst of the bots'),
        ``message`` (one line per bot), and ``bot`` (one bot named) or ``bots``. Never
        raises for a bad command: that is a reply with a non-zero code.
        """
        try:
            if command.action is Action.METRICS:
                return {"ok": True, "code": 0, "message": await self.metrics_text()}
            if command.action in (Action.LIST, Action.STATUS_ALL, Action.STATUS):
                await self.look()
            if command.action in (Action.LIST, Action.STATUS_ALL):
                return self._list(source)
            if command.action is Action.RELOAD:
                return await self.reload(source)
            runners = self._runners_named(command)  # every name checked before acting
            if command.action is Action.STATUS:
                return {"ok": True, "code": 0, "message": "", "bot": self.info(command.name)}
            if command.action is Action.HISTORY:
                name = runners[0].name
                events = await self._db(self.store.history, name, command.limit)
                return {"ok": True, "code": 0, "message": "", "name": name, "events": events}
            handler = self._HANDLERS.get(command.action)
            if handler is None:
                raise ActionFailed(f"{command.action.value!r} is not a bot action")
            if self._shutting_down:
                raise ActionFailed("the manager is shutting down")
        except OrchestratorError as exc:
            LOGGER.warning("command %r from %s rejected: %s", str(command), source, exc)
            return {"ok": False, "code": exc.exit_code, "message": str(exc)}
        outcomes = await self._act(handler, runners, stop_all=command.is_all)
        code = max(code for code, _ in outcomes)
        message = "\n".join(text for _, text in outcomes)
        log = LOGGER.info if code == 0 else LOGGER.warning
        log("command %r from %s: %s", str(command), source, message.replace("\n", "; "))
        reply: dict[str, Any] = {"ok": code == 0, "code": code, "message": message}
        if len(runners) == 1 and not command.is_all:
            reply["bot"] = self.info(runners[0].name)
        else:
            reply["bots"] = [self.info(runner.name) for runner in runners]
        return reply

    def _list(self, source: str) -> dict[str, Any]:
        bots = self.all_info()
        if source == "command file":
            for info in bots:
                LOGGER.info("status %s", one_line_status(info))
        return {"ok": True, "code": 0, "message": "", "bots": bots, "manager": "running"}

    def _runners_named(self, command: Command) -> list[BotRunner]:
        """The runners a command names, in config order for `all`.

        Raises:
            UnknownBotError: a name is not configured (nothing has been done yet).
        """
        if command.is_all:
            return list(self.runners.values())
        return [self.runners[self.config.bot(name).name] for name in dict.fromkeys(command.names)]

    async def _act(
        self,
        handler: Callable[[Supervisor, BotRunner], Awaitable[str]],
        runners: list[BotRunner],
        *,
        stop_all: bool,
    ) -> list[tuple[int, str]]:
        """Run *handler* on every runner in parallel; ``(exit code, message)`` for each."""
        outcomes: list[tuple[int, str]] = [(0, "")] * len(runners)

        async def act(index: int, runner: BotRunner) -> None:
            if stop_all and handler is Supervisor._stop and not runner.active:
                outcomes[index] = (0, f"{runner.name} already stopped")
                return
            try:
                outcomes[index] = (0, await handler(self, runner))
            except OrchestratorError as exc:
                outcomes[index] = (exc.exit_code, str(exc))

        async with trio.open_nursery() as nursery:
            for index, runner in enumerate(runners):
                nursery.start_soon(act, index, runner)
        return outcomes

    async def _start(self, runner: BotRunner) -> str:
        async with self._locks[runner.name]:
            if runner.active and runner.state not in (BotState.BACKOFF, BotState.FAILED):
                raise ActionFailed(f"{runner.name} is already running (state {runner.state})")
            # A start during the restart delay or the failed_cooldown: start now.
            run = await self._begin(runner)
        return await self._started(runner, run, "started")

    async def _stop(self, runner: BotRunner) -> str:
        async with self._locks[runner.name]:
            await runner.stop(StopReason.USER)
        return f"{runner.name} stopped"

    async def _restart(self, runner: BotRunner) -> str:
        async with self._locks[runner.name]:
            run = await self._begin(runner)
        return await self._started(runner, run, "restarted")

    async def _pause(self, runner: BotRunner) -> str:
        async with self._locks[runner.name]:
            await runner.pause()
        return f"{runner.name} paused"

    async def _resume(self, runner: BotRunner) -> str:
        async with self._locks[runner.name]:
            await runner.resume()
        return f"{runner.name} resumed"

    async def _update_now(self, runner: BotRunner) -> str:
        bot = runner.bot
        if bot.repo_url is None:
            raise ActionFailed(f"{bot.name} has no repo_url; nothing to update")
        async with self._locks[runner.name]:
            # An explicit `update NAME` runs even with `auto_update: false`: that setting
            # is about updating before every start, not about refusing a user's request.
            result = await self._run_update(attrs.evolve(bot, auto_update=True))
            if result.outcome == "failed":
                raise ActionFailed(f"{bot.name} update {result.message}")
            if not (result.changed and runner.active):
                return f"{bot.name} {result.message}"
            run = await self._restart_updated(runner)
        await self._started(runner, run, "restarted")
        return f"{bot.name} {result.message}; restarted"

    async def _restart_updated(self, runner: BotRunner) -> Run:
        """Begin restarting *runner* onto the code just checked out (its start then skips
        the update). Call with the bot's lock held."""
        self._freshly_updated.add(runner.name)
        try:
            return await self._begin(runner, StopReason.UPDATE)
        except BaseException:
            self._freshly_updated.discard(runner.name)
            raise

    _HANDLERS: ClassVar[dict[Action, Callable[[Supervisor, BotRunner], Awaitable[str]]]] = {
        Action.START: _start,
        Action.STOP: _stop,
        Action.RESTART: _restart,
        Action.PAUSE: _pause,
        Action.RESUME: _resume,
        Action.UPDATE: _update_now,
    }

    async def _begin(self, runner: BotRunner, reason: StopReason = StopReason.USER) -> Run:
        """Stop the bot's current run, if any, and begin a new one (caller holds the lock)."""
        if runner.active:
            await runner.stop(reason)
        if self._shutting_down or self._root is None:
            raise ActionFailed("the manager is shutting down")
        return await self._root.start(runner.run)

    async def _started(self, runner: BotRunner, run: Run, verb: str) -> str:
        """Wait for the run's first process and describe it."""
        await run.first_start.wait()
        if run.pid is None:
            why = self._messages.get(runner.name, "") if run.reason is None else run.reason.words
            raise ActionFailed(f"{runner.name} could not start: {why}")
        return f"{runner.name} {verb} (pid {run.pid})"

    def info(self, name: str) -> dict[str, Any]:
        runner = self.runners[name]
        started_at = runner.started_at if runner.pid is not None else None
        info = bot_info(runner.bot, self.records[name], started_at, runner.next_restart)
        return info | (self.sampler.usage(name) if runner.pid else NOT_SAMPLED)

    def all_info(self) -> list[dict[str, Any]]:
        # The runners, not the config: during a reload a removed bot may still be
        # stopping, and an added one may already run.
        return [self.info(name) for name in self.runners]

    # ----- metrics and the status page (issue 15) -----

    async def _bind_web(self) -> Callable[..., Awaitable[None]] | None:
        """Bind ``metrics_listen``, if set; the listener's serve task (h11 loaded only then)."""
        listen, token = metrics.listen_settings(self.config.settings)
        if listen is None:
            return None
        from trio_orchestrator import web

        listeners = await web.bind_web(listen, token, self.config.path)
        self.sampler.keep_sampling("metrics listener")
        where = ", ".join(web.bound_addresses(listeners))
        LOGGER.info("status page and /metrics on http://%s/", where)
        return partial(web.serve_web, listeners, self, token)

    async def look(self) -> None:
        """Someone looks at the figures: fresh CPU/memory samples for a while."""
        await self.sampler.look()

    async def metrics_text(self) -> str:
        """The Prometheus text exposition of every bot and the manager."""
        await self.look()
        manager = await trio.to_thread.run_sync(read_manager_usage)
        bots = []
        for name, runner in self.runners.items():
            usage = self.sampler.tracker.figures.get(name) if runner.pid else None
            bots.append(
                metrics.bot_metrics(
                    name,
                    state=str(runner.state),
                    pid=runner.pid,
                    record=self.records[name],
                    counters=self.counters,
                    usage=usage,
                    cpu_seconds=self.sampler.tracker.cpu_seconds(name),
                    line_counts=self.sink.lines_total,
                    start_time=runner.started_at,
                )
            )
        return metrics.render(bots, manager, _version())

    def log_path(self, name: str) -> Path | None:
        """The output log of a configured bot (None for an unknown name)."""
        bot = self.config.bots.get(name)
        return None if bot is None else self.config.settings.log_directory / f"{bot.name}.log"

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call *listener* after every transition and every CPU/memory sample."""
        self.counters.listeners.append(listener)
        self.sampler.listeners.append(lambda _figures: listener())


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trio-orch")
    except PackageNotFoundError:
        return ""


async def _run_cancellable(
    work: Callable[..., gitupdate.UpdateResult],
    record: Callable[[gitupdate.UpdateResult], Awaitable[None]],
) -> gitupdate.UpdateResult:
    """Run git *work* in a worker thread, then await *record* with its result.

    Not abandoned: git has side effects on the checkout, so we wait for the thread, but
    on cancellation the cancel event makes it kill its git command at once instead of
    running on until ``git_timeout``.

    **Cancellation:** the work ends within a fraction of a second ("failed: cancelled"),
    its outcome is still recorded (shielded), then ``Cancelled`` goes on.
    """
    cancel = threading.Event()

    async def cancel_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancel.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_cancelled)
        with trio.CancelScope(shield=True):
            result = await trio.to_thread.run_sync(partial(work, cancel=cancel))
            await record(result)
        nursery.cancel_scope.cancel()
    return result


def _setup_logging(settings: GlobalSettings, sink: OutputSink) -> list[logging.Handler]:
    """Manager events to ``bot_manager.log`` (through the sink's log files: rotation,
    disk full, reopen) and to the console. Raises: OSError if the log cannot be opened."""
    log_file = sink.log_files.get(_MANAGER_LOG_NAME, settings)
    log_file.open()
    file_handler = LogFileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    console_handler = ConsoleLogHandler(sink)
    # A record logged with extra={"console": False} goes to the file only: the config
    # warnings, which the CLI has printed already.
    console_handler.addFilter(lambda record: getattr(record, "console", True))
    for handler in (file_handler, console_handler):
        handler.addFilter(_one_line)
    console_handler.setFormatter(
        logging.Formatter("%(asctime)s [trio-orch] %(message)s", datefmt="%H:%M:%S")
    )
    handlers: list[logging.Handler] = [file_handler, console_handler]
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in handlers:
            logger.addHandler(handler)
    return handlers


def _one_line(record: logging.LogRecord) -> bool:
    """Drop a record's traceback: trio's accept loop logs EMFILE with one, each time it
    retries, and an expected shortage of descriptors is not a crash."""
    if record.name == "trio.serve_listeners":
        record.exc_info = record.exc_text = None
    return True


def run_manager(config: Config, paths: Paths, color_mode: str, timestamps: bool = False) -> int:
    """``trio-orch start_all``: own the db, run until a signal, exit 0.

    *timestamps* puts a timestamp before each bot line on the console too.

    Start-up (the lock, the db, the log directory) happens here, before trio runs, so its
    errors reach the CLI as plain exceptions.

    Raises:
        ManagerRunning: another manager owns the db.
        StateError: the db is unusable.
    """
    fd_limit = raise_fd_limit()  # first: the db, logs and sockets count against it
    keep_blocks_in_heap()  # a flood's blocks reuse memory instead of faulting in pages
    with contextlib.ExitStack() as stack:
        lock = OwnerLock(paths.db)
        lock.acquire()
        stack.callback(lock.release)
        store = StateStore(paths.db)
        stack.callback(store.close)
        stored = store.load_all()
        printer = Printer(
            color=should_color(color_mode, sys.stdout, os.environ), timestamps=timestamps
        )
        log_files = LogFiles(config.settings.log_directory)
        sink = OutputSink(printer, log_files, sys.stdout.buffer, sys.stderr.buffer)
        try:
            handlers = _setup_logging(config.settings, sink)
        except OSError as exc:
            raise StateError(
                f"cannot write logs in {config.settings.log_directory}: {exc.strerror}"
            ) from None
        stack.callback(_remove_handlers, handlers)
        for warning in config.warnings:
            LOGGER.warning("%s", warning, extra={"console": False})
        _log_fd_limit(fd_limit, len(config.bots))
        supervisor = Supervisor(
            config=config, paths=paths, store=store, stored=stored, sink=sink, adopt_orphans=True
        )
        try:
            # Until the signal task takes SIGINT over, a Ctrl-C raises KeyboardInterrupt;
            # only at checkpoints, where trio can unwind cleanly (raised anywhere, it can
            # leave a nursery waiting forever).
            trio.run(supervisor.run, restrict_keyboard_interrupt_to_checkpoints=True)
        except BaseExceptionGroup as group:
            if group.split(KeyboardInterrupt)[1] is None:
                # The nurseries wrapped it; no bot was started yet.
                raise KeyboardInterrupt from None
            raise
    return 0


def _log_fd_limit(limit: FdLimit, bots: int) -> None:
    if limit.error is not None:
        LOGGER.warning("could not raise the open files limit: %s", limit.error)
    if limit.room_for_bots < bots:
        LOGGER.warning(
            "%s, %d configured: some will fail to start with 'too many open files' "
            "(raise the hard limit: ulimit -Hn, LimitNOFILE= in a systemd unit)",
            limit.describe(),
            bots,
        )
    else:
        LOGGER.info("%s", limit.describe())


def _remove_handlers(handlers: list[logging.Handler]) -> None:
    for handler in handlers:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
