"""Supervisor: scripted bot histories against fake processes, under a mock clock.

Each test runs the real :class:`Supervisor` (control socket, signal receiver, command
file, a real SQLite db in tmp_path, a real OutputSink) with a fake spawner, ``killpg`` and
git update, drives it through ``execute()`` and ``shutdown()`` on a timeline, then checks
the db's records and history (honcho's tests play scripted process histories the same way).
"""

from __future__ import annotations

import os
import signal
import threading

import attrs
import pytest
import trio
import trio.testing
import yaml
from fakes import FakeBots, jump_when_idle
from helpers import db_rows, history, make_config

from trio_orchestrator.commands import parse_command
from trio_orchestrator.gitupdate import UpdateResult
from trio_orchestrator.output import LogFiles, Printer
from trio_orchestrator.sink import OutputSink
from trio_orchestrator.state import StateStore
from trio_orchestrator.supervisor import Supervisor
from trio_orchestrator.views import Paths

SHUTDOWN = "shutdown"
UP_TO_DATE = UpdateResult("up-to-date", "up to date at c1", "c1", "c1")
UPDATED = UpdateResult("updated", "updated c1 -> c2", "c1", "c2")


@pytest.fixture
def clock():
    """Virtual time, advanced by :func:`fakes.jump_when_idle` (see there why not
    ``autojump_clock``)."""
    return trio.testing.MockClock()


def no_update(bot, **options):
    raise AssertionError(f"{bot.name}: unexpected git update")


class ScriptedUpdate:
    """A fake ``update_checkout`` returning scripted results (then the last one again)."""

    def __init__(self, *results: UpdateResult):
        self.results = list(results)

    def __call__(self, bot, *, protected_dirs, timeout, cancel):
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]


class HangingUpdate:
    """An update that takes until it is cancelled (a git fetch from a dead remote).

    Its thread does not hold the clock while it hangs: virtual time passes. Once it is
    cancelled it holds the clock again until it has returned; else the clock would run
    to the next deadline (a test's time limit) while the thread wakes up.
    """

    def __init__(self):
        self._hanging: list[threading.Event] = []

    @property
    def waiting(self) -> int:
        return sum(1 for cancel in self._hanging if not cancel.is_set())

    def __call__(self, bot, *, protected_dirs, timeout, cancel):
        self._hanging.append(cancel)
        try:
            assert cancel.wait(10), "the hanging update was never cancelled"
        finally:
            self._hanging.remove(cancel)
        return UpdateResult("failed", "failed: cancelled", "c1", None)


@attrs.define
class Harness:
    """A supervisor of fake bots on a real db in *directory*."""

    directory: object
    bots: dict[str, dict]
    scripts: dict[str, list[tuple[float, int]]]
    update: object = no_update
    settings: dict = attrs.Factory(dict)
    stop_delays: dict[str, float] = attrs.Factory(dict)
    fakes: FakeBots = attrs.field(init=False)
    supervisor: Supervisor = attrs.field(init=False)
    console: list = attrs.Factory(list)
    # (seconds from start-up when answered, the reply), one per command of the timeline
    replies: dict[int, tuple[float, dict]] = attrs.Factory(dict)

    def __attrs_post_init__(self):
        self.fakes = FakeBots(self.scripts, self.stop_delays)

    def build(self) -> Supervisor:
        entries = {
            name: {"script": "main.py", "directory": ".", **s} for name, s in self.bots.items()
        }
        # Polls of the command file are clock jumps and thread calls: rare unless wanted.
        settings = {"command_poll_interval": 1000, **self.settings}
        config = make_config(self.directory, entries, **settings)
        paths = Paths.resolve(self.directory / "bot_config.yaml")
        store = StateStore(paths.db)
        # Real files: the console writer needs file descriptors.
        self.console = [(self.directory / name).open("wb") for name in ("out", "err")]
        sink = OutputSink(
            Printer(color=False), LogFiles(config.settings.log_directory), *self.console
        )
        self.supervisor = Supervisor(
            config,
            paths,
            store,
            store.load_all(),
            sink,
            update=self.update,
            spawn=self.fakes.spawn,
            killpg=self.fakes.killpg,
        )
        return self.supervisor

    async def command(self, index: int, line: str, t0: float) -> None:
        reply = await self.supervisor.execute(parse_command(line))
        self.replies[index] = (trio.current_time() - t0, reply)

    async def play(self, timeline: list[tuple], limit: float = 1000) -> None:
        """Run the supervisor and send each command at its time (seconds from start-up),
        concurrently (or call it, if it is a function); once all are answered, shut down
        if the timeline did not. All of it within *limit* virtual seconds.

        The clock driver outlives the ``fail_after``: a test that runs out of time still
        unwinds (the supervisor's clean-up waits on the clock too) and fails, not hangs.
        """
        supervisor = self.build()
        try:
            async with trio.open_nursery() as clock_driver:
                clock_driver.start_soon(
                    jump_when_idle, trio.lowlevel.current_clock(), self.threads_busy
                )
                with trio.fail_after(limit):
                    await self._play(supervisor, timeline)
                clock_driver.cancel_scope.cancel()
        finally:
            supervisor.store.close()
            for stream in self.console:
                stream.close()

    def threads_busy(self) -> bool:
        # The db's limiter, and the default one (git updates, /proc scans, the sink's
        # writes, the command file), less the threads of updates that hang on purpose.
        busy = self.supervisor._limiter.borrowed_tokens
        busy += trio.to_thread.current_default_thread_limiter().borrowed_tokens
        return busy > getattr(self.update, "waiting", 0)

    async def _play(self, supervisor: Supervisor, timeline: list[tuple]) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            t0 = trio.current_time()
            async with trio.open_nursery() as commands:
                for index, (at, line, *_) in enumerate(timeline):
                    await trio.sleep_until(t0 + at)
                    if line == SHUTDOWN:
                        nursery.start_soon(supervisor.shutdown)
                    elif callable(line):  # something else happens (a signal, a file)
                        line()
                    else:
                        commands.start_soon(self.command, index, line, t0)
            if not supervisor._shutting_down:  # every command answered: now
                await supervisor.shutdown()

    def check_replies(self, timeline: list[tuple]) -> None:
        """Each command's reply against the expected reply given in the timeline."""
        for index, (_, _, *expected) in enumerate(timeline):
            if expected:
                at, reply = self.replies[index]
                check_reply(reply, at, expected[0])

    def rows(self) -> dict[str, dict]:
        return db_rows(self.directory / "bot_config.yaml")

    def events(self, name: str) -> list[str]:
        return [event for event, _ in history(self.directory / "bot_config.yaml", name)]


