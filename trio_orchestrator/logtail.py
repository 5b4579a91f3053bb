"""``trio-orch logs``: the last lines of a log file, and following it across rotations.

Pure and synchronous (no trio): the CLI calls it with or without a running manager, since
it only reads files. A log ``<Name>.log`` is rotated by renaming it to ``<Name>.log.1``
(the newest backup; older ones shift to ``.2``, ``.3``...) and creating a new
``<Name>.log``.

Following keeps the current file open and polls it. When the path names another file (a
new inode) the old descriptor is read to its end first, then any backups written in
between (found by inode among ``.1``, ``.2``...), then the new file from its start: every
line is printed once, in order, whatever the number of rotations in one poll. A file that
shrinks in place (``copytruncate``) is read again from its start.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from trio_orchestrator.fileid import identity, path_identity

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from trio_orchestrator.fileid import FileIdentity

__all__ = [
    "DEFAULT_LINES",
    "MANAGER_LOG",
    "POLL_INTERVAL",
    "follow",
    "log_path",
    "rotated",
    "tail",
]

DEFAULT_LINES = 20
POLL_INTERVAL = 0.2
MANAGER_LOG = "bot_manager.log"
BLOCK_SIZE = 64 * 1024
# Backups looked at beyond the last one that exists: none, since they are numbered 1..N.
MAX_BACKUPS = 1000


def log_path(directory: Path, name: str | None = None) -> Path:
    """The log of bot *name*, or the manager's log when *name* is None."""
    return directory / (MANAGER_LOG if name is None else f"{name}.log")


def rotated(path: Path, index: int) -> Path:
    """The *index*-th backup of *path* (1 is the newest)."""
    return path.with_name(f"{path.name}.{index}")


def _last_lines(handle, end: int, count: int) -> list[bytes]:
    """The last *count* lines of the bytes ``[0, end)`` of *handle*, reading backwards.

    Lines keep their b"\\n"; an unterminated last line is included as it is.
    """
    if count <= 0 or end <= 0:
        return []
    data = b""
    position = end
    # count + 1 newlines guarantee the first of the last `count` lines is complete.
    while position > 0 and data.count(b"\n") <= count:
        size = min(BLOCK_SIZE, position)
        position -= size
        handle.seek(position)
        data = handle.read(size) + data
    lines = data.splitlines(keepends=True)
    if position > 0:
        lines = lines[1:]  # cut mid-line by the block boundary
    return lines[-count:]


def _tail_file(path: Path, count: int) -> list[bytes]:
    try:
        with open(path, "rb") as handle:
            end = os.fstat(handle.fileno()).st_size
            return _last_lines(handle, end, count)
    except FileNotFoundError:
        return []


def _complete(lines: list[bytes]) -> list[bytes]:
    """Terminate a backup's unterminated last line, so that lines never run together."""
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    return lines


def _backup_lines(path: Path, count: int) -> list[bytes]:
    """Up to *count* of the newest lines from the backups ``.1``, ``.2``..., oldest first."""
    lines: list[bytes] = []
    index = 1
    while len(lines) < count and index <= MAX_BACKUPS:
        backup = rotated(path, index)
        if not backup.exists():
            break
        lines = _complete(_tail_file(backup, count - len(lines))) + lines
        index += 1
    return lines


def tail(path: Path, count: int = DEFAULT_LINES) -> list[bytes]:
    """The last *count* lines of *path*, continued into its backups when it holds fewer.

    Returns ``[]`` when neither the file nor a backup exists.
    """
    lines = _tail_file(path, count)
    if len(lines) < count:
        lines = _backup_lines(path, count - len(lines)) + lines
    return lines


class _Follower:
    """Reads complete lines from the file currently at a path, across rotations."""

    def __init__(self, path: Path, write: Callable[[bytes], None]):
        self.path = path
        self.write = write
        self.handle = None
        self.identity: FileIdentity | None = None
        self.partial = b""

    def open_current(self, count: int) -> None:
        """Open the file at the path (if any) and print its last *count* lines."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            self._emit(b"".join(_backup_lines(self.path, count)))
            return
        stat = os.fstat(handle.fileno())
        lines = _last_lines(handle, stat.st_size, count)
        if len(lines) < count:
            lines = _backup_lines(self.path, count - len(lines)) + lines
        handle.seek(stat.st_size)
        self.handle, self.identity = handle, identity(stat)
        if lines and not lines[-1].endswith(b"\n"):
            self.partial = lines.pop()  # the writer may be in the middle of it
        self._emit(b"".join(lines))

    def _emit(self, data: bytes) -> None:
        if data:
            self.write(data)

    def _read_available(self) -> bool:
        """Print the complete lines written since the last read; True if any data came."""
        assert self.handle is not None
        got = False
        while chunk := self.handle.read(BLOCK_SIZE):
            got = True
            data = self.partial + chunk
            cut = data.rfind(b"\n") + 1
            self.partial = data[cut:]
            self._emit(data[:cut])
        return got

    def _switch(self) -> bool:
        """The path names a new file: finish the old one, read the backups written
        after it, and go on with the new one. False if there is nothing to switch to."""
        assert self.handle is not None
        try:
            # Opened first: once we hold it, further rotations cannot take it from us.
            new = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            return False  # renamed, the new file not created yet: the old may still grow
        stat = os.fstat(new.fileno())
        new_identity = identity(stat)
        if new_identity == self.identity:
            new.close()
            return False
        self._read_available()
        self.handle.close()
        if self.partial:
            self._emit(self.partial + b"\n")
            self.partial = b""
        # Rotated more than once since the last poll? Ours is now `.k` and the new file,
        # if rotated already, `.j`: the backups `.k-1` down to `.j+1` were never read.
        old_index = self._backup_index(self.identity)
        new_index = self._backup_index(new_identity) or 0
        for index in range((old_index or 1) - 1, new_index, -1):
            with contextlib.suppress(FileNotFoundError), open(rotated(self.path, index), "rb") as f:
                self._emit(b"".join(_complete(f.read().splitlines(keepends=True))))
        self.handle, self.identity = new, new_identity
        return True

    def _backup_index(self, wanted: FileIdentity | None) -> int | None:
        for index in range(1, MAX_BACKUPS + 1):
            found = path_identity(rotated(self.path, index))
            if found is None:
                return None
            if found == wanted:
                return index
        return None

    def poll(self) -> bool:
        """Read what is new, following a rotation; True if data came (poll again soon)."""
        if self.handle is None:
            try:
                self.handle = open(self.path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                return False
            stat = os.fstat(self.handle.fileno())
            self.identity = identity(stat)
        if self._read_available():
            return True
        current = path_identity(self.path)
        if current is not None and current != self.identity:
            return self._switch()
        if os.fstat(self.handle.fileno()).st_size < self.handle.tell():
            self.handle.seek(0)  # truncated in place
            self.partial = b""
            return True
        return False

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def follow(
    path: Path,
    write: Callable[[bytes], None],
    count: int = DEFAULT_LINES,
    *,
    poll_interval: float = POLL_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Print the last *count* lines of *path*, then every line appended to it, across
    rotations, until *keep_going* returns False or the caller interrupts (Ctrl-C).

    *path* may not exist yet: it is waited for. *write* gets whole lines only.
    """
    follower = _Follower(path, write)
    try:
        follower.open_current(count)
        while keep_going():
            if not follower.poll():
                sleep(poll_interval)
        follower.poll()
    finally:
        follower.close()
