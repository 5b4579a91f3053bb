"""The command file (SPEC 6.2), driven directly with a recording ``execute``.

Real files and real writer processes; the real clock with ``trio.fail_after``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tracemalloc

import pytest
import trio
from helpers import until

from trio_orchestrator import commandfile
from trio_orchestrator.commandfile import HEADER, SETTLE_SECONDS, CommandFile
from trio_orchestrator.commands import MAX_COMMAND_LENGTH, Command

WARNING = "trio_orchestrator.commandfile"


class Recorder:
    """A stand-in for ``Supervisor.execute`` that records each command as text."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def __call__(self, command: Command) -> None:
        self.commands.append(str(command))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def settle():
    """The command file's settle time; a test overrides it with
    ``@pytest.mark.parametrize("settle", [seconds])``."""
    return SETTLE_SECONDS


@pytest.fixture
def command_file(tmp_path, recorder, settle):
    command_file = CommandFile(tmp_path / "bot_commands.txt", recorder, settle=settle)
    yield command_file
    command_file.close()


def append(path, text: str | bytes) -> None:
    """``echo >>``: open for append, write, close; no lock."""
    with open(path, "ab") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_missing_file_is_created_with_a_header(command_file, recorder):
    await command_file.poll()
    assert command_file.path.read_bytes() == HEADER
    assert recorder.commands == []


async def test_run_creates_the_file_before_it_reports_started(command_file):
    async with trio.open_nursery() as nursery:
        await nursery.start(command_file.run, 60)
        assert command_file.path.read_bytes() == HEADER
        nursery.cancel_scope.cancel()


async def test_a_header_only_file_is_left_alone(command_file, recorder):
    await command_file.poll()
    inode = command_file.path.stat().st_ino
    for _ in range(3):
        await command_file.poll()
    assert command_file.path.stat().st_ino == inode
    assert not command_file.processing_path.exists()
    assert recorder.commands == []


async def test_deleted_file_is_recreated(command_file, recorder):
    await command_file.poll()
    command_file.path.unlink()
    await command_file.poll()
    assert command_file.path.read_bytes() == HEADER
    append(command_file.path, "start A\n")
    await command_file.poll()
    assert recorder.commands == ["start A"]


async def test_file_created_by_a_writer_without_header(command_file, recorder):
    append(command_file.path, "stop A\n")
    await command_file.poll()
    assert recorder.commands == ["stop A"]
    assert command_file.path.read_bytes() == HEADER


@pytest.mark.parametrize("settle", [0.0])  # finished on the poll after the last change
async def test_commands_run_in_order_and_files_are_cleaned_up(command_file, recorder):
    await command_file.poll()
    append(command_file.path, "start A\nstop B\nrestart C\npause D\nresume E\nupdate F\n")
    append(command_file.path, "status_all\nstatus_all dummy\n")
    await command_file.poll()
    assert recorder.commands == [
        "start A",
        "stop B",
        "restart C",
        "pause D",
        "resume E",
        "update F",
        "status_all",
        "status_all",
    ]
    assert command_file.path.read_bytes() == HEADER
    await command_file.poll()  # the processing file has settled: finished and removed
    await command_file.poll()
    assert not command_file.processing_path.exists()
    assert len(recorder.commands) == 8
    # Only the live command file may keep an offset; the finished file's entry is gone.
    assert command_file._load_offsets().keys() <= {command_file.path.stat().st_ino}


async def test_bad_lines_are_reported_and_later_lines_still_run(command_file, recorder, caplog):
    await command_file.poll()
    append(
        command_file.path,
        "start A\nfrobnicate A\n\n# a comment\nstop\nstatus A B\n   \nstop B\n",
    )
    with caplog.at_level(logging.WARNING, logger=WARNING):
        await command_file.poll()
    assert recorder.commands == ["start A", "stop B"]
    warnings = warnings_of(caplog)
    assert len(warnings) == 3
    assert "'frobnicate A'" in warnings[0]
    assert "unknown action" in warnings[0]
    assert "'stop'" in warnings[1]
    assert "'status A B'" in warnings[2]  # `restart A B` is valid since issue 12.2


