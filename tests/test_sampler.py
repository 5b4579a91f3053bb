"""The sampler: /proc figures of real process groups, and when it samples at all."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time

import pytest
import trio
from helpers import wait_for

from trio_orchestrator.sampler import (
    CLOCK_TICKS,
    GroupUsage,
    Sampler,
    UsageTracker,
    read_manager_usage,
    scan_groups,
)

MIB = 1024 * 1024

ALLOCATE = """
import os, sys, time
size = int(sys.argv[1]) * 1024 * 1024
data = bytearray(size)
for i in range(0, size, 4096):
    data[i] = 1  # touch every page: resident, not just reserved
print("ready", flush=True)
if len(sys.argv) > 2:  # a second process in the group, allocating as much
    os.fork()
time.sleep(60)
"""

SPIN = """
import time
print("ready", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    pass
"""

IDLE = """
import time
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def spawn():
    """Start ``python -c CODE ARGS`` in its own process group; ended after the test."""
    procs = []

    def start(code: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        procs.append(proc)
        assert proc.stdout.readline() == b"ready\n"
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()


def _baseline_rss() -> int:
    """Resident bytes of a Python that allocated nothing (same interpreter)."""
    proc = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/statm').read().split()[1])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout) * os.sysconf("SC_PAGE_SIZE")


def test_memory_of_a_bot_that_allocates_a_known_amount(spawn):
    proc = spawn(ALLOCATE, "64")
    usage = scan_groups([proc.pid])[proc.pid]
    extra = usage.rss_bytes - _baseline_rss()
    assert usage.processes == 1
    assert 62 * MIB <= extra <= 72 * MIB, usage


def test_memory_and_processes_of_the_whole_group(spawn):
    proc = spawn(ALLOCATE, "32", "fork")

    def both():
        usage = scan_groups([proc.pid]).get(proc.pid)
        return usage if usage and usage.processes == 2 else None

    usage = wait_for(both)
    # Two processes, each with 32 MiB touched (the child's copy-on-write pages count in
    # each process's RSS, as ps and top show them).
    assert usage.rss_bytes - 2 * _baseline_rss() >= 56 * MIB
    assert scan_groups([proc.pid, 999_999_999]).keys() == {proc.pid}


def _schedstat_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0]) / 1e9


def test_cpu_of_a_spinning_bot_and_an_idle_one(spawn):
    spinner, idle = spawn(SPIN), spawn(IDLE)
    tracker = UsageTracker()
    groups = {"Spin": spinner.pid, "Idle": idle.pid}
    tracker.update(groups, scan_groups(groups.values()), time.monotonic())
    before = _schedstat_seconds(spinner.pid)
    t0 = time.monotonic()
    time.sleep(1.5)
    figures = tracker.update(groups, scan_groups(groups.values()), time.monotonic())
    # What the kernel's scheduler says, in ns, over (almost) the same window.
    expected = 100 * (_schedstat_seconds(spinner.pid) - before) / (time.monotonic() - t0)
    spin = figures["Spin"].cpu_percent
    # The machine may be busy (the spinner gets what the others leave), but it must be
    # measured as the kernel sees it, within the 10 ms tick resolution.
    assert spin is not None and spin > 5
    assert spin <= 105
    assert abs(spin - expected) < 15, (spin, expected)
    assert figures["Idle"].cpu_percent < 3
    assert figures["Spin"].cpu_seconds > figures["Idle"].cpu_seconds


def test_tracker_counts_cpu_across_processes_and_never_down():
    tracker = UsageTracker()
    tracker.update({"A": 10}, {10: GroupUsage(100, 1000, 1)}, 0.0)
    figures = tracker.update({"A": 10}, {10: GroupUsage(150, 1000, 1)}, 1.0)
    assert figures["A"].cpu_percent == pytest.approx(100 * 50 / CLOCK_TICKS)
    assert tracker.cpu_seconds("A") == pytest.approx(150 / CLOCK_TICKS)
    # A member ended without being reaped inside the group: the counter does not drop.
    tracker.update({"A": 10}, {10: GroupUsage(120, 1000, 1)}, 2.0)
    assert tracker.cpu_seconds("A") == pytest.approx(150 / CLOCK_TICKS)
    # A new process (new group): its figure starts anew, the counter goes on.
    figures = tracker.update({"A": 20}, {20: GroupUsage(10, 500, 2)}, 3.0)
    assert figures["A"].cpu_percent is None
    assert figures["A"].processes == 2
    assert tracker.cpu_seconds("A") == pytest.approx(160 / CLOCK_TICKS)
    # The bot stopped: no figures, the counter keeps its value.
    assert tracker.update({}, {}, 4.0) == {}
    assert tracker.cpu_seconds("A") == pytest.approx(160 / CLOCK_TICKS)


def test_manager_usage_of_this_process():
    usage = read_manager_usage()
    assert usage.memory_bytes > 5 * MIB
    assert usage.open_fds >= 3
    assert 0 < usage.uptime < 3600
    assert abs(usage.start_time + usage.uptime - time.time()) < 2


async def _direct(function, *args):
    """Instead of a worker thread: the autojump clock would jump while a thread runs."""
    return function(*args)


class FakeScan:
    def __init__(self):
        self.calls = 0

    def __call__(self, pgids):
        self.calls += 1
        return {pgid: GroupUsage(self.calls * 10, 4096, 1) for pgid in pgids}


async def test_nothing_is_sampled_while_no_one_looks(autojump_clock):
    scan = FakeScan()
    sampler = Sampler(lambda: {"A": 10}, interval=3, linger=60, scan=scan, in_thread=_direct)
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        await trio.sleep(3600)
        assert scan.calls == 0
        assert sampler.usage("A")["memory_bytes"] is None

        # A look: sampled at once (twice, to measure CPU), then every interval for a while.
        await sampler.look()
        assert scan.calls == 2
        assert sampler.usage("A")["cpu_percent"] is not None
        assert sampler.usage("A")["memory_bytes"] == 4096
        await trio.sleep(30)
        assert 10 <= scan.calls <= 13
        await trio.sleep(3600)
        calls = scan.calls
        assert calls <= 25  # stopped after the linger period
        await trio.sleep(3600)
        assert scan.calls == calls
        assert sampler.usage("A")["memory_bytes"] is None  # stale figures are not shown

        # A standing need (a listener, a memory limit): samples until released.
        sampler.keep_sampling("memory limit")
        await trio.sleep(300)
        assert scan.calls >= calls + 99
        sampler.stop_sampling("memory limit")
        await trio.sleep(3600)
        calls = scan.calls
        await trio.sleep(3600)
        assert scan.calls == calls
        nursery.cancel_scope.cancel()


async def test_a_look_while_sampling_returns_at_once(autojump_clock):
    scan = FakeScan()
    sampler = Sampler(lambda: {"A": 10}, interval=3, scan=scan, in_thread=_direct)
    sampler.keep_sampling("listener")
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        await trio.sleep(10)
        calls = scan.calls
        start = trio.current_time()
        await sampler.look()
        assert trio.current_time() == start
        assert scan.calls == calls
        nursery.cancel_scope.cancel()


async def test_listeners_get_each_sample(autojump_clock):
    seen = []
    sampler = Sampler(lambda: {"A": 10}, interval=3, scan=FakeScan(), in_thread=_direct)
    sampler.listeners.append(seen.append)
    await sampler.sample()
    assert seen and seen[0]["A"].memory_bytes == 4096
