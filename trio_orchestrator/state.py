"""Persistent bot state in SQLite, and the single-owner lock.

Synchronous: the supervisor calls it through ``trio.to_thread`` with one
``CapacityLimiter(1)``. The table ``bot_states`` keeps the original tool's five columns
(``bot_name``, ``is_running``, ``last_start_time``, ``start_count``, ``preserved_state``)
so an existing database is read and upgraded in place; everything else is added by
migration.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs

from trio_orchestrator.errors import ManagerRunning, StateError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "BotRecord",
    "OwnerLock",
    "StateStore",
    "Write",
    "now_iso",
    "records_for",
]


SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 5000
# History events kept per bot; older ones are pruned as new ones are written.
HISTORY_PER_BOT = 1000

# Columns added to the original table, with their SQL types.
_ADDED_COLUMNS = {
    "state": "TEXT",
    "pid": "INTEGER",
    "pid_start_ticks": "INTEGER",
    "restarts": "INTEGER NOT NULL DEFAULT 0",
    "last_exit_code": "INTEGER",
    "last_exit_time": "TEXT",
    "last_exit_reason": "TEXT",
    "state_since": "TEXT",
    "update_outcome": "TEXT",
    "update_commit": "TEXT",
    "update_time": "TEXT",
    # The commit before the last update that changed it, and when (rollback, issue 13.5).
    "update_previous_commit": "TEXT",
    "update_changed_time": "TEXT",
    # The commit a rollback left: an update back onto it is rolled back at once, also after
    # a restart of the manager (schema 3).
    "rolled_back_from": "TEXT",
}
COLUMNS = (
    "is_running",
    "last_start_time",
    "start_count",
    "preserved_state",
    *_ADDED_COLUMNS,
)


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


def _truthy(value: object) -> bool:
    """Read a flag written by us or by the original tool (1, "1", "true", "running"...)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "none", "null", "stopped")
    return bool(value)


@attrs.frozen
class BotRecord:
    name: str
    is_running: bool = False
    start_count: int = 0
    last_start_time: str | None = None
    preserved_state: bool = False
    state: str = "stopped"
    pid: int | None = None
    pid_start_ticks: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_time: str | None = None
    last_exit_reason: str | None = None
    state_since: str | None = None
    update_outcome: str | None = None
    update_commit: str | None = None
    update_time: str | None = None
    update_previous_commit: str | None = None
    update_changed_time: str | None = None
    rolled_back_from: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> BotRecord:
        keys = row.keys()

        def get(key: str, default: Any = None) -> Any:
            value = row[key] if key in keys else None
            return default if value is None else value

        def as_int(key: str) -> int | None:
            value = get(key)
            try:
                return None if value is None else int(value)
            except (TypeError, ValueError):
                return None

        return cls(
            name=row["bot_name"],
            is_running=_truthy(get("is_running", 0)),
            start_count=as_int("start_count") or 0,
            last_start_time=None if get("last_start_time") is None else str(get("last_start_time")),
            preserved_state=_truthy(get("preserved_state", 0)),
            state=get("state", "stopped"),
            pid=as_int("pid"),
            pid_start_ticks=as_int("pid_start_ticks"),
            restarts=as_int("restarts") or 0,
            last_exit_code=as_int("last_exit_code"),
            last_exit_time=get("last_exit_time"),
            last_exit_reason=get("last_exit_reason"),
            state_since=get("state_since"),
            update_outcome=get("update_outcome"),
            update_commit=get("update_commit"),
            update_time=get("update_time"),
            update_previous_commit=get("update_previous_commit"),
            update_changed_time=get("update_changed_time"),
            rolled_back_from=get("rolled_back_from"),
        )

    def to_columns(self) -> dict[str, Any]:
        values = attrs.asdict(self)
        values["bot_name"] = values.pop("name")
        values["is_running"] = int(self.is_running)
        values["preserved_state"] = int(self.preserved_state)
        return values


@attrs.frozen
class Write:
    """One committed change: the bot's full new record and an optional history event.

    With ``forget``, the bot leaves the ``bot_states`` table instead (removed from the
    config); its history stays.
    """

    record: BotRecord
    event: str | None = None
    detail: str | None = None
    forget: bool = False