# ----- scripted histories -----

CRASH = (1, 1)  # runs 1 s, exits with code 1
FOREVER = (1e6, 0)


@attrs.frozen
class Case:
    """Bots (settings), their scripted runs ((seconds until exit, exit code), then
    forever), a timeline of ``(seconds from start-up, command[, expected reply])``, and
    what the db must say after the shutdown that ends the timeline: fields of each
    bot's record and its history events."""

    bots: dict[str, dict]
    scripts: dict[str, list[tuple[float, int]]]
    timeline: list[tuple]
    records: dict[str, dict]
    events: dict[str, list[str]]
    stop_delays: dict[str, float] = attrs.Factory(dict)
    update: object = no_update


RUN = ["starting", "running"]
STOP = ["stopping", "stopped"]
SHUT_DOWN = {"state": "stopped", "preserved_state": 1, "is_running": 0, "pid": None}
STOPPED_BY_USER = {"state": "stopped", "preserved_state": 0, "last_exit_reason": "stopped by user"}
REPO = {"repo_url": "https://example.invalid/bot.git"}

CASES = {
    "crash-restarts-then-user-restart": Case(
        {"A": {"restart_delay": 5, "max_restart_attempts": 3}},
        {"A": [CRASH, CRASH]},
        [
            (20, "status A", {"state": "running", "start_count": 3, "restarts": 2}),
            (30, "restart A", {"code": 0, "message": "A restarted (pid "}),
            (40, "status A", {"state": "running", "start_count": 4, "restarts": 0}),
        ],
        {
            "A": {
                **SHUT_DOWN,
                "start_count": 4,  # the first start, two automatic restarts, the user's
                "restarts": 0,  # a user restart begins a new count
                "last_exit_code": -signal.SIGTERM,
                "last_exit_reason": "stopped by the manager's shutdown",
            }
        },
        {"A": [*RUN, "backoff"] * 2 + RUN + STOP + RUN + STOP},
    ),
    "failed-after-max-attempts-then-user-start": Case(
        {"A": {"restart_delay": 2, "max_restart_attempts": 2}},
        {"A": [CRASH, CRASH, CRASH]},
        [
            (20, "status A", {"state": "failed", "restarts": 2, "last_exit_code": 1}),
            (30, "start A", {"code": 0, "message": "A started (pid "}),
            (31, "status A", {"state": "running", "restarts": 0, "start_count": 4}),
        ],
        {"A": {**SHUT_DOWN, "start_count": 4, "restarts": 0}},
        {"A": [*RUN, "backoff"] * 2 + [*RUN, "failed"] + RUN + STOP},
    ),
    "exits-the-policy-does-not-restart": Case(
        {"A": {"restart": "never"}, "B": {"restart": "on-failure"}},
        {"A": [(1, 3)], "B": [(1, 0)]},
        [(10, "start A", {"code": 0})],
        {
            "A": {**SHUT_DOWN, "start_count": 2},  # started again by the user: preserved
            "B": {"state": "exited", "preserved_state": 0, "last_exit_code": 0},
        },
        {"A": [*RUN, "exited", *RUN, *STOP], "B": [*RUN, "exited"]},
    ),
    "stop-during-backoff": Case(
        {"A": {"restart_delay": 100}},
        {"A": [(1, 3)]},
        [
            (10, "stop A", {"code": 0, "message": "A stopped", "at": 10}),
            (20, "stop A", {"code": 1, "message": "A is not running (state stopped)"}),
        ],
        {"A": {**STOPPED_BY_USER, "start_count": 1, "restarts": 1, "last_exit_code": 3}},
        {"A": [*RUN, "backoff", "stopped"]},  # no process to stop: never `stopping`
    ),
    "second-stop-while-stopping": Case(
        {"A": {}},
        {"A": []},
        [
            (10, "stop A", {"code": 0, "message": "A stopped", "at": 15}),
            # Waits for the first stop (the bot's lock), then finds nothing to stop.
            (12, "stop A", {"code": 1, "message": "A is not running", "at": 15}),
        ],
        {"A": {**STOPPED_BY_USER, "start_count": 1, "last_exit_code": -signal.SIGTERM}},
        {"A": RUN + STOP},
        stop_delays={"A": 5},
    ),
    "preserved-on-shutdown-only-if-up": Case(
        {"Up": {}, "Paused": {}, "Stopped": {}, "Exited": {"restart": "never"}},
        {"Up": [], "Paused": [], "Stopped": [], "Exited": [(1, 0)]},
        [(5, "pause Paused", {"code": 0}), (5, "stop Stopped", {"code": 0})],
        {
            "Up": {**SHUT_DOWN, "last_exit_reason": "stopped by the manager's shutdown"},
            "Paused": {**SHUT_DOWN, "start_count": 1},
            "Stopped": STOPPED_BY_USER,
            "Exited": {"state": "exited", "preserved_state": 0},
        },
        {"Paused": [*RUN, "paused", *STOP], "Stopped": RUN + STOP, "Exited": [*RUN, "exited"]},
    ),
    "update-with-a-new-commit-restarts": Case(
        {"A": REPO},
        {"A": []},
        [(10, "update A", {"code": 0, "message": "A updated c1 -> c2; restarted", "at": 10.1})],
        {"A": {**SHUT_DOWN, "start_count": 2, "update_commit": "c2"}},
        # The update's restart skips the update before the start: only two in all.
        {"A": ["starting", "update", "running", "update", *STOP, *RUN, *STOP]},
        update=ScriptedUpdate(UP_TO_DATE, UPDATED),
    ),
    "update-without-a-new-commit-does-not-restart": Case(
        {"A": REPO},
        {"A": []},
        [(10, "update A", {"code": 0, "message": "A up to date at c1"})],
        {"A": {**SHUT_DOWN, "start_count": 1, "update_commit": "c1"}},
        {"A": ["starting", "update", "running", "update", *STOP]},
        update=ScriptedUpdate(UP_TO_DATE),
    ),
}


