"""BotRunner: restart policy and timing against a fake process under autojump_clock,
then the real thing: process groups, signals, pause, grandchildren."""

from __future__ import annotations

import itertools
import signal

import pytest
import trio
from fakes import FakeBot, channel_output, no_group
from helpers import group_members, make_config, pid_alive, state_letter, until, write_bot

from trio_orchestrator.errors import ActionFailed
from trio_orchestrator.runner import BotRunner, BotState


def make_runner(tmp_path, fake, **bot_settings):
    config = make_config(tmp_path, {"Bot": {"script": "main.py", "directory": ".", **bot_settings}})
    transitions = []

    async def on_transition(runner, transition):
        transitions.append((trio.current_time(), transition.state, transition.exit_code))

    send, _receive = trio.open_memory_channel(100)
    runner = BotRunner(
        bot=config.bots["Bot"],
        on_transition=on_transition,
        output=channel_output(send),
        spawn=fake.spawn,
        killpg=no_group,
    )
    return runner, transitions


async def started_pid(nursery, runner):
    run = await nursery.start(runner.run)
    await run.first_start.wait()
    return run.pid


def states(transitions):
    return [state for _, state, _ in transitions]


async def test_crash_restarts_after_delay_then_fails(tmp_path, autojump_clock):
    fake = FakeBot([(1, 1)] * 10, first_pid=10_000)
    runner, transitions = make_runner(
        tmp_path, fake, restart_delay=5, max_restart_attempts=3, restart="on-failure"
    )
    async with trio.open_nursery() as nursery:
        run = await nursery.start(runner.run)
        await run.first_start.wait()
        assert run.pid == 10_000
    assert runner.state is BotState.FAILED
    assert runner.restarts == 3
    assert len(fake.starts) == 4  # the user start plus three automatic restarts
    gaps = [b - a for a, b in itertools.pairwise(fake.starts)]
    assert gaps == pytest.approx([6, 6, 6])  # 1 s run + 5 s delay
    assert states(transitions).count(BotState.BACKOFF) == 3
    assert transitions[-1][2] == 1