class StateStore:
    """The SQLite database. Not thread-safe: use from one thread at a time.

    Raises:
        StateError: the file cannot be opened, is not a database, or is read-only.
    """

    def __init__(
        self, path: Path, *, readonly: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS
    ):
        self.path = path
        try:
            if readonly:
                uri = f"file:{path}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not readonly:
                self._migrate()
        except sqlite3.Error as exc:
            raise StateError(f"state database {path}: {_describe(exc)}") from None

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        db = self._db
        # WAL lets `trio-orch list` read while the manager writes; NORMAL sync is safe in
        # WAL mode (a power cut may lose the last commit, never corrupt the file).
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state database {self.path} has schema version {version}, newer than this "
                f"trio-orch ({SCHEMA_VERSION}); upgrade trio-orch"
            )
        with self._transaction():
            db.execute(
                """CREATE TABLE IF NOT EXISTS bot_states (
                    bot_name TEXT PRIMARY KEY,
                    is_running INTEGER NOT NULL DEFAULT 0,
                    last_start_time TEXT,
                    start_count INTEGER NOT NULL DEFAULT 0,
                    preserved_state INTEGER NOT NULL DEFAULT 0
                )"""
            )
            existing = {row["name"] for row in db.execute("PRAGMA table_info(bot_states)")}
            for column, sql_type in _ADDED_COLUMNS.items():
                if column not in existing:
                    db.execute(f"ALTER TABLE bot_states ADD COLUMN {column} {sql_type}")
            db.execute(
                """CREATE TABLE IF NOT EXISTS bot_history (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    bot_name TEXT NOT NULL,
                    time TEXT NOT NULL,
                    event TEXT NOT NULL,
                    detail TEXT
                )"""
            )
            db.execute("CREATE INDEX IF NOT EXISTS bot_history_bot ON bot_history(bot_name, id)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite's advice after FULL, IOERR, BUSY or NOMEM: roll back explicitly, or the
            # next BEGIN fails. The error may have rolled back already (then skip it), and a
            # failing ROLLBACK must not hide the error that matters.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def load_all(self) -> dict[str, BotRecord]:
        try:
            rows = self._db.execute("SELECT * FROM bot_states").fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"state database {self.path}: {_describe(exc)}") from None
        return {row["bot_name"]: BotRecord.from_row(row) for row in rows}

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The bot's recorded events, newest last: the last *limit* (all if None or 0).

        Each is ``{"time", "event", "detail"}``. A database without a history table (one
        written by the original tool, opened read-only) has no events.

        Raises:
            StateError: the database cannot be read.
        """
        sql = (
            "SELECT time, event, detail FROM ("
            " SELECT id, time, event, detail FROM bot_history WHERE bot_name = ?"
            " ORDER BY id DESC LIMIT ?) ORDER BY id"
        )
        try:
            rows = self._db.execute(sql, (name, limit or -1)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise StateError(f"state database {self.path}: {_describe(exc)}") from None
        except sqlite3.Error as exc:
            raise StateError(f"state database {self.path}: {_describe(exc)}") from None
        return [dict(row) for row in rows]

    def commit(self, writes: Iterable[Write]) -> None:
        """Write all *writes* in one transaction (one attempt; SQLite waits up to
        ``busy_timeout_ms`` for another process's lock).

        Raises:
            StateError: the write failed; ``transient`` tells a locked database, a full
                disk or an I/O error (worth retrying later) from a corrupt one.
        """
        try:
            with self._transaction():
                self._apply(list(writes))
        except sqlite3.Error as exc:
            transient = getattr(exc, "sqlite_errorname", "").startswith(_TRANSIENT_ERRORS)
            raise StateError(
                f"state database {self.path}: {_describe(exc)}", transient=transient
            ) from None

    def _apply(self, writes: list[Write]) -> None:
        columns = ("bot_name", *COLUMNS)
        placeholders = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{column} = excluded.{column}" for column in COLUMNS)
        sql = (
            f"INSERT INTO bot_states ({', '.join(columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT(bot_name) DO UPDATE SET {updates}"
        )
        rows = []
        events = []
        stamp = now_iso()
        for write in writes:
            if not write.forget:
                values = write.record.to_columns()
                rows.append(tuple(values[column] for column in columns))
            if write.event:
                events.append((write.record.name, stamp, write.event, write.detail))
        self._db.executemany(sql, rows)
        forgotten = [(write.record.name,) for write in writes if write.forget]
        self._db.executemany("DELETE FROM bot_states WHERE bot_name = ?", forgotten)
        if events:
            self._db.executemany(
                "INSERT INTO bot_history (bot_name, time, event, detail) VALUES (?, ?, ?, ?)",
                events,
            )
            self._db.executemany(
                "DELETE FROM bot_history WHERE bot_name = ? AND id <= ("
                " SELECT id FROM bot_history WHERE bot_name = ?"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                [(name, name, HISTORY_PER_BOT) for name in {event[0] for event in events}],
            )


# Failures that go away by themselves: another process's lock, a full disk, an I/O error,
# a file made read-only for a while. Anything else (a corrupt file) will not.
_TRANSIENT_ERRORS = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return "not a database" in text or "malformed" in text


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if _is_corrupt(exc):
        return f"{text} (the file is corrupt; move it away to start afresh)"
    if "readonly" in text or "read-only" in text:
        return f"{text} (check the file's permissions)"
    if "unable to open" in text:
        return f"{text} (check that the directory exists and is writable)"
    if "locked" in text or "busy" in text:
        return f"{text} (another process holds a write lock on it; try again once it is done)"
    return text


class OwnerLock:
    """An exclusive ``flock`` on ``<db>.lock``: only one manager per database.

    The kernel drops the lock when the owner dies, however it dies, so a lock left by a
    SIGKILLed manager never blocks the next one. The owner's pid is written into the file
    so the refusal can name it.
    """

    def __init__(self, db_path: Path):
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises: ManagerRunning if another live process holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            pid = int(owner) if owner.isdigit() else None
            raise ManagerRunning(self.path.with_suffix(""), pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def records_for(names: Iterable[str], stored: Mapping[str, BotRecord]) -> dict[str, BotRecord]:
    """The stored record of every configured bot, or a fresh one for never-seen bots."""
    return {name: stored.get(name) or BotRecord(name=name) for name in names}