def check_reply(reply: dict, at: float, expected: dict) -> None:
    """Top-level keys compare equal, ``message`` as a prefix, ``at`` as a time, and the
    rest against the one bot the reply describes."""
    for key, value in expected.items():
        if key == "at":
            assert at == pytest.approx(value, abs=0.5), reply
        elif key == "message":
            assert reply["message"].startswith(value), reply
        elif key in ("code", "ok"):
            assert reply[key] == value, reply
        else:
            assert reply["bot"][key] == value, (key, reply)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_scripted_history(tmp_path, clock, case):
    if isinstance(case.update, ScriptedUpdate):
        case = attrs.evolve(case, update=ScriptedUpdate(*case.update.results))
    harness = Harness(tmp_path, case.bots, case.scripts, case.update, stop_delays=case.stop_delays)
    await harness.play(case.timeline)
    harness.check_replies(case.timeline)
    rows = harness.rows()
    for name, expected in case.records.items():
        assert {key: rows[name][key] for key in expected} == expected, name
    for name, expected in case.events.items():
        assert harness.events(name) == expected, name


# ----- shutdown, intake, restore -----


async def test_shutdown_while_a_bot_starts(tmp_path, clock):
    # A's git update hangs: A is `starting` when the shutdown comes, and never spawned.
    update = HangingUpdate()
    harness = Harness(tmp_path, {"A": REPO, "B": {}}, {"A": [], "B": []}, update)
    await harness.play([(5, SHUTDOWN)])
    assert harness.fakes["A"].starts == []
    rows = harness.rows()
    assert rows["A"]["state"] == "stopped" and rows["A"]["start_count"] == 0
    assert rows["A"]["preserved_state"] == 1  # it was on its way up: back next time
    assert harness.events("A") == ["starting", "update", "stopped"]  # cancelled, recorded
    assert rows["B"]["preserved_state"] == 1 and rows["B"]["start_count"] == 1


