"""Turning bot output into prefixed lines: splitting, decoding, colouring, log files.

Synchronous and free of trio: the pumps call into it through
:mod:`trio_orchestrator.sink`, and the manager log from any thread. Everything here works
on whole blocks of lines with a few C-level calls per block (``find``, ``replace``, one
``os.write``), because a chatty bot produces hundreds of thousands of lines a second and a
Python-level loop per line would make the manager the bottleneck.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import IO, TYPE_CHECKING

from colorama import Fore, Style

from trio_orchestrator.fileid import identity

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from trio_orchestrator.config import BotConfig, GlobalSettings

__all__ = [
    "MAX_LINE_BYTES",
    "ConsoleBuffer",
    "LineSplitter",
    "LogFile",
    "LogFileHandler",
    "LogFiles",
    "Printer",
    "iso_stamp",
    "log_limits",
    "should_color",
]

LOGGER = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
# How often a log file's path is checked for a deleted or moved-away file: a stat per
# write would cost more than the write.
CHECK_SECONDS = 1.0

# The prefix colours of config.COLORS, as colorama's ANSI sequences.
_ANSI = {
    "red": Fore.RED.encode(),
    "green": Fore.GREEN.encode(),
    "yellow": Fore.YELLOW.encode(),
    "blue": Fore.BLUE.encode(),
    "magenta": Fore.MAGENTA.encode(),
    "cyan": Fore.CYAN.encode(),
    "white": Fore.WHITE.encode(),
}
_RESET = Style.RESET_ALL.encode()


def should_color(mode: str, stream: IO[bytes] | IO[str], environ: Mapping[str, str]) -> bool:
    """Decide whether prefixes get ANSI colours.

    An explicit ``always`` or ``never`` wins (no-color.org: a command-line flag overrides
    ``NO_COLOR``); ``always`` colours even a pipe. ``auto`` colours only a terminal, and
    not when ``NO_COLOR`` is set to a non-empty value.
    """
    if mode == "always":
        return True
    if mode == "never" or environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineSplitter:
    """Cuts a byte stream into blocks of complete lines of at most :data:`MAX_LINE_BYTES`.

    A block is the lines joined by ``\n``, without the last newline: the work per read is
    a few C-level calls, whatever the number of lines in it. Memory is bounded: the
    unfinished tail is shorter than one maximal line, so a bot writing 50 MB without a
    newline costs 64 KiB here, not 50 MB.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES):
        self._max_line = max_line
        self._pending = b""

    def feed(self, data: bytes) -> bytes | None:
        """Return the complete lines in ``pending + data`` as a block, or None if none."""
        max_line = self._max_line
        if len(data) > max_line:  # larger than one read: take it a piece at a time
            pieces = (self.feed(data[i : i + max_line]) for i in range(0, len(data), max_line))
            blocks = [block for block in pieces if block is not None]
            return b"\n".join(blocks) if blocks else None
        last = data.rfind(b"\n")
        if last < 0:
            pending = self._pending + data
            # Kept while it may still end exactly at max_line with the next newline.
            if len(pending) <= max_line:
                self._pending = pending
                return None
            self._pending = pending[max_line:]  # not longer than max_line: nor is data
            return pending[:max_line]
        first = data.find(b"\n")
        # Only the first line can be too long: the others lie within data, which is not
        # longer than a line may be.
        head = self._pending + data[:first]
        if len(head) > max_line:
            head = b"\n".join(head[i : i + max_line] for i in range(0, len(head), max_line))
        self._pending = data[last + 1 :]
        # One copy of the lines: a slice, then `head + slice`, would copy them twice.
        return b"".join((head, memoryview(data)[first:last]))

    def flush(self) -> bytes | None:
        """Return the unterminated last line, if any (call at end of stream)."""
        pending, self._pending = self._pending, b""
        return pending or None