@pytest.mark.parametrize("settle", [0.3])
async def test_unterminated_last_line_runs_once_the_file_has_settled(command_file, recorder):
    append(command_file.path, "start A\nstart B")  # `printf` without a newline
    await command_file.poll()
    assert recorder.commands == ["start A"]
    await command_file.poll()
    assert recorder.commands == ["start A"]  # its writer may still be writing
    await trio.sleep(0.35)
    await command_file.poll()
    assert recorder.commands == ["start A", "start B"]
    for _ in range(3):
        await command_file.poll()
    assert recorder.commands == ["start A", "start B"]
    assert not command_file.processing_path.exists()


async def test_writer_that_opened_before_the_rename_is_not_lost(command_file, recorder):
    """The race of the original: a line lands after our read, before our clean-up."""
    await command_file.poll()
    append(command_file.path, "start A\n")
    early_writer = open(command_file.path, "ab")  # opened before the rename  # noqa: SIM115
    await command_file.poll()  # renames the file and runs "start A"
    assert recorder.commands == ["start A"]
    early_writer.write(b"start B\n")  # lands in the renamed file
    early_writer.close()
    append(command_file.path, "start C\n")  # a later writer uses the new file
    await command_file.poll()
    await command_file.poll()
    assert recorder.commands == ["start A", "start B", "start C"]


@pytest.mark.parametrize("settle", [0.5])
async def test_stalled_writer_within_the_settle_time_is_not_lost(command_file, recorder):
    append(command_file.path, "start A\n")
    stalled = open(command_file.path, "ab")  # noqa: SIM115
    # Many polls (a short poll interval) pass while the writer is stalled.
    for i in range(5):
        await command_file.poll()
        append(command_file.path, f"stop X{i}\n")
        await trio.sleep(0.01)
    stalled.write(b"start B\n")
    stalled.close()
    await command_file.poll()
    await trio.sleep(0.6)
    await command_file.poll()
    await command_file.poll()
    assert sorted(recorder.commands) == sorted(
        ["start A", "start B", *[f"stop X{i}" for i in range(5)]]
    )
    assert recorder.commands.count("start B") == 1


async def test_resume_from_offset_left_by_a_killed_manager(command_file, recorder):
    """A processing file and offset file as a killed manager leaves them."""
    lines = [f"restart B{i}\n" for i in range(6)]
    command_file.processing_path.write_text("".join(lines))
    executed = sum(len(line) for line in lines[:3])
    inode = command_file.processing_path.stat().st_ino
    command_file.offset_path.write_text(f"{inode} {executed}\n")
    append(command_file.path, "stop Later\n")
    await command_file.poll()
    assert recorder.commands == ["restart B3", "restart B4", "restart B5", "stop Later"]


async def test_offset_of_another_inode_is_ignored(command_file, recorder):
    command_file.processing_path.write_text("start A\nstart B\n")
    inode = command_file.processing_path.stat().st_ino
    command_file.offset_path.write_text(f"{inode + 1} 8\ngarbage\n")
    await command_file.poll()
    assert recorder.commands == ["start A", "start B"]


KILLED_MANAGER = """
import os, signal, sys
from pathlib import Path
import trio
from trio_orchestrator.commandfile import CommandFile

record = Path(sys.argv[2])

async def execute(command):
    if command.name == "B3":
        os.kill(os.getpid(), signal.SIGKILL)  # dies before B3 has any effect
    with record.open("a") as handle:
        handle.write(f"{command}\\n")

async def main():
    await CommandFile(Path(sys.argv[1]), execute).poll()

trio.run(main)
"""


async def test_resume_after_sigkill_runs_nothing_twice(command_file, recorder, tmp_path):
    record = tmp_path / "record.txt"
    append(command_file.path, "".join(f"restart B{i}\n" for i in range(6)))
    process = await trio.run_process(
        [sys.executable, "-c", KILLED_MANAGER, str(command_file.path), str(record)], check=False
    )
    assert process.returncode == -signal.SIGKILL
    assert record.read_text().split("\n")[:-1] == ["restart B0", "restart B1", "restart B2"]
    assert command_file.processing_path.exists()
    # A new manager resumes after the last executed line.
    await command_file.poll()
    assert recorder.commands == ["restart B3", "restart B4", "restart B5"]
    await command_file.poll()
    assert len(recorder.commands) == 3


