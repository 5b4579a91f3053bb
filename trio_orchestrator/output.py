"""Turning bot output into prefixed lines: splitting, decoding, colouring, log files.

Pure and synchronous. The async plumbing that moves these bytes between tasks lives in
:mod:`trio_orchestrator.sink`. Everything here works on whole batches of lines with one
``join`` per batch, because a chatty bot produces hundreds of thousands of lines a second
and a Python-level loop per line would make the manager the bottleneck.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import IO, TYPE_CHECKING

from colorama import Fore, Style

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = [
    "MAX_LINE_BYTES",
    "ConsoleBuffer",
    "LineSplitter",
    "LogFiles",
    "Printer",
    "should_color",
]

MAX_LINE_BYTES = 64 * 1024

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
        return head + data[first:last]

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
    """Formats lines for the console and the per-bot logs.

    Args:
        color: whether console prefixes carry ANSI colours (see :func:`should_color`).
    """

    def __init__(self, *, color: bool):
        self.color = color
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

    def format(self, name: str, color: str, block: bytes) -> tuple[bytes, bytes]:
        """Return ``(console_bytes, log_bytes)`` for a block of one bot's lines."""
        console_prefix, plain_prefix = self._prefix(name, color)
        body = _clean(block)
        log = plain_prefix + body.replace(b"\n", b"\n" + plain_prefix) + b"\n"
        if console_prefix is plain_prefix:
            return log, log
        return console_prefix + body.replace(b"\n", b"\n" + console_prefix) + b"\n", log


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


class LogFiles:
    """Append-only per-bot log files, ``<directory>/<BotName>.log``, opened on first use."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files: dict[str, IO[bytes]] = {}

    def write_batches(self, batches: list[tuple[str, bytes]]) -> None:
        """Write ``(bot_name, data)`` pairs, then flush so ``tail -f`` sees them."""
        touched = set()
        for name, data in batches:
            handle = self._files.get(name)
            if handle is None:
                os.makedirs(self.directory, exist_ok=True)
                handle = self._files[name] = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115
            handle.write(data)
            touched.add(handle)
        for handle in touched:
            handle.flush()

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
