"""Issue 13.6, the parts that run inside pytest: the registry of children that somebody
waits for, and a reaper that reaps the others but never one that trio waits for. (The
subreaper itself, with a double-forking bot, is in integration/test_recovery.py.)"""

from __future__ import annotations

import subprocess
import sys

import trio
from helpers import wait_for

from trio_orchestrator.children import ChildRegistry
from trio_orchestrator.procfs import child_processes, proc_stat_fields
from trio_orchestrator.reaper import Reaper, owned_spawn


def test_registry_refuses_while_spawning_and_after_a_new_spawn():
    registry = ChildRegistry()
    with registry.spawning():
        assert registry.mark() is None
        registry.own(10)
    mark = registry.mark()
    assert registry.may_reap(11, mark)
    assert not registry.may_reap(10, mark)  # owned
    registry.release(10)
    assert registry.may_reap(10, mark)
    registry.begin_spawn()
    assert not registry.may_reap(11, mark)  # a spawn is in progress
    registry.end_spawn()
    assert not registry.may_reap(11, mark)  # a spawn began after the mark
    assert registry.may_reap(11, registry.mark())


def is_zombie(pid):
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] == b"Z"


async def test_reaper_reaps_strays_but_never_what_trio_waits_for():
    # A child nobody waits for: it becomes a zombie of this process.
    stray = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: is_zombie(stray.pid), timeout=10, message="stray zombie")
    reaper = Reaper()
    spawn = owned_spawn(trio.run_process)
    codes = []

    async def busy_reaper():
        while True:
            await reaper.reap_once()
            await trio.sleep(0)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy_reaper)
            for _ in range(10):
                process = await spawn(["sh", "-c", "exit 3"], check=False)
                codes.append(process.returncode)
            nursery.cancel_scope.cancel()
    assert codes == [3] * 10  # trio reaped its own children, with their real status
    # While spawns follow each other the reaper may find no safe moment (a spawn began
    # since it looked); once none is in progress, the stray is reaped.
    await reaper.reap_once()
    assert reaper.reaped >= 1
    assert stray.pid not in {pid for pid, _ in child_processes()}
    stray.returncode = 0  # reaped by the reaper; keep Popen.__del__ quiet