def _clean(block: bytes) -> bytes:
    """Replace undecodable bytes with U+FFFD (the common, valid case costs one check)."""
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        block = block.decode("utf-8", "replace").encode("utf-8")
    return block


class Printer:
    """Formats blocks of one bot's lines for the console and for its log file.

    A log line is ``<timestamp> <stream> [Name] line``; a console line is ``[Name] line``
    (with ``timestamps``, ``<timestamp> [Name] line``). The lines of one read arrived
    together, so they share one timestamp: the per-line work stays one C-level
    ``replace``.

    Args:
        color: whether console prefixes carry ANSI colours (see :func:`should_color`).
        timestamps: whether console lines carry a timestamp too.
    """

    def __init__(self, *, color: bool, timestamps: bool = False):
        self.color = color
        self.timestamps = timestamps
        self._prefixes: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        if color and sys.platform == "win32":  # pragma: no cover - POSIX-only supervisor
            import colorama

            colorama.just_fix_windows_console()

    def _prefix(self, name: str, color: str) -> tuple[bytes, bytes]:
        try:
            return self._prefixes[name, color]
        except KeyError:
            plain = f"[{name}] ".encode()
            console = _ANSI.get(color, b"") + plain[:-1] + _RESET + b" " if self.color else plain
            self._prefixes[name, color] = (console, plain)
            return console, plain

    def format(self, name: str, color: str, stream: str, block: bytes) -> tuple[bytes, bytes, int]:
        """Return ``(console_bytes, log_bytes, lines)`` for a block of one bot's lines."""
        console_prefix, plain_prefix = self._prefix(name, color)
        body = _clean(block)
        stamp = iso_stamp() + b" "
        log_prefix = stamp + _STREAM_MARKERS[stream] + plain_prefix
        if self.timestamps:
            console_prefix = stamp + console_prefix
        log = _prefixed(log_prefix, body)
        # A prefix went before every line: the growth counts them without another pass
        # over the block (``count`` was a tenth of the manager's time in a flood).
        lines = (len(log) - len(body) - 1) // len(log_prefix)
        return _prefixed(console_prefix, body), log, lines


_STREAM_MARKERS = {"stdout": b"stdout ", "stderr": b"stderr "}


def _prefixed(prefix: bytes, block: bytes) -> bytes:
    # join copies the (large) replaced block once; `a + b + c` would copy it twice.
    return b"".join((prefix, block.replace(b"\n", b"\n" + prefix), b"\n"))


class _StampCache:
    """The parts of a timestamp that change once a second, computed once a second.

    One tuple, replaced whole: threads that race on it see either the old or the new one.
    """

    second: tuple[int, bytes, bytes] = (-1, b"", b"")


def iso_stamp(now: float | None = None) -> bytes:
    """Local time, ISO 8601, milliseconds and UTC offset: ``2026-12-01T22:13:09.123+01:00``."""
    if now is None:
        now = time.time()
    second = int(now)
    cached, head, offset = _StampCache.second
    if cached != second:
        local = time.localtime(second)
        minutes = local.tm_gmtoff // 60
        sign = "+" if minutes >= 0 else "-"
        head = time.strftime("%Y-%m-%dT%H:%M:%S", local).encode()
        hours, minutes = divmod(abs(minutes), 60)
        offset = f"{sign}{hours:02d}:{minutes:02d}".encode()
        _StampCache.second = (second, head, offset)
    return b"%s.%03d%s" % (head, int((now - second) * 1000), offset)