async def test_an_update_cancelled_by_the_shutdown_is_recorded(tmp_path, clock):
    harness = Harness(tmp_path, {"A": REPO}, {"A": []}, HangingUpdate())
    await harness.play([(5, SHUTDOWN)])
    assert harness.rows()["A"]["update_outcome"] == "failed: cancelled"
    assert harness.events("A") == ["starting", "update", "stopped"]


async def test_a_reload_applies_the_new_hook_timeout_and_manager_log_rotation(tmp_path, clock):
    harness = Harness(tmp_path, {"A": {}}, {"A": []}, settings={"hook_timeout": 5})
    settings = {"log_directory": "logs", "command_poll_interval": 1000, "hook_timeout": 7}
    settings |= {"log_max_bytes": 2000, "log_backups": 2}
    document = {"bots": {"A": {"script": "main.py", "directory": "."}}, "global_settings": settings}

    def edit():
        (tmp_path / "bot_config.yaml").write_text(yaml.safe_dump(document))

    await harness.play([(5, edit), (6, "reload", {"ok": True})])
    harness.check_replies([(5, edit), (6, "reload", {"ok": True})])
    assert harness.supervisor._hooks.timeout == 7
    manager_log = harness.supervisor.sink.log_files._files["bot_manager"]
    assert (manager_log.max_bytes, manager_log.backups) == (2000, 2)


async def test_sigterm_shuts_down_and_preserves(tmp_path, clock):
    harness = Harness(tmp_path, {"A": {}}, {"A": []})
    await harness.play([(5, lambda: os.kill(os.getpid(), signal.SIGTERM))])
    assert harness.rows()["A"]["preserved_state"] == 1
    assert harness.events("A") == RUN + STOP


async def test_commands_during_shutdown_are_refused_and_the_file_is_not_read(tmp_path, clock):
    commands = tmp_path / "bot_commands.txt"

    def append(line: str):
        def write():
            with commands.open("a") as file:
                file.write(line + "\n")

        return write

    harness = Harness(
        tmp_path,
        {"A": {}, "B": {}},
        {"A": [], "B": []},
        settings={"command_poll_interval": 1},
        stop_delays={"A": 10},  # A takes 10 s to stop: the shutdown lasts that long
    )
    timeline = [
        (2, append("stop B")),  # read within a second
        (5, SHUTDOWN),
        (6, "restart A", {"code": 1, "message": "the manager is shutting down"}),
        (6, "stop B", {"code": 1, "message": "the manager is shutting down"}),
        (6, "status A", {"code": 0, "state": "stopping"}),  # questions are still answered
        (6, append("start B")),  # never read
    ]
    await harness.play(timeline)
    harness.check_replies(timeline)
    rows = harness.rows()
    assert rows["A"]["preserved_state"] == 1 and rows["A"]["start_count"] == 1
    assert rows["B"]["preserved_state"] == 0 and rows["B"]["start_count"] == 1
    assert harness.events("B") == RUN + STOP
    assert "start B" in commands.read_text()


async def test_the_next_run_restores_what_was_up_at_shutdown(tmp_path, clock):
    bots = {
        "Up": {},
        "Paused": {},
        "UserStopped": {},
        "Exited": {"restart": "never"},
        "Failed": {"max_restart_attempts": 0},
        "Lazy": {"autostart": False},
    }
    scripts = {name: [] for name in bots} | {"Exited": [(1, 0)], "Failed": [CRASH]}
    first = Harness(tmp_path, bots, scripts)
    await first.play([(5, "pause Paused"), (5, "stop UserStopped")])
    assert {name: row["state"] for name, row in first.rows().items()} == {
        "Up": "stopped",
        "Paused": "stopped",
        "UserStopped": "stopped",
        "Exited": "exited",
        "Failed": "failed",
    }  # Lazy was never started: no record

    more = {"New": {}, "NewLazy": {"autostart": False}}
    second = Harness(tmp_path, bots | more, {})
    second.build()
    chosen = {
        name
        for name, bot in second.supervisor.config.bots.items()
        if second.supervisor._should_restore(bot)
    }
    assert chosen == {"Up", "Paused", "New"}
    await second.play([(5, "list")])
    started = {name for name, fake in second.fakes.bots.items() if fake.starts}
    assert started == {"Up", "Paused", "New"}
    rows = second.rows()
    assert rows["Up"]["start_count"] == 2  # the count goes on across runs
    assert rows["Paused"]["state"] == "stopped" and rows["Paused"]["preserved_state"] == 1
    assert rows["UserStopped"]["start_count"] == 1 and not rows["UserStopped"]["preserved_state"]