async def test_healthy_run_resets_the_consecutive_count(tmp_path, autojump_clock):
    # Each run lasts 10 s (healthy at 5 s): it crashes forever but never `failed`.
    fake = FakeBot([(10, 1)] * 6)
    runner, _ = make_runner(tmp_path, fake, restart_delay=1, max_restart_attempts=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(6 * 11 + 5)
        assert runner.state is BotState.RUNNING
        assert runner.restarts == 6  # counts every automatic restart since the user start
        await runner.stop()
    assert runner.state is BotState.STOPPED


@pytest.mark.parametrize(
    ("policy", "code", "restarted"),
    [
        ("on-failure", 0, False),
        ("on-failure", 3, True),
        ("on-failure", -9, True),
        ("always", 0, True),
        ("never", 1, False),
    ],
)
async def test_restart_policies(tmp_path, autojump_clock, policy, code, restarted):
    fake = FakeBot([(1, code)])
    runner, _ = make_runner(tmp_path, fake, restart=policy, restart_delay=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(10)
        if restarted:
            assert len(fake.starts) == 2 and runner.state is BotState.RUNNING
            await runner.stop()
        else:
            assert len(fake.starts) == 1 and runner.state is BotState.EXITED
            assert runner.last_exit_code == code


async def test_stop_during_restart_delay(tmp_path, autojump_clock):
    fake = FakeBot([(1, 1)])
    runner, _transitions = make_runner(tmp_path, fake, restart_delay=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(2)
        assert runner.state is BotState.BACKOFF
        await runner.stop()
    assert runner.state is BotState.STOPPED
    assert len(fake.starts) == 1
    with pytest.raises(ActionFailed):
        await runner.stop()


async def test_zero_attempts_fails_at_first_crash(tmp_path, autojump_clock):
    fake = FakeBot([(1, 1)])
    runner, _ = make_runner(tmp_path, fake, max_restart_attempts=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
    assert runner.state is BotState.FAILED and runner.restarts == 0


# ----- real processes (real clock) -----


def real_runner(tmp_path, code, **bot_settings):
    directory = write_bot(tmp_path / "bot", code)
    config = make_config(
        tmp_path, {"Bot": {"script": "main.py", "directory": str(directory), **bot_settings}}
    )
    send, receive = trio.open_memory_channel(1000)
    transitions = []

    async def on_transition(runner, transition):
        transitions.append(transition.state)

    runner = BotRunner(
        bot=config.bots["Bot"], on_transition=on_transition, output=channel_output(send)
    )
    return runner, receive, transitions


async def lines_until(receive, text):
    seen = []
    async for _stream, block in receive:
        seen.extend(block.decode().split("\n"))
        if any(text in line for line in seen):
            return seen
    return seen


async def test_real_bot_runs_in_its_own_session_and_stops(tmp_path):
    runner, receive, transitions = real_runner(
        tmp_path,
        """
        import os, time
        print("ready", os.getpid(), os.getpgid(0), os.getsid(0), flush=True)
        time.sleep(60)
        """,
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            pid = await started_pid(nursery, runner)
            seen = await lines_until(receive, "ready")
            assert seen[0] == f"ready {pid} {pid} {pid}"  # pid == pgid == sid: no wrapper
            await runner.stop()
    assert not pid_alive(pid)
    assert transitions == [
        BotState.STARTING,
        BotState.RUNNING,
        BotState.STOPPING,
        BotState.STOPPED,
    ]


async def test_bot_ignoring_sigterm_is_killed_after_stop_timeout(tmp_path):
    runner, receive, _ = real_runner(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring", flush=True)
        time.sleep(60)
        """,
        stop_timeout=1,
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            pid = await started_pid(nursery, runner)
            await lines_until(receive, "ignoring")
            started = trio.current_time()
            await runner.stop()
            elapsed = trio.current_time() - started
    assert 0.9 < elapsed < 5
    assert not pid_alive(pid)
    assert runner.last_exit_code == -signal.SIGKILL


async def test_grandchildren_are_stopped_with_the_bot(tmp_path):
    runner, receive, _ = real_runner(
        tmp_path,
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        print("child", child.pid, flush=True)
        time.sleep(60)
        """,
        stop_timeout=1,
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            pid = await started_pid(nursery, runner)
            seen = await lines_until(receive, "child")
            grandchild = int(seen[-1].split()[1])
            assert pid_alive(grandchild)
            await runner.stop()
    assert not pid_alive(grandchild)
    assert group_members(pid) == []


async def test_pause_stops_the_group_and_stop_still_works(tmp_path):
    runner, receive, _ = real_runner(
        tmp_path,
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (print("bye", flush=True), sys.exit(0)))
        print("up", flush=True)
        while True:
            time.sleep(0.05)
        """,
    )

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            pid = await started_pid(nursery, runner)
            await lines_until(receive, "up")
            await runner.pause()
            assert runner.state is BotState.PAUSED
            await until(lambda: state_letter(pid) == b"T")  # SIGSTOP takes a moment
            with pytest.raises(ActionFailed):
                await runner.pause()
            await runner.resume()
            await until(lambda: state_letter(pid) in (b"S", b"R"))
            await runner.pause()
            await runner.stop()  # a paused bot is continued so it can handle SIGTERM
            assert "bye" in await lines_until(receive, "bye")
    assert runner.last_exit_code == 0


async def test_real_crash_is_restarted_after_the_delay(tmp_path):
    runner, _receive, _ = real_runner(
        tmp_path,
        """
        import sys
        print("crash", flush=True)
        sys.exit(3)
        """,
        restart_delay=0.5,
        max_restart_attempts=2,
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
    assert runner.state is BotState.FAILED
    assert runner.restarts == 2 and runner.last_exit_code == 3


async def test_missing_directory_fails_without_retry(tmp_path):
    config = make_config(tmp_path, {"Bot": {"script": "main.py", "directory": "nowhere"}})
    send, _ = trio.open_memory_channel(10)

    async def on_transition(runner, transition):
        pass

    runner = BotRunner(
        bot=config.bots["Bot"], on_transition=on_transition, output=channel_output(send)
    )
    async with trio.open_nursery() as nursery:
        run = await nursery.start(runner.run)
        await run.first_start.wait()
        assert run.pid is None
    assert runner.state is BotState.FAILED


async def test_a_chatty_bot_costs_a_block_per_tick_and_its_last_words_come_before_its_exit(
    tmp_path,
):
    runner, receive, transitions = real_runner(
        tmp_path,
        """
        import time
        for i in range(200):
            print(f"line {i}", flush=True)
            time.sleep(0.002)
        print("last words", flush=True)
        """,
        restart="never",
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
    # The runner had reported the exit by now: everything the bot wrote was already here.
    assert transitions[-1] is BotState.EXITED
    blocks = []
    while True:
        try:
            blocks.append(receive.receive_nowait()[1])
        except trio.WouldBlock:
            break
    lines = b"\n".join(blocks).decode().split("\n")
    assert lines == [f"line {i}" for i in range(200)] + ["last words"]
    # ~0.5 s of a line every 2 ms: read a 20 ms tick at a time, not line by line.
    assert len(blocks) < 100


async def test_a_traceback_on_stderr_comes_after_the_stdout_lines_before_it(tmp_path):
    runner, receive, _ = real_runner(
        tmp_path,
        """
        import time
        for i in range(100):
            print(f"line {i}", flush=True)
            time.sleep(0.002)
        raise RuntimeError("boom")
        """,
        restart="never",
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
    written = []
    while True:
        try:
            stream, block = receive.receive_nowait()
        except trio.WouldBlock:
            break
        written.extend((stream, line) for line in block.decode().split("\n"))
    assert written[:100] == [("stdout", f"line {i}") for i in range(100)]
    assert written[100] == ("stderr", "Traceback (most recent call last):")
