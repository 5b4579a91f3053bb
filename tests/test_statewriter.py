"""StateWriter: group commits in order, retried while the db is locked, never reported
as saved when they are not. Real SQLite files; the lock is another connection's."""

from __future__ import annotations

import sqlite3

import pytest
import trio

from trio_orchestrator.errors import StateError
from trio_orchestrator.state import BotRecord, StateStore, Write
from trio_orchestrator.statewriter import StateWriter


def record(name, starts):
    return Write(BotRecord(name=name, start_count=starts), "running")


class CountingStore(StateStore):
    transactions = 0

    def commit(self, writes):
        self.transactions += 1
        super().commit(writes)


async def test_writes_queued_together_are_committed_together(tmp_path):
    store = CountingStore(tmp_path / "s.db")
    writer = StateWriter(store, trio.CapacityLimiter(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as callers:
            for index in range(100):
                callers.start_soon(writer.commit, record(f"bot{index}", 1))
        writer.close()
    assert len(store.load_all()) == 100
    assert store.transactions <= 5


async def test_a_locked_db_is_retried_and_the_caller_waits_for_the_commit(tmp_path):
    path = tmp_path / "s.db"
    # SQLite's own wait for the lock is short here, so the writer's retries are what
    # bridge the second the lock is held.
    store = StateStore(path, busy_timeout_ms=100)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    writer = StateWriter(store, trio.CapacityLimiter(1), commit_wait=30)

    async def release_later():
        await trio.sleep(1)  # ten times sqlite's busy timeout: several retries
        other.execute("COMMIT")

    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            nursery.start_soon(release_later)
            await writer.commit(record("a", 3))
            assert store.load_all()["a"].start_count == 3
            writer.close()


async def test_commit_raises_when_not_saved_in_time_and_the_write_is_kept(tmp_path):
    path = tmp_path / "s.db"
    store = StateStore(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    writer = StateWriter(store, trio.CapacityLimiter(1), commit_wait=1)
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with pytest.raises(StateError, match="not saved yet") as not_saved:
                await writer.commit(record("a", 7))
            assert not_saved.value.transient
            other.execute("COMMIT")
            await writer.commit(record("b", 1))  # committed after the one still queued
            writer.close()
    stored = store.load_all()
    assert (stored["a"].start_count, stored["b"].start_count) == (7, 1)


async def test_a_corrupt_db_fails_the_write_for_good(tmp_path):
    path = tmp_path / "s.db"
    store = StateStore(path)
    store._db.execute("DROP TABLE bot_states")  # every later write fails permanently
    store._db.execute("CREATE VIEW bot_states AS SELECT 1 AS bot_name")
    writer = StateWriter(store, trio.CapacityLimiter(1))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with pytest.raises(StateError) as failed:
                await writer.commit(record("a", 1))
            writer.close()
    assert not failed.value.transient


class FullDiskStore(StateStore):
    """Commits fail as on a full disk (SQLITE_FULL) while ``full`` is set."""

    full = True

    def commit(self, writes):
        if self.full:
            raise StateError("database or disk is full", transient=True)
        super().commit(writes)


async def test_callers_are_answered_at_once_while_the_db_is_unavailable(tmp_path):
    store = FullDiskStore(tmp_path / "s.db")
    writer = StateWriter(store, trio.CapacityLimiter(1))  # commit_wait: 10 s
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            started = trio.current_time()
            with pytest.raises(StateError, match="not saved yet"):
                await writer.commit(record("a", 1))
            first = trio.current_time() - started
            started = trio.current_time()
            with pytest.raises(StateError, match="not saved yet"):
                await writer.commit(record("a", 2))
            second = trio.current_time() - started
            store.full = False
            while not store.load_all():  # the next retry commits both, in order
                await trio.sleep(0.05)
            await writer.commit(record("b", 1))  # waited for again: the db is back
            writer.close()
    assert 0.9 < first < 3, first  # about UNAVAILABLE_AFTER_SECONDS, not commit_wait
    assert second < 0.1, second
    stored = store.load_all()
    assert (stored["a"].start_count, stored["b"].start_count) == (2, 1)
