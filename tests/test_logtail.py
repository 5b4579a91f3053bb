"""`trio-orch logs`: tail -n across rotated files, and -f across rotations."""

from __future__ import annotations

import os
import threading
import time

from trio_orchestrator.logtail import follow, log_path, rotated, tail


def write_lines(path, lines):
    with open(path, "ab") as handle:
        handle.write(b"".join(f"{line}\n".encode() for line in lines))


def rotate(path, backups: int = 5) -> None:
    """Rename <path> to <path>.1, shifting older backups up (as the log writer does)."""
    oldest = rotated(path, backups)
    if oldest.exists():
        oldest.unlink()
    for index in range(backups - 1, 0, -1):
        if rotated(path, index).exists():
            os.rename(rotated(path, index), rotated(path, index + 1))
    os.rename(path, rotated(path, 1))
    path.touch()


def test_log_path(tmp_path):
    assert log_path(tmp_path, "Alpha") == tmp_path / "Alpha.log"
    assert log_path(tmp_path) == tmp_path / "bot_manager.log"


def test_tail_of_the_current_file(tmp_path):
    path = tmp_path / "A.log"
    write_lines(path, range(100))
    assert tail(path, 3) == [b"97\n", b"98\n", b"99\n"]
    assert len(tail(path, 1000)) == 100
    assert tail(path, 0) == []


def test_tail_continues_into_the_backups_newest_first(tmp_path):
    path = tmp_path / "A.log"
    write_lines(path, range(0, 10))
    rotate(path)
    write_lines(path, range(10, 20))
    rotate(path)
    write_lines(path, range(20, 23))
    assert tail(path, 5) == [f"{n}\n".encode() for n in range(18, 23)]
    assert tail(path, 15) == [f"{n}\n".encode() for n in range(8, 23)]
    assert tail(path, 100) == [f"{n}\n".encode() for n in range(23)]


def test_tail_right_after_a_rotation_reads_the_backup(tmp_path):
    path = tmp_path / "A.log"
    write_lines(path, range(5))
    rotate(path)
    assert tail(path, 2) == [b"3\n", b"4\n"]


def test_tail_of_a_missing_log_is_empty(tmp_path):
    assert tail(tmp_path / "nothing.log", 20) == []


def test_tail_of_long_lines_across_blocks(tmp_path):
    path = tmp_path / "A.log"
    lines = [(f"{n}:" + "x" * 40_000).encode() + b"\n" for n in range(10)]
    path.write_bytes(b"".join(lines))
    assert tail(path, 4) == lines[-4:]
    assert tail(path, 10) == lines


def test_tail_keeps_an_unterminated_last_line(tmp_path):
    path = tmp_path / "A.log"
    path.write_bytes(b"a\nb\nhalf")
    assert tail(path, 2) == [b"b\n", b"half"]


def scripted_follow(path, steps, count=20):
    """Follow *path*; each sleep of the follower runs the next step (writes, rotations)."""
    output = bytearray()
    remaining = list(steps)

    def sleep(_seconds):
        if remaining:
            remaining.pop(0)()

    follow(path, output.extend, count, sleep=sleep, keep_going=lambda: bool(remaining))
    return output.decode().splitlines()


def test_follow_prints_the_tail_then_new_lines(tmp_path):
    path = tmp_path / "A.log"
    write_lines(path, range(30))
    seen = scripted_follow(path, [lambda: write_lines(path, ["x", "y"]), lambda: None])
    assert seen == [str(n) for n in range(10, 30)] + ["x", "y"]


def test_follow_across_one_rotation_loses_and_repeats_nothing(tmp_path):
    path = tmp_path / "A.log"
    write_lines(path, ["a"])

    def append_rotate_append():
        write_lines(path, ["b", "c"])  # written after our last read, before the rename
        rotate(path)
        write_lines(path, ["d"])

    steps = [append_rotate_append, lambda: write_lines(path, ["e"]), lambda: None]
    assert scripted_follow(path, steps) == ["a", "b", "c", "d", "e"]


def test_follow_across_several_rotations_within_one_poll(tmp_path):
    path = tmp_path / "A.log"
    write_lines(path, ["0"])

    def three_rotations():
        for n in range(1, 4):
            write_lines(path, [f"{n}a", f"{n}b"])
            rotate(path)
        write_lines(path, ["4"])

    seen = scripted_follow(path, [three_rotations, lambda: None])
    assert seen == ["0", "1a", "1b", "2a", "2b", "3a", "3b", "4"]


def test_follow_waits_for_the_file_and_handles_truncation(tmp_path):
    path = tmp_path / "A.log"
    steps = [
        lambda: None,
        lambda: write_lines(path, ["first"]),
        lambda: path.write_bytes(b""),  # truncated in place (copytruncate)
        lambda: write_lines(path, ["second"]),
        lambda: None,
    ]
    assert scripted_follow(path, steps) == ["first", "second"]


def test_follow_holds_a_partial_line_until_its_newline(tmp_path):
    path = tmp_path / "A.log"
    path.write_bytes(b"one\ntw")
    steps = [lambda: write_lines(path, ["o"]), lambda: None]
    assert scripted_follow(path, steps) == ["one", "two"]


def test_follow_while_another_thread_appends_and_rotates(tmp_path):
    """A real writer thread: every line exactly once, in order, across ~20 rotations."""
    path = tmp_path / "A.log"
    total = 4000
    path.touch()
    done = threading.Event()

    def writer():
        handle = open(path, "ab")  # noqa: SIM115
        for n in range(total):
            handle.write(f"line {n}\n".encode())
            handle.flush()
            if n % 200 == 199:
                handle.close()
                rotate(path, backups=50)
                handle = open(path, "ab")  # noqa: SIM115
            if n % 50 == 0:
                time.sleep(0.002)
        handle.close()
        done.set()

    output = bytearray()
    finished_at: list[float] = []

    def keep_going():
        # Go on for a few polls after the writer finished, to read its last lines.
        if done.is_set() and not finished_at:
            finished_at.append(time.monotonic())
        return not finished_at or time.monotonic() - finished_at[0] < 0.2

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        follow(path, output.extend, total, poll_interval=0.005, keep_going=keep_going)
    finally:
        thread.join()
    assert output.decode().splitlines() == [f"line {n}" for n in range(total)]
