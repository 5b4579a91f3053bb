"""The allocator tuning: a flood's blocks reuse heap memory instead of faulting in pages."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# The output path on one bot's flood, in a process of its own (the tuning is process-wide):
# read a 200 KB block from a real pipe, split it, prefix it for the console and the log.
# Prints the page faults of 200 blocks after a warm-up.
FLOOD = textwrap.dedent(
    """
    import fcntl, os, resource, sys
    from trio_orchestrator.allocator import keep_blocks_in_heap
    from trio_orchestrator.output import LineSplitter, Printer
    from trio_orchestrator.runner import F_SETPIPE_SZ, READ_SIZE

    if sys.argv[1] == "tuned":
        assert keep_blocks_in_heap()
    splitter, printer = LineSplitter(), Printer(color=False)
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, READ_SIZE)
    block = (b"x" * 79 + b"\\n") * 2500

    def one():
        os.write(w, block)
        printer.format("Bot", "red", "stdout", splitter.feed(os.read(r, READ_SIZE)))

    for _ in range(20):
        one()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        one()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _page_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", FLOOD, mode], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_flood_blocks_reuse_heap_memory_once_tuned():
    default, tuned = _page_faults("default"), _page_faults("tuned")
    # Untuned, every block's copies land in fresh mmap-ed pages (~200 faults a block here).
    assert default > 200 * 50, default
    assert tuned < default / 20, (tuned, default)