class ConsoleBuffer:
    """Bytes waiting for a console stream, bounded; overflow is dropped and counted.

    When nobody reads the manager's stdout (a full pipe, a terminal paused with Ctrl-S),
    supervision must go on: the console falls behind, keeps up to *limit* bytes, and
    drops the rest with a notice. The per-bot log files are written separately and lose
    nothing.
    """

    def __init__(self, limit: int = 1024 * 1024):
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.dropped_lines = 0

    def __len__(self) -> int:
        return self._size

    def overflows(self, size: int) -> bool:
        """Whether *size* more bytes would exceed the bound (an empty buffer takes anything)."""
        return self._size > 0 and self._size + size > self._limit

    def push(self, data: bytes, lines: int) -> bool:
        """Queue *data* (holding *lines* lines); return False if it was dropped."""
        if self.overflows(len(data)):
            self.dropped_lines += lines
            return False
        self._chunks.append(data)
        self._size += len(data)
        return True

    def take(self) -> tuple[bytes, int]:
        """Return everything queued and the number of lines dropped since the last take."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        dropped, self.dropped_lines = self.dropped_lines, 0
        return data, dropped


def log_limits(settings: GlobalSettings | BotConfig) -> tuple[int, int]:
    """``(log_max_bytes, log_backups)`` of a bot or of the global settings."""
    return settings.log_max_bytes, settings.log_backups


class LogFile:
    """An append-only log file with size rotation that survives what happens to its path.

    Written from the event loop for bot output (a page-cache write, as cheap as a memory
    copy; only a disk that cannot keep up at all would make it wait) and from any thread
    for the manager log, hence the lock.

    - Rotation by size: ``<name>.1`` .. ``<name>.N``; a block is cut between lines, so a
      file never exceeds *max_bytes* unless a single line does.
    - Write errors (disk full, EIO, a read-only directory) lose the lines, not the
      manager: one warning when it starts failing, one with the count of lost lines when
      it works again; every write tries again (on a full disk, once it has a free block:
      the tail of the last block would otherwise take a short line now and then).
    - A deleted file or directory, or a file moved away (logrotate), is noticed within
      :data:`CHECK_SECONDS` and a new file is created; :meth:`reopen` does it at once.

    Args:
        path: the file.
        max_bytes: size at which it rotates; 0 never rotates.
        backups: rotated files kept; 0 truncates instead.
    """

    def __init__(self, path: Path, max_bytes: int = 0, backups: int = 0):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._inode = (0, 0)
        self._size = 0
        self._check_at = 0.0
        self._failure: str | None = None
        self._disk_full = False
        self.lost_lines = 0

    def set_limits(self, max_bytes: int, backups: int) -> None:
        """Rotate at *max_bytes* and keep *backups* from the next write on."""
        with self._lock:
            self.max_bytes, self.backups = max_bytes, backups

    def open(self) -> None:
        """Open (or create) the file now. Raises: OSError if it cannot be."""
        with self._lock:
            if self._fd is None:
                self._open()

    def write(self, data: bytes, lines: int) -> None:
        """Append *data*, whole lines holding *lines* lines; never raises OSError."""
        with self._lock:
            warning = self._write(data, lines)
        if warning is not None:
            # Outside the lock: the warning may come back here through the manager log.
            LOGGER.warning("%s", warning)

    def reopen(self) -> None:
        """Close the file; the next write opens ``path`` again (SIGUSR1, logrotate)."""
        with self._lock:
            self._close()

    def close(self) -> None:
        """Close the file (a later write would open it again)."""
        self.reopen()

    def _write(self, data: bytes, lines: int) -> str | None:
        offset = 0
        try:
            now = time.monotonic()
            if now >= self._check_at:
                self._check_at = now + CHECK_SECONDS
                self._check_path()
            if self._disk_full and self._fd is not None and not _has_free_blocks(self._fd):
                # The tail of the file's last block would take a short block now and then:
                # "written again" while the disk is still full. Wait for a free block.
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            while offset < len(data):
                if self._fd is None:
                    self._open()
                end = self._fitting(data, offset)
                if end == offset:
                    self._rotate()
                    continue
                self._write_all(data if end - offset == len(data) else data[offset:end])
                offset = end
        except OSError as exc:
            self.lost_lines += data.count(b"\n", offset) if offset else lines
            self._disk_full = exc.errno == errno.ENOSPC
            if self._failure is None:
                self._failure = exc.strerror or str(exc)
                return (
                    f"cannot write {self.path}: {self._failure}; "
                    "its lines are lost until writing works again"
                )
            return None
        if self._failure is not None:
            self._disk_full = False
            lost, self.lost_lines, self._failure = self.lost_lines, 0, None
            return f"{self.path} is written again; {lost} lines could not be written"
        return None

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:  # the directory was removed: make it again
            os.makedirs(self.path.parent, exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
        stat = os.fstat(fd)
        self._fd, self._inode, self._size = fd, identity(stat), stat.st_size

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _check_path(self) -> None:
        """Reopen if the path no longer leads to our file (deleted or moved away)."""
        if self._fd is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._close()
            return
        if identity(stat) != self._inode:
            self._close()
        else:
            self._size = stat.st_size  # truncated by someone else (copytruncate)

    def _fitting(self, data: bytes, offset: int) -> int:
        """Where the part of ``data[offset:]`` that goes into the current file ends."""
        room = self.max_bytes - self._size
        if not self.max_bytes or len(data) - offset <= room:
            return len(data)
        cut = data.rfind(b"\n", offset, offset + max(room, 0)) + 1
        if cut:
            return cut
        if self._size == 0:  # a single line longer than the limit goes whole
            return data.find(b"\n", offset) + 1 or len(data)
        return offset

    def _rotate(self) -> None:
        self._close()
        # Freeing the blocks of a dropped 10 MiB file takes a file system tens of
        # milliseconds: it is renamed out of the way (metadata only, like the other
        # renames here) and deleted in a thread of its own, once per rotation.
        dropped = f"{self.path}.{self.backups}" if self.backups else str(self.path)
        doomed = f"{self.path}.deleting"
        try:
            os.replace(dropped, doomed)
        except FileNotFoundError:
            pass
        else:
            threading.Thread(target=_unlink_quietly, args=(doomed,), daemon=True).start()
        if self.backups:
            for number in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{number}", f"{self.path}.{number + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def _write_all(self, chunk: bytes) -> None:
        assert self._fd is not None
        written = 0
        try:
            while written < len(chunk):
                written += os.write(self._fd, chunk[written:] if written else chunk)
        except OSError:
            if written:  # take back the part of a line that went out (disk full mid-write)
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
            raise
        self._size += written


def _has_free_blocks(fd: int) -> bool:
    """Whether the file system of *fd* has a block free for us (root may use the reserve)."""
    try:
        stat = os.fstatvfs(fd)
    except OSError:
        return True  # cannot tell: let the write find out
    return (stat.f_bfree if os.geteuid() == 0 else stat.f_bavail) > 0


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class LogFiles:
    """Every log file of the manager, one :class:`LogFile` per path, opened on first write."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files: dict[str, LogFile] = {}

    def get(self, name: str, settings: GlobalSettings | BotConfig) -> LogFile:
        """The file ``<directory>/<name>.log``, rotated as *settings* say (also when it is
        open already: a reload may have changed them)."""
        max_bytes, backups = log_limits(settings)
        log_file = self._files.get(name)
        if log_file is None:
            log_file = self._files[name] = LogFile(self.directory / f"{name}.log")
        log_file.set_limits(max_bytes, backups)
        return log_file

    def reopen(self) -> None:
        for log_file in self._files.values():
            log_file.reopen()

    def close(self) -> None:
        for log_file in self._files.values():
            log_file.close()


class LogFileHandler(logging.Handler):
    """Sends log records to a :class:`LogFile`, each line ``<timestamp> <formatted record>``.

    Thread-safe (the file has its lock); disk-full and vanished files are handled there.
    """

    def __init__(self, log_file: LogFile):
        super().__init__()
        self.log_file = log_file

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            data = iso_stamp(record.created) + b" " + text.encode("utf-8", "replace") + b"\n"
            self.log_file.write(data, text.count("\n") + 1)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.log_file.close()
        super().close()
