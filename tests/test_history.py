"""`history`: StateStore.history and the control request that carries its count."""

from __future__ import annotations

import sqlite3

import pytest

from trio_orchestrator.commands import Action, BadCommand, Command
from trio_orchestrator.control import parse_request
from trio_orchestrator.state import BotRecord, StateStore, Write


def test_history_newest_last_with_a_limit(tmp_path):
    store = StateStore(tmp_path / "s.db")
    for n in range(5):
        store.commit([Write(BotRecord(name="a"), "running", f"pid {n}")])
        store.commit([Write(BotRecord(name="b"), "exited", "exited with code 3")])
    store.commit([Write(BotRecord(name="a"))])  # no event
    events = store.history("a", 3)
    assert [event["detail"] for event in events] == ["pid 2", "pid 3", "pid 4"]
    assert set(events[0]) == {"time", "event", "detail"}
    assert events[0]["event"] == "running"
    assert len(store.history("a")) == 5
    assert len(store.history("a", 0)) == 5  # 0: all
    assert store.history("nobody", 10) == []
    store.close()


def test_history_of_an_original_database_read_only(tmp_path):
    path = tmp_path / "bot_states.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE bot_states (bot_name TEXT PRIMARY KEY, is_running BOOLEAN)")
    db.commit()
    db.close()
    store = StateStore(path, readonly=True)
    assert store.history("Alpha", 20) == []
    store.close()


def test_history_request_carries_its_count():
    command = parse_request(b'{"command": "history", "names": ["A"], "lines": 5}')
    assert command == Command(Action.HISTORY, "A", limit=5)
    assert parse_request(b'{"command": "history", "name": "A"}').limit is None
    assert parse_request(b'{"command": "history", "name": "A", "limit": 0}').limit == 0
    assert str(command) == "history A"


@pytest.mark.parametrize("lines", ['"5"', "-1", "true", "1.5"])
def test_history_request_with_a_bad_count(lines):
    with pytest.raises(BadCommand, match="lines"):
        parse_request(b'{"command": "history", "name": "A", "lines": %s}' % lines.encode())


def test_history_takes_one_name():
    with pytest.raises(BadCommand):
        parse_request(b'{"command": "history", "names": []}')
    with pytest.raises(BadCommand):
        parse_request(b'{"command": "history", "names": ["A", "B"]}')
