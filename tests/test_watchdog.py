"""Issue 13.2 and 13.3: the hung-bot watchdog and the memory limit.

The rules with a fake clock and RSS reader, then real bots (real clock): one that never
beats is restarted as hung, one that beats is left alone, one that allocates past
max_memory is restarted for memory."""

from __future__ import annotations

import os

import pytest
import trio
from fakes import channel_output
from helpers import make_config, write_bot

from trio_orchestrator.procfs import group_rss_bytes
from trio_orchestrator.runner import BotRunner, BotState
from trio_orchestrator.watchdog import Watchdog, touch

# ----- the rules -----


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_heartbeat_grace_then_timeout(tmp_path):
    beats = tmp_path / "beats"
    touch(beats)
    os.utime(beats, (1000, 1000))
    clock = Clock()
    dog = Watchdog(beats, heartbeat_timeout=2, heartbeat_grace=5, max_memory=None, clock=clock)
    dog.restart_clock()
    clock.now = 1004
    assert dog.check(1) is None  # within the grace
    os.utime(beats, (1004, 1004))
    clock.now = 1005.5
    assert dog.check(1) is None  # beat 1.5 s ago
    clock.now = 1006.5
    verdict = dog.check(1)
    assert verdict.reason == "hung" and "no heartbeat for 2.5s" in verdict.detail


def test_resume_restarts_the_grace(tmp_path):
    beats = tmp_path / "beats"
    touch(beats)
    os.utime(beats, (1000, 1000))
    clock = Clock()
    dog = Watchdog(beats, heartbeat_timeout=1, heartbeat_grace=1, max_memory=None, clock=clock)
    dog.restart_clock()
    clock.now = 1100  # paused for 100 s: the runner does not check a paused bot
    dog.restart_clock()  # resume
    clock.now = 1100.5
    assert dog.check(1) is None
    clock.now = 1102
    assert dog.check(1).reason == "hung"


def test_memory_limit():
    dog = Watchdog(None, None, 0, max_memory=50_000_000, rss=lambda pgid: 80_000_000)
    verdict = dog.check(1)
    assert verdict.reason == "memory"
    assert verdict.detail == "uses 80.0 MB, over max_memory 50.0 MB"
    assert Watchdog(None, None, 0, max_memory=10**9, rss=lambda pgid: 10**6).check(1) is None


def test_group_rss_reads_proc():
    assert group_rss_bytes(os.getpgid(0)) > 1_000_000
    assert group_rss_bytes(2**22 + 12345) == 0


# ----- real bots -----


def watched_runner(tmp_path, code, **bot_settings):
    directory = write_bot(tmp_path / "bot", code)
    config = make_config(
        tmp_path,
        {
            "Bot": {
                "script": "main.py",
                "directory": str(directory),
                "max_restart_attempts": 0,
                "stop_timeout": 2,
                **bot_settings,
            }
        },
    )
    transitions = []

    async def on_transition(runner, transition):
        transitions.append(transition)

    send, receive = trio.open_memory_channel(1000)
    beats = tmp_path / "beats" / "Bot"
    runner = BotRunner(
        bot=config.bots["Bot"],
        on_transition=on_transition,
        output=channel_output(send),
        extra_env=(("TRIO_ORCH_HEARTBEAT_FILE", str(beats)),),
        heartbeat_file=beats,
        watch_interval=0.2,
    )
    return runner, transitions, receive


IDLE_BOT = """
import time
print("up", flush=True)
time.sleep(60)
"""

BEATING_BOT = """
import time
from trio_orchestrator import heartbeat

while True:
    heartbeat.beat()
    time.sleep(0.2)
"""


@pytest.mark.slow
async def test_hung_bot_is_restarted_with_reason_hung(tmp_path):
    runner, transitions, _ = watched_runner(tmp_path, IDLE_BOT, heartbeat_timeout=1)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
    final = transitions[-1]
    assert final.state is BotState.FAILED
    assert final.reason.startswith("hung: no heartbeat for ")
    assert "heartbeat_timeout 1s" in final.reason


@pytest.mark.slow
async def test_heartbeating_bot_is_left_alone(tmp_path):
    runner, _transitions, _ = watched_runner(tmp_path, BEATING_BOT, heartbeat_timeout=1)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(runner.run)
            await run.first_start.wait()
            await trio.sleep(3)
            assert runner.state is BotState.RUNNING and runner.pid == run.pid
            await runner.stop()


@pytest.mark.slow
async def test_bot_over_max_memory_is_restarted_with_reason_memory(tmp_path):
    code = """
    import time
    print("allocating", flush=True)
    data = b"x" * 80_000_000  # written, so resident
    time.sleep(60)
    """
    runner, transitions, _ = watched_runner(
        tmp_path, code, max_memory="50MB", max_restart_attempts=1, restart_delay=0.2
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
    backoff = next(t for t in transitions if t.state is BotState.BACKOFF)
    assert backoff.reason.startswith("memory: uses ")  # the reason "memory"
    assert "over max_memory 50.0 MB" in backoff.reason
    assert transitions[-1].state is BotState.FAILED
    assert runner.restarts == 1
