from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from trio_orchestrator import state
from trio_orchestrator.errors import ManagerRunning, StateError
from trio_orchestrator.state import SCHEMA_VERSION, BotRecord, OwnerLock, StateStore, Write


def create_original_db(path):
    """A database as the original Bot Orchestrator left it: five columns, no migrations."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE bot_states (bot_name TEXT PRIMARY KEY, is_running BOOLEAN, "
        "last_start_time TEXT, start_count INTEGER, preserved_state BOOLEAN)"
    )
    db.executemany(
        "INSERT INTO bot_states VALUES (?, ?, ?, ?, ?)",
        [
            ("Alpha", 1, "2024-01-01 10:00:00", 5, 0),
            ("Beta", 0, "2024-01-01 11:00:00", 2, 1),
            ("Gamma", 0, None, 1, 0),
        ],
    )
    db.commit()
    db.close()


def test_original_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "bot_states.db"
    create_original_db(path)
    store = StateStore(path)
    records = store.load_all()
    assert records["Alpha"].is_running and records["Alpha"].start_count == 5
    assert records["Alpha"].last_start_time == "2024-01-01 10:00:00"
    assert records["Beta"].preserved_state and not records["Beta"].is_running
    assert records["Gamma"].state == "stopped" and records["Gamma"].pid is None
    store.commit([Write(BotRecord(name="Gamma", state="running", pid=42, start_count=2), "x")])
    store.close()

    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(bot_states)")]
    assert columns[:5] == [
        "bot_name",
        "is_running",
        "last_start_time",
        "start_count",
        "preserved_state",
    ]
    assert {"pid", "state", "restarts", "last_exit_code", "last_exit_time"} <= set(columns)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT pid FROM bot_states WHERE bot_name='Gamma'").fetchone() == (42,)
    assert db.execute("SELECT event FROM bot_history").fetchall() == [("x",)]
    # The original columns keep their meaning for the original tool's readers.
    assert db.execute("SELECT start_count FROM bot_states WHERE bot_name='Alpha'").fetchone() == (
        5,
    )
    db.close()
    # Opening again is a no-op migration.
    assert StateStore(path).load_all()["Gamma"].pid == 42


def test_commit_round_trip_and_group_commit(tmp_path):
    store = StateStore(tmp_path / "s.db")
    writes = [
        Write(BotRecord(name=f"bot{i}", start_count=i, restarts=1), "start") for i in range(50)
    ]
    store.commit(writes)
    records = store.load_all()
    assert len(records) == 50 and records["bot7"].start_count == 7
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT count(*) FROM bot_history WHERE bot_name='bot7'").fetchone() == (1,)
    db.close()


def test_corrupt_database_is_a_clear_error(tmp_path):
    path = tmp_path / "bot_states.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StateError, match="corrupt"):
        StateStore(path)


def test_read_only_database_is_a_clear_error(tmp_path):
    path = tmp_path / "bot_states.db"
    StateStore(path).close()
    # chattr +i stops even root from writing; plain permissions do not.
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    try:
        with pytest.raises(StateError, match="state database"):
            StateStore(path).commit([Write(BotRecord(name="a"))])
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.slow
def test_a_locked_write_fails_as_transient_and_a_corrupt_one_for_good(tmp_path):
    path = tmp_path / "s.db"
    store = StateStore(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds a write transaction
    with pytest.raises(StateError) as locked:
        store.commit([Write(BotRecord(name="a", start_count=3), "start")])
    assert locked.value.transient and "locked" in str(locked.value)
    other.execute("COMMIT")
    store.commit([Write(BotRecord(name="a", start_count=3), "start")])
    assert store.load_all()["a"].start_count == 3


def test_history_is_pruned_per_bot(tmp_path):
    store = StateStore(tmp_path / "s.db")
    for start in range(state.HISTORY_PER_BOT + 50):
        store.commit([Write(BotRecord(name="a", start_count=start), "running")])
    store.commit([Write(BotRecord(name="b"), "running")])
    counts = dict(
        sqlite3.connect(tmp_path / "s.db").execute(
            "SELECT bot_name, count(*) FROM bot_history GROUP BY bot_name"
        )
    )
    assert counts == {"a": state.HISTORY_PER_BOT, "b": 1}


def test_owner_lock_refuses_second_owner_and_names_pid(tmp_path):
    db = tmp_path / "bot_states.db"
    first = OwnerLock(db)
    first.acquire()
    code = (
        "import sys; from pathlib import Path; from trio_orchestrator.state import OwnerLock\n"
        "from trio_orchestrator.errors import ManagerRunning\n"
        "try:\n    OwnerLock(Path(sys.argv[1])).acquire()\n"
        "except ManagerRunning as e:\n    print(e); sys.exit(1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert f"pid {os.getpid()}" in result.stdout
    first.release()
    second = OwnerLock(db)
    second.acquire()  # released: the next manager gets it
    second.release()


def test_lock_of_a_killed_owner_never_blocks(tmp_path):
    db = tmp_path / "bot_states.db"
    code = (
        "import sys, time; from pathlib import Path\n"
        "from trio_orchestrator.state import OwnerLock\n"
        "OwnerLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ManagerRunning):
        OwnerLock(db).acquire()
    holder.kill()
    holder.wait()
    lock = OwnerLock(db)
    lock.acquire()  # the kernel dropped the dead owner's lock
    lock.release()
