"""The command file: ``echo "restart X" >> bot_commands.txt`` while the manager runs.

Writers append without any lock, so lines can land at any moment. To lose nothing and run
nothing twice, each poll

1. finishes the *processing* file (``bot_commands.txt.processing``) left by the previous
   poll: reads whatever was appended after we last read it (a writer that opened the file
   before our rename still writes there), then deletes it;
2. if the command file holds anything, renames it to the processing file, recreates the
   command file and executes the renamed file's lines.

Progress through the processing file (its inode and byte offset) is saved to
``bot_commands.txt.offset`` after every executed command, so a manager killed mid-file
resumes after the last command it ran rather than repeating it.

Reads are bounded: a read takes at most :data:`MAX_LINES_PER_READ` lines, a line longer than
:data:`~trio_orchestrator.commands.MAX_COMMAND_LENGTH` is skipped with a warning, and a
path that is not a regular file (a FIFO, ``/dev/zero``, a directory) is never read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from typing import TYPE_CHECKING

import attrs
import trio

from trio_orchestrator.commands import MAX_COMMAND_LENGTH, BadCommand, parse_command

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from trio_orchestrator.commands import Command

__all__ = ["HEADER", "CommandFile"]

LOGGER = logging.getLogger(__name__)

HEADER = (
    b"# trio-orch command file: append one command per line while `trio-orch start_all` runs,\n"
    b'# e.g.  echo "restart MyBot" >> bot_commands.txt\n'
    b"# Commands: start|stop|restart|pause|resume|update NAME, status_all\n"
)
MAX_LINES_PER_READ = 1000
SKIP_CHUNK = 64 * 1024


@attrs.frozen
class _Line:
    text: str | None  # None: the line was too long or not text
    end: int  # offset just after the line


def _ensure_file(path: Path) -> None:
    """Create the command file with its header unless something is already there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(HEADER)


def _regular_file_size(path: Path) -> int | None:
    """The size of *path* if it is a regular file (following a symlink), else None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file; ignoring it")
    return info.st_size


def _read_lines(path: Path, offset: int, final: bool) -> tuple[list[_Line], int]:
    """Read up to :data:`MAX_LINES_PER_READ` complete lines of *path* from *offset*.

    Returns the lines and the file's inode. With *final*, an unterminated last line counts
    as a line (its writer is long gone). Memory stays bounded whatever the file holds.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    lines: list[_Line] = []
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file; ignoring it")
        handle.seek(offset)
        while len(lines) < MAX_LINES_PER_READ:
            raw = handle.readline(MAX_COMMAND_LENGTH + 1)
            if raw.endswith(b"\n"):
                lines.append(_decode(raw[:-1], handle.tell()))
            elif len(raw) <= MAX_COMMAND_LENGTH:  # end of file, maybe mid-line
                if raw and final:
                    lines.append(_decode(raw, handle.tell()))
                break
            else:  # an enormous line: skip to its end without keeping it
                while (piece := handle.readline(SKIP_CHUNK)) and not piece.endswith(b"\n"):
                    pass
                if not piece and not final:
                    break  # not finished yet; its writer may still be writing
                lines.append(_Line(None, handle.tell()))
    return lines, info.st_ino


def _decode(raw: bytes, end: int) -> _Line:
    if len(raw) > MAX_COMMAND_LENGTH:
        return _Line(None, end)
    try:
        return _Line(raw.decode("utf-8"), end)
    except UnicodeDecodeError:
        return _Line(None, end)


@attrs.define
class CommandFile:
    """Polls *path* and runs each command through *execute*.

    Args:
        path: the command file.
        execute: awaited once per command, in file order; must not raise.
    """

    path: Path
    execute: Callable[[Command], Awaitable[object]]
    _warned: str | None = None

    @property
    def processing_path(self) -> Path:
        return self.path.with_name(self.path.name + ".processing")

    @property
    def offset_path(self) -> Path:
        return self.path.with_name(self.path.name + ".offset")

    def _load_offset(self, inode: int) -> int:
        try:
            saved_inode, saved_offset = self.offset_path.read_text().split()
            return int(saved_offset) if int(saved_inode) == inode else 0
        except (OSError, ValueError):
            return 0

    def _save_offset(self, inode: int, offset: int) -> None:
        temporary = self.offset_path.with_name(self.offset_path.name + ".tmp")
        temporary.write_text(f"{inode} {offset}\n")
        os.replace(temporary, self.offset_path)

    def _finish_processing(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.processing_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.offset_path)

    def _take_pending(self) -> bool:
        """Rename the command file to the processing file if it holds commands."""
        size = _regular_file_size(self.path)
        if size is None:
            _ensure_file(self.path)
            return False
        if size == 0 or (size == len(HEADER) and self.path.read_bytes() == HEADER):
            return False
        os.rename(self.path, self.processing_path)
        self._save_offset(os.stat(self.processing_path).st_ino, 0)
        _ensure_file(self.path)
        return True

    async def run(self, interval: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Poll every *interval* seconds until cancelled.

        **Cancellation:** may interrupt between two commands; the offset file records
        the last command run, so nothing is lost or repeated.
        """
        await trio.to_thread.run_sync(_ensure_file, self.path)
        task_status.started()
        while True:
            await self.poll()
            await trio.sleep(interval)

    async def poll(self) -> None:
        """One poll: finish the previous processing file, then take and run new commands."""
        try:
            if await trio.to_thread.run_sync(os.path.lexists, self.processing_path):
                await self._drain(final=True)
                await trio.to_thread.run_sync(self._finish_processing)
            if await trio.to_thread.run_sync(self._take_pending):
                await self._drain(final=False)
            self._warned = None
        except OSError as exc:
            message = str(exc) if exc.errno is None else f"{exc.strerror}: {exc.filename}"
            if message != self._warned:  # say it once, not every poll
                LOGGER.warning("command file: %s", message)
                self._warned = message

    def _next_lines(self, final: bool) -> tuple[list[_Line], int]:
        path = self.processing_path
        return _read_lines(path, self._load_offset(os.stat(path).st_ino), final)

    async def _drain(self, *, final: bool) -> None:
        while True:
            lines, inode = await trio.to_thread.run_sync(self._next_lines, final)
            if not lines:
                return
            for line in lines:
                await self._run_line(line)
                await trio.to_thread.run_sync(self._save_offset, inode, line.end)

    async def _run_line(self, line: _Line) -> None:
        if line.text is None:
            LOGGER.warning(
                "command file: skipped a line that is not text or longer than %d bytes",
                MAX_COMMAND_LENGTH,
            )
            return
        try:
            command = parse_command(line.text)
        except BadCommand as exc:
            LOGGER.warning("command file: bad line %r: %s", line.text.strip()[:200], exc)
            return
        if command is not None:
            await self.execute(command)
