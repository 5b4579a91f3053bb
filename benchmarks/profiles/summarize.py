#!/usr/bin/env python3
"""Summarize a `py-spy record --format raw --threads` profile of the manager.

    python benchmarks/profiles/summarize.py PROFILE.raw [--us-per-line 261] [--top 10]

Prints the share of samples per thread, per bucket (the innermost frame that matches one of
BUCKETS, searched from the leaf up), and the top functions by own time (leaf frame) and by
cumulative time (anywhere in the stack, counted once per sample). With --us-per-line (the
manager's CPU per line that bench.py measured in the same run) shares are also shown in
microseconds per line.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")

# (bucket, regex on "func (file)"), tried on each frame from the leaf upwards: first match wins.
BUCKETS = [
    ("wake a worker thread (lock.release: futex)", r"start_thread_soon"),
    ("log file write+flush (worker thread)", r"write_batches \("),
    ("console write+flush (worker thread)", r"_ConsoleStream\._write \("),
    ("thread naming (ctypes, per job)", r"namefunc"),
    ("worker thread idle/loop", r"WorkerThread\._work"),
    ("timestamp (iso_stamp, once per read)", r"iso_stamp"),
    ("log file write (LogFile, on the loop)", r"LogFile\."),
    ("console write (_Console, non-blocking)", r"_Console\."),
    ("pump writer (OutputSink.stream_writer)", r"stream_writer"),
    ("formatting (Printer.format, _clean)", r"(format|_clean|_prefix) \(trio_orchestrator/output"),
    ("line splitting (LineSplitter)", r"LineSplitter"),
    ("epoll (wait, registrations)", r"_io_epoll|get_events|wait_readable"),
    ("pipe read (FdStream.receive_some)", r"_unix_pipes"),
    ("wake-up from threads (entry queue, socketpair)", r"_entry_queue|_wakeup_socketpair"),
    ("to_thread_run_sync (start, result)", r"_threads\.py|_thread_cache"),
    ("memory channel send/receive", r"_channel\.py"),
    ("sink task (OutputSink, ConsoleStream)", r"trio_orchestrator/sink"),
    ("pump task (BotRunner._pump, OutputBatch)", r"_pump \(|OutputBatch"),
    ("trio scheduler (run loop, traps, outcome)", r"trio/_core|outcome"),
]


# Frames above the trio run loop (every sample has them): left out of the cumulative list.
ROOTS = re.compile(r"<frozen runpy>|trio_orchestrator/(__main__|cli)|run_manager|^run \(trio")


def parse(path: Path):
    """(thread name, [frame names]) and sample count for each line of the raw file."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = ""
        if frames[0].startswith("thread ("):
            thread = re.sub(r"\d+", "N", frames.pop(0).partition(": ")[2]).strip()
        yield thread or "?", [name(f) for f in frames if f], int(count)


def name(frame: str) -> str:
    """'func (file:line)' -> 'func (file)'."""
    m = FRAME.match(frame.strip())
    return f"{m['func']} ({m['file']})" if m else frame.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw", type=Path)
    parser.add_argument("--us-per-line", type=float)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    threads, buckets, own, cumulative = Counter(), Counter(), Counter(), Counter()
    for thread, names, count in parse(args.raw):
        threads[thread] += count
        own[names[-1] if names else thread] += count
        for n in set(names):
            if not ROOTS.search(n):
                cumulative[n] += count
        for n in reversed(names):
            if hit := next((b for b, rx in BUCKETS if re.search(rx, n)), None):
                buckets[hit] += count
                break
        else:
            buckets["other"] += count
    total = sum(threads.values())

    def show(title: str, counter: Counter, top: int | None = None) -> None:
        print(f"\n{title}")
        for key, n in counter.most_common(top):
            us = f"{n / total * args.us_per_line:6.1f} us  " if args.us_per_line else ""
            print(f"  {n / total * 100:5.1f}%  {us}{key}")

    print(f"{args.raw.name}: {total} samples")
    show("by thread", threads)
    show("by bucket (innermost matching frame)", buckets)
    show(f"top {args.top} by own time (leaf frame)", own, args.top)
    show(f"top {args.top} by cumulative time (below the entry point)", cumulative, args.top)


if __name__ == "__main__":
    main()
