"""Issue 13.4: event hooks. Which transitions fire which hook, then real hook processes:
the environment they get, a slow hook killed at hook_timeout without blocking the
caller, a missing executable, and the bound on waiting hooks."""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import trio
from helpers import pid_alive

from trio_orchestrator.config import Hooks
from trio_orchestrator.hooks import HookEvent, HookRunner, transition_events
from trio_orchestrator.runner import BotState, StopReason, Transition

# ----- which events -----


def test_transition_events():
    crash = Transition(BotState.BACKOFF, None, 3, "exited with code 3")
    assert transition_events(crash) == ["exit", "restart"]
    gave_up = Transition(BotState.FAILED, None, -9, "killed by SIGKILL")
    assert transition_events(gave_up) == ["exit", "failed"]
    cannot_start = Transition(BotState.FAILED, reason="cannot start: No such file")
    assert transition_events(cannot_start) == ["failed"]
    assert transition_events(Transition(BotState.EXITED, None, 0, "exited with code 0")) == ["exit"]
    stopped = Transition(
        BotState.STOPPED, None, -15, "stopped by user", stop_reason=StopReason.USER
    )
    assert transition_events(stopped) == []
    assert transition_events(Transition(BotState.RUNNING, pid=5)) == []


# ----- real hooks -----

# Appends its TRIO_ORCH_* variables to the file named by its first argument, as JSON.
RECORDER = textwrap.dedent(
    """\
    import json, os, sys
    with open(sys.argv[1], "a") as out:
        variables = {k: v for k, v in os.environ.items() if k.startswith("TRIO_ORCH_")}
        out.write(json.dumps(variables) + "\\n")
    """
)


def recorded(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_each_hook_gets_the_event_in_its_environment(tmp_path):
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    out = tmp_path / "events.jsonl"
    command = (sys.executable, str(script), str(out))
    hooks = Hooks(on_exit=command, on_restart=command, on_failed=command, on_update=command)
    runner = HookRunner(timeout=10, cwd=tmp_path)
    events = [
        HookEvent("exit", "Bot", "exited with code 3", 3, "c1", time="T"),
        HookEvent("restart", "Bot", "exited with code 3", 3, "c1", time="T"),
        HookEvent("failed", "Bot", "hung: no heartbeat", -15, None, time="T"),
        HookEvent("update", "Bot", "updated a -> b", None, "b" * 40, "a" * 40, time="T"),
        HookEvent("rollback", "Bot", "rolled back", None, "a" * 40, "b" * 40, time="T"),
    ]
    with trio.fail_after(20):
        async with runner.running():
            for event in events:
                assert runner.fire(hooks, event)
        # leaving running() waits for the hooks
    seen = sorted(
        recorded(out),
        key=lambda v: ["exit", "restart", "failed", "update", "rollback"].index(
            v["TRIO_ORCH_EVENT"]
        ),
    )
    assert seen == [
        {
            "TRIO_ORCH_EVENT": event.event,
            "TRIO_ORCH_BOT": "Bot",
            "TRIO_ORCH_REASON": event.reason,
            "TRIO_ORCH_EXIT_CODE": "" if event.exit_code is None else str(event.exit_code),
            "TRIO_ORCH_COMMIT": event.commit or "",
            "TRIO_ORCH_PREVIOUS_COMMIT": event.previous_commit or "",
            "TRIO_ORCH_TIME": "T",
        }
        for event in events
    ]


async def test_unconfigured_event_runs_nothing(tmp_path):
    runner = HookRunner(timeout=1)
    async with runner.running():
        assert not runner.fire(Hooks(), HookEvent("exit", "Bot"))


async def test_slow_hook_does_not_block_and_is_killed_at_the_timeout(tmp_path, caplog):
    pid_file = tmp_path / "pid"
    slow = ("sh", "-c", f"echo $$ > {pid_file}; echo started; sleep 30 & wait")
    runner = HookRunner(timeout=1)
    caplog.set_level(logging.INFO, logger="trio_orchestrator")
    with trio.fail_after(10):
        async with runner.running():
            started = trio.current_time()
            assert runner.fire(Hooks(on_failed=slow), HookEvent("failed", "Bot"))
            assert trio.current_time() - started < 0.5  # fire() never waits for the hook
            while not pid_file.exists() or not pid_file.read_text().strip():
                await trio.sleep(0.05)
            hook_pid = int(pid_file.read_text())
            assert pid_alive(hook_pid)
            while runner.pending:
                await trio.sleep(0.05)
            elapsed = trio.current_time() - started
    assert 0.9 < elapsed < 3
    assert not pid_alive(hook_pid)
    assert "Bot failed hook 'sh' timed out after 1s; killed: started" in caplog.text


async def test_failing_and_missing_hooks_are_logged(tmp_path, caplog):
    runner = HookRunner(timeout=5)
    with trio.fail_after(10):
        async with runner.running():
            runner.fire(Hooks(on_exit=("sh", "-c", "echo oops; exit 4")), HookEvent("exit", "A"))
            runner.fire(Hooks(on_exit=(str(tmp_path / "missing"),)), HookEvent("exit", "B"))
    assert "A exit hook 'sh' failed with exit code 4: oops" in caplog.text
    assert "B exit hook" in caplog.text and "could not start" in caplog.text


async def test_waiting_hooks_are_bounded(tmp_path, caplog):
    runner = HookRunner(timeout=0.5, max_running=1, max_pending=3)
    sleeper = Hooks(on_restart=("sleep", "10"))
    with trio.fail_after(10):
        async with runner.running():
            fired = [runner.fire(sleeper, HookEvent("restart", "Bot")) for _ in range(5)]
    assert fired == [True, True, True, False, False]
    assert runner.dropped == 2
    assert "hook dropped: 3 hooks already waiting (2 dropped so far)" in caplog.text