async def test_huge_line_and_binary_garbage_are_skipped_in_bounded_memory(
    command_file, recorder, caplog
):
    huge = 11 * 1024 * 1024
    with open(command_file.path, "wb") as handle:
        handle.write(b"start A\n")
        handle.write(b"x" * huge + b"\n")
        handle.write(b"\xff\xfe\x00\x80 garbage \xc3\x28\n")
        handle.write(os.urandom(4096).replace(b"\n", b"") + b"\n")
        handle.write(b"\x00\x00\x00\n")
        handle.write(b"start B\n")
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger=WARNING):
            await command_file.poll()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert recorder.commands == ["start A", "start B"]
    assert peak < 1024 * 1024, f"peak {peak} bytes while reading an 11 MB line"
    warnings = warnings_of(caplog)
    assert sum("skipped a line" in w for w in warnings) == 3  # huge, invalid UTF-8, random
    assert any("bad line" in w for w in warnings)  # NULs decode, then do not parse


async def test_huge_line_still_being_written_is_skipped_once_complete(command_file, recorder):
    await command_file.poll()
    append(command_file.path, b"start A\n" + b"y" * (2 * MAX_COMMAND_LENGTH + 10))
    await command_file.poll()
    assert recorder.commands == ["start A"]
    append(command_file.path, b"yyy\nstart B\n")
    await command_file.poll()
    await command_file.poll()
    assert recorder.commands == ["start A", "start B"]


async def test_ten_thousand_commands_appended_at_once(command_file, recorder):
    count = 10_000
    await command_file.poll()
    append(command_file.path, "".join(f"stop B{i}\n" for i in range(count)))
    with trio.fail_after(30):
        while len(recorder.commands) < count:
            await command_file.poll()
    await command_file.poll()
    assert recorder.commands == [f"stop B{i}" for i in range(count)]


def _make_fifo(path):
    os.mkfifo(path)


def _make_dev_zero_link(path):
    path.symlink_to("/dev/zero")


def _make_directory(path):
    path.mkdir()


def _make_link_to_regular_file(path):
    target = path.with_name("elsewhere.txt")
    target.write_text("start Hidden\n")
    path.symlink_to(target)


@pytest.mark.parametrize(
    "make",
    [_make_fifo, _make_dev_zero_link, _make_directory, _make_link_to_regular_file],
    ids=["fifo", "symlink-dev-zero", "directory", "symlink-regular"],
)
async def test_not_a_regular_file_warns_once_and_recovers(command_file, recorder, caplog, make):
    make(command_file.path)
    with caplog.at_level(logging.WARNING, logger=WARNING), trio.fail_after(5):
        for _ in range(3):
            await command_file.poll()
    warnings = warnings_of(caplog)
    assert len(warnings) == 1, warnings
    assert str(command_file.path) in warnings[0]
    assert recorder.commands == []
    # The operator fixes it: valid commands run again.
    if command_file.path.is_dir() and not command_file.path.is_symlink():
        command_file.path.rmdir()
    else:
        command_file.path.unlink()
    append(command_file.path, "start A\n")
    await command_file.poll()
    assert recorder.commands == ["start A"]


async def test_missing_directory_warns_and_recovers(tmp_path, recorder, caplog):
    command_file = CommandFile(tmp_path / "later" / "bot_commands.txt", recorder)
    with caplog.at_level(logging.WARNING, logger=WARNING):
        async with trio.open_nursery() as nursery:
            await nursery.start(command_file.run, 0.01)
            await trio.sleep(0.05)
            (tmp_path / "later").mkdir()
            with trio.fail_after(5):
                await until(command_file.path.exists)
            append(command_file.path, "start A\n")
            with trio.fail_after(5):
                await until(lambda: recorder.commands)
            nursery.cancel_scope.cancel()
    assert recorder.commands == ["start A"]
    assert len(warnings_of(caplog)) == 1


