"""Issue 13.1: restart backoff, restart window, failed cooldown, no restart timer while
paused. The rules alone (RestartBudget, plain numbers), then a BotRunner driven by a fake
process under autojump_clock."""

from __future__ import annotations

import itertools
import signal

import pytest
import trio
from fakes import FakeBot
from test_runner import make_runner

from trio_orchestrator.backoff import RestartBudget
from trio_orchestrator.runner import BotState

# ----- the rules -----


def test_fixed_delay_by_default():
    budget = RestartBudget(max_attempts=3, delay=5)
    assert [budget.record(0) for _ in range(3)] == [5, 5, 5]
    assert budget.exhausted(0)


def test_backoff_sequence_and_cap():
    budget = RestartBudget(max_attempts=10, delay=1, backoff=2, max_delay=20)
    assert [budget.record(0) for _ in range(7)] == [1, 2, 4, 8, 16, 20, 20]


def test_cap_never_lowers_the_base_delay_and_huge_exponents_are_capped():
    assert RestartBudget(max_attempts=5, delay=60, backoff=1, max_delay=10).record(0) == 60
    budget = RestartBudget(max_attempts=10**6, delay=1, backoff=10, max_delay=300)
    assert budget.delay_for(10**5) == 300


def test_healthy_run_resets_only_without_a_window():
    plain = RestartBudget(max_attempts=2, delay=1)
    plain.record(0)
    plain.record(1)
    plain.healthy_run()
    assert plain.count(2) == 0
    windowed = RestartBudget(max_attempts=2, delay=1, window=60)
    windowed.record(0)
    windowed.record(1)
    windowed.healthy_run()
    assert windowed.count(2) == 2 and windowed.exhausted(2)


def test_window_forgets_old_restarts():
    budget = RestartBudget(max_attempts=2, delay=1, window=30)
    budget.record(0)
    budget.record(20)
    assert budget.exhausted(29)
    assert budget.count(31) == 1 and not budget.exhausted(31)
    assert budget.describe(31) == "1/2 within 30s"
    budget.reset()
    assert budget.count(31) == 0


# ----- a runner under autojump_clock -----


def gaps(fake):
    return [round(b - a, 6) for a, b in itertools.pairwise(fake.starts)]


async def test_runner_backs_off_exponentially_up_to_the_cap(tmp_path, autojump_clock):
    fake = FakeBot([(0, 1)] * 10)
    runner, _ = make_runner(
        tmp_path,
        fake,
        restart_delay=1,
        restart_backoff=2,
        max_restart_delay=5,
        max_restart_attempts=6,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
    assert gaps(fake) == [1, 2, 4, 5, 5, 5]
    assert runner.state is BotState.FAILED and runner.restarts == 6


async def test_runner_window_counts_crashes_despite_healthy_runs(tmp_path, autojump_clock):
    # 10 s runs are "healthy" (healthy_uptime 5 s), but 3 crashes within 30 s still fail.
    fake = FakeBot([(10, 1)] * 10)
    runner, _ = make_runner(
        tmp_path, fake, restart_delay=1, max_restart_attempts=2, restart_window=30
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
    assert runner.state is BotState.FAILED
    assert len(fake.starts) == 3


async def test_runner_window_forgets_old_failures(tmp_path, autojump_clock):
    # Crashes 21 s apart: never more than 1 in a 30 s window besides the newest.
    fake = FakeBot([(20, 1)] * 20)
    runner, _ = make_runner(
        tmp_path, fake, restart_delay=1, max_restart_attempts=2, restart_window=30
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(200)
        assert runner.state in (BotState.RUNNING, BotState.BACKOFF)
        assert runner.restarts >= 8
        await runner.stop()


async def test_failed_bot_is_retried_after_the_cooldown(tmp_path, autojump_clock):
    fake = FakeBot([(1, 1)] * 4)  # then runs for ever
    runner, _ = make_runner(
        tmp_path, fake, restart_delay=1, max_restart_attempts=1, failed_cooldown=50
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(10)
        assert runner.state is BotState.FAILED and len(fake.starts) == 2
        assert runner.active  # the run goes on: a stop cancels the cooldown
        await trio.sleep(43.5)  # failed at 3 s, retried at 53 s
        assert len(fake.starts) == 3  # with a fresh count: one more restart allowed
        await trio.sleep(6)
        assert runner.state is BotState.FAILED and len(fake.starts) == 4
        await trio.sleep(50)
        assert runner.state is BotState.RUNNING and len(fake.starts) == 5
        await runner.stop()
    assert gaps(fake) == [2, 51, 2, 51]
    assert runner.state is BotState.STOPPED


async def test_stop_during_cooldown(tmp_path, autojump_clock):
    fake = FakeBot([(1, 1)] * 4)
    runner, _ = make_runner(tmp_path, fake, max_restart_attempts=0, failed_cooldown=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(5)
        assert runner.state is BotState.FAILED
        started = trio.current_time()
        await runner.stop()
        assert trio.current_time() - started < 1
    assert runner.state is BotState.STOPPED and len(fake.starts) == 1


def only_sigstop(pgid, sig):
    """A fake group that can be paused but has no members to continue or end."""
    if sig != signal.SIGSTOP:
        raise ProcessLookupError


async def test_no_restart_timer_runs_while_paused(tmp_path, autojump_clock):
    fake = FakeBot([(5, -9)])  # killed from outside while paused
    runner, _ = make_runner(tmp_path, fake, restart_delay=2)
    runner.killpg = only_sigstop
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(1)
        await runner.pause()
        await trio.sleep(100)
        assert runner.state is BotState.BACKOFF and len(fake.starts) == 1
        await runner.resume()  # at 101 s; the 2 s delay starts now
        await trio.sleep(3)
        assert runner.state is BotState.RUNNING and len(fake.starts) == 2
        assert fake.starts[1] - fake.starts[0] == pytest.approx(101 + 2)
        await runner.stop()
