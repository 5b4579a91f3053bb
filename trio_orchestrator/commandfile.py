"""The command file: ``echo "restart X" >> bot_commands.txt`` while the manager runs.

Writers append without any lock, so a line can land at any moment, even into a file we
have just renamed (a writer that opened it before the rename writes there). To lose
nothing and run nothing twice, each poll

1. reads the complete lines appended to the *processing* file
   (``bot_commands.txt.processing``, the command file as it was when we last renamed it).
   Once that file has not changed for :data:`SETTLE_SECONDS` (measured by us, so clock
   jumps do not matter), its unterminated last line, if any, counts too, and the file is
   deleted: a writer that opened it before the rename has had that long to write;
2. reads the command file. If no processing file is left, the command file is first
   renamed to the processing file and recreated, so it never grows without bound;
   otherwise its complete lines are read in place, so a busy writer is never kept waiting
   for the processing file to settle.

The byte offset reached in each file is kept per inode (a rename keeps the inode) in
``bot_commands.txt.offset``, saved after every executed command, so a manager killed
mid-file resumes after the last command it ran rather than repeating it.

Reads are bounded: a read takes at most :data:`MAX_LINES_PER_READ` lines, a line longer than
:data:`~trio_orchestrator.commands.MAX_COMMAND_LENGTH` is skipped with a warning, and a
path that is not a readable regular file (a FIFO, a symlink, ``/dev/zero``, a directory)
is never read or renamed: it draws one warning and is retried at each poll.
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
from trio_orchestrator.fileid import identity, path_identity

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from trio_orchestrator.commands import Command

__all__ = ["HEADER", "SETTLE_SECONDS", "CommandFile"]

LOGGER = logging.getLogger(__name__)

HEADER = (
    b"# trio-orch command file: append one command per line while `trio-orch start_all` runs,\n"
    b'# e.g.  echo "restart MyBot" >> bot_commands.txt\n'
    b"# Commands: start|stop|restart|pause|resume|update NAME, status_all\n"
)
MAX_LINES_PER_READ = 1000
SKIP_CHUNK = 64 * 1024
# How long the processing file must stay unchanged before it is finished and deleted: the
# longest a writer may take between opening the command file and writing its line.
SETTLE_SECONDS = 2.0


@attrs.frozen
class _Line:
    text: str | None  # None: the line was too long or not text
    end: int  # offset just after the line


def _stat_key(path: Path) -> tuple[int, ...] | None:
    """What changes when *path* is appended to, replaced, or removed (None: missing)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_mode)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _ensure_file(path: Path) -> None:
    """Create the command file with its header unless something is already there."""
    try:
        # O_APPEND: a writer may append its line between our create and our write; the
        # header then goes after it instead of overwriting it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return
    try:
        os.write(fd, HEADER)
    finally:
        os.close(fd)