UNREADABLE = """
import json, logging, os, sys
from pathlib import Path
import trio
from trio_orchestrator.commandfile import CommandFile

logging.basicConfig(level=logging.WARNING, format="%(message)s")
path = Path(sys.argv[1])
executed = []
if os.geteuid() == 0:  # root reads anything: become nobody, once everything is loaded
    trio.run(trio.to_thread.run_sync, os.getpid)
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

async def execute(command):
    executed.append(str(command))

async def main():
    command_file = CommandFile(path, execute)
    path.write_text("start A\\n")
    path.chmod(0o200)  # write-only: writers can still append
    with open(path, "a") as handle:
        handle.write("start B\\n")
    with trio.fail_after(5):
        for _ in range(3):
            await command_file.poll()
    before = list(executed)
    renamed = command_file.processing_path.exists()
    path.chmod(0o644)  # fixed
    await command_file.poll()
    print(json.dumps({"before": before, "renamed": renamed, "after": executed}))

trio.run(main)
"""


def test_unreadable_file_warns_and_recovers():
    directory = tempfile.mkdtemp(prefix="trio-orch-unreadable-")
    try:
        os.chmod(directory, 0o777)
        result = subprocess.run(
            [sys.executable, "-c", UNREADABLE, os.path.join(directory, "bot_commands.txt")],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=directory,
        )
    finally:
        shutil.rmtree(directory)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome == {"before": [], "renamed": False, "after": ["start A", "start B"]}
    warnings = [line for line in result.stderr.splitlines() if "command file" in line]
    assert len(warnings) == 1, result.stderr
    assert "Permission denied" in warnings[0]


WRITER = """
import random, sys, time
path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(prefix)
i = 0
while i < count:
    for _ in range(rng.randint(1, 25)):
        if i == count:
            break
        with open(path, "a") as handle:  # echo "start W-i" >> path
            handle.write(f"start {prefix}-{i}\\n")
        i += 1
    time.sleep(rng.random() * 0.004)
"""


def numbered(commands: list[str], prefix: str) -> list[int]:
    return [int(c.rsplit("-", 1)[1]) for c in commands if c.startswith(f"start {prefix}-")]


@pytest.mark.parametrize("settle", [1.0])
async def test_concurrent_writers_every_command_exactly_once_in_order(command_file, recorder):
    """Two processes keep appending (no lock) while we poll every 5 ms."""
    # Several renames during the run. Not shorter: a writer descheduled for longer than
    # this between its open() and its write() (a loaded CI machine) would lose its line,
    # which is the documented limit of lock-free appends (2 s in production).
    count = 2500
    writers = ["W0", "W1"]
    async with trio.open_nursery() as nursery:
        await nursery.start(command_file.run, 0.005)
        with trio.fail_after(60):
            async with trio.open_nursery() as writing:
                for prefix in writers:
                    writing.start_soon(
                        trio.run_process,
                        [sys.executable, "-c", WRITER, str(command_file.path), prefix, str(count)],
                    )
            await until(lambda: len(recorder.commands) >= count * len(writers))
            await trio.sleep(0.3)  # nothing more arrives
        nursery.cancel_scope.cancel()
    assert len(recorder.commands) == count * len(writers)
    for prefix in writers:
        assert numbered(recorder.commands, prefix) == list(range(count))


async def test_poll_cancelled_mid_command_resumes_there(command_file, recorder):
    """Shutdown during a command: the command not completed runs again, nothing else."""
    append(command_file.path, "start A\nstart B\nstart C\n")
    blocked = trio.Event()

    async def execute(command: Command) -> None:
        if command.name == "B":
            blocked.set()
            await trio.sleep_forever()
        await recorder(command)

    first = CommandFile(command_file.path, execute)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.poll)
        await blocked.wait()
        nursery.cancel_scope.cancel()
    assert recorder.commands == ["start A"]
    await command_file.poll()
    assert recorder.commands == ["start A", "start B", "start C"]


def test_header_never_overwrites_a_line_appended_while_the_file_is_created(tmp_path, monkeypatch):
    """A writer may append between our create and our header write (found in CI: a lost
    line). The header must land after the line, not on top of it."""
    path = tmp_path / "bot_commands.txt"
    real_write = os.write

    def write_after_a_writer(fd, data):
        with open(path, "a") as writer:  # echo "start A" >> bot_commands.txt
            writer.write("start A\n")
        return real_write(fd, data)

    monkeypatch.setattr(commandfile.os, "write", write_after_a_writer)
    commandfile._ensure_file(path)
    monkeypatch.undo()
    assert path.read_bytes() == b"start A\n" + commandfile.HEADER