def _open_regular(path: Path) -> int:
    """Open *path* for reading if it is a regular file (not a symlink); return the fd.

    Never blocks: a FIFO is opened non-blocking and then refused.

    Raises:
        FileNotFoundError: nothing is there.
        OSError: it is not a readable regular file (the message says why).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(path):
            raise OSError(f"{path} is a symbolic link; ignoring it") from None
        raise exc from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file; ignoring it")
    return fd


def _inspect(path: Path) -> os.stat_result | None:
    """The stat of *path* if it is a readable regular file, None if it is missing."""
    try:
        fd = _open_regular(path)
    except FileNotFoundError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _holds_commands(path: Path, info: os.stat_result) -> bool:
    """Whether the command file holds anything but our header."""
    if info.st_size == 0:
        return False
    if info.st_size != len(HEADER):
        return True
    with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
        return handle.read(len(HEADER) + 1) != HEADER
    return False


def _read_lines(path: Path, offsets: dict[int, int], final: bool) -> tuple[list[_Line], int]:
    """Read up to :data:`MAX_LINES_PER_READ` complete lines of *path* after its offset.

    Returns the lines and the file's inode. With *final*, an unterminated last line counts
    as a line (its writer is long gone). Memory stays bounded whatever the file holds.
    """
    lines: list[_Line] = []
    with os.fdopen(_open_regular(path), "rb") as handle:
        info = os.fstat(handle.fileno())
        offset = offsets.get(info.st_ino, 0)
        if offset > info.st_size:  # truncated or replaced behind our back
            offset = 0
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
        settle: how long the processing file must stay unchanged before it is finished
            (:data:`SETTLE_SECONDS`; tests pass shorter times).
    """

    path: Path
    execute: Callable[[Command], Awaitable[object]]
    settle: float = SETTLE_SECONDS
    _warned: str | None = None
    _offsets: dict[int, int] | None = None  # inode -> bytes already executed
    # The processing file's (inode, size) when last seen changing, and when that was.
    _seen: tuple[int, int] | None = None
    _seen_at: float = 0.0
    _offset_fd: int | None = None
    # Both files' stat keys when a poll last found nothing to do.
    _idle_signature: tuple[tuple[int, ...] | None, ...] | None = None

    @property
    def processing_path(self) -> Path:
        return self.path.with_name(self.path.name + ".processing")

    @property
    def offset_path(self) -> Path:
        return self.path.with_name(self.path.name + ".offset")

    def _load_offsets(self) -> dict[int, int]:
        offsets = {}
        try:
            text = self.offset_path.read_text()
        except (OSError, UnicodeDecodeError):
            return offsets
        for line in text.splitlines():
            if line == ".":  # the end; what follows is left over from a longer record
                break
            with contextlib.suppress(ValueError):
                inode, offset = map(int, line.split())
                offsets[inode] = offset
        return offsets

    def _save_offsets(self) -> None:
        """Overwrite the offset file in place with one ``pwrite``: cheap, and a process
        killed at any moment leaves the old record or the new one, never a mix."""
        assert self._offsets is not None
        text = "".join(f"{inode} {offset}\n" for inode, offset in self._offsets.items())
        fd = self._offset_fd
        if fd is not None and identity(os.fstat(fd)) != path_identity(self.offset_path):
            os.close(fd)  # deleted or replaced behind our back
            fd = self._offset_fd = None
        if fd is None:
            fd = os.open(self.offset_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._offset_fd = fd
        os.pwrite(fd, f"{text}.\n".encode(), 0)

    def close(self) -> None:
        """Release the offset file (:meth:`run` does this when it ends)."""
        if self._offset_fd is not None:
            os.close(self._offset_fd)
            self._offset_fd = None

    async def run(self, interval: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Poll every *interval* seconds until cancelled.

        **Cancellation:** may interrupt between two commands, or during one; the offset
        file records the last command completed, so nothing is lost or repeated (a
        command interrupted mid-way runs again).
        """
        with self._warnings():
            await trio.to_thread.run_sync(_ensure_file, self.path)
        task_status.started()
        try:
            while True:
                await self.poll()
                await trio.sleep(interval)
        finally:
            self.close()

    @contextlib.contextmanager
    def _warnings(self):
        """Log an OSError as a warning, once until the problem changes or goes away."""
        try:
            yield
        except OSError as exc:
            message = str(exc) if exc.errno is None else f"{exc.strerror}: {exc.filename}"
            if isinstance(exc, FileNotFoundError) and not self.path.parent.is_dir():
                message = f"directory {self.path.parent} is missing; polling until it is back"
            if message != self._warned:  # say it once, not every poll
                LOGGER.warning("command file: %s", message)
                self._warned = message
        else:
            if self._warned is not None:
                LOGGER.info("command file %s is read again", self.path)
            self._warned = None

    async def poll(self) -> None:
        """One poll: run every complete command appended since the last one.

        **Cancellation:** as :meth:`run`.
        """
        with self._warnings():
            await self._poll()

    def _signature(self) -> tuple[tuple[int, ...] | None, ...]:
        return tuple(_stat_key(path) for path in (self.processing_path, self.path))

    async def _poll(self) -> None:
        # The common case, nothing appended, costs one stat of each file in one thread
        # trip: a manager idling with 100 bots should not burn CPU here.
        signature = await trio.to_thread.run_sync(self._signature)
        if signature == self._idle_signature:
            return
        self._idle_signature = None
        if self._offsets is None:
            self._offsets = await trio.to_thread.run_sync(self._load_offsets)
        processing = await trio.to_thread.run_sync(_inspect, self.processing_path)
        if processing is not None:
            processing = await self._advance_processing(processing)
        current = await trio.to_thread.run_sync(_inspect, self.path)
        live = {info.st_ino for info in (processing, current) if info is not None}
        if stale := self._offsets.keys() - live:
            for inode in stale:
                del self._offsets[inode]
            await trio.to_thread.run_sync(self._save_offsets)
        if current is None:
            await trio.to_thread.run_sync(_ensure_file, self.path)
        elif processing is None:
            if await trio.to_thread.run_sync(self._take, current):
                self._seen = (current.st_ino, current.st_size)
                self._seen_at = trio.current_time()
                await self._drain(self.processing_path, final=False)
            else:
                # Nothing to run; until either file changes, the next polls can skip.
                self._idle_signature = signature
        else:
            await self._drain(self.path, final=False)

    async def _advance_processing(self, info: os.stat_result) -> os.stat_result | None:
        """Run the processing file's new lines; finish it once settled. None if finished."""
        await self._drain(self.processing_path, final=False)
        now = trio.current_time()
        if self._seen != (info.st_ino, info.st_size):
            self._seen, self._seen_at = (info.st_ino, info.st_size), now
            return info
        if now - self._seen_at < self.settle:
            return info
        await self._drain(self.processing_path, final=True)
        await trio.to_thread.run_sync(_remove, self.processing_path)
        assert self._offsets is not None
        if self._offsets.pop(info.st_ino, None) is not None:
            await trio.to_thread.run_sync(self._save_offsets)
        self._seen = None
        return None

    def _take(self, info: os.stat_result) -> bool:
        """Rename the command file to the processing file if it holds commands."""
        if not _holds_commands(self.path, info):
            return False
        os.rename(self.path, self.processing_path)
        _ensure_file(self.path)
        return True

    async def _drain(self, path: Path, *, final: bool) -> None:
        assert self._offsets is not None
        while True:
            lines, inode = await trio.to_thread.run_sync(_read_lines, path, self._offsets, final)
            if not lines:
                return
            unsaved = False
            for line in lines:
                executed = await self._run_line(line)
                self._offsets[inode] = line.end
                unsaved = not executed
                if executed:  # saved before the next command starts: never run twice
                    await trio.to_thread.run_sync(self._save_offsets)
            if unsaved:  # comments and bad lines: saved once per read
                await trio.to_thread.run_sync(self._save_offsets)

    async def _run_line(self, line: _Line) -> bool:
        """Run one line; False if it was blank, a comment or bad (and then logged)."""
        if line.text is None:
            LOGGER.warning(
                "command file: skipped a line that is not text or longer than %d bytes",
                MAX_COMMAND_LENGTH,
            )
            return False
        try:
            command = parse_command(line.text)
        except BadCommand as exc:
            LOGGER.warning("command file: bad line %r: %s", line.text.strip()[:200], exc)
            return False
        if command is None:
            return False
        await self.execute(command)
        return True
