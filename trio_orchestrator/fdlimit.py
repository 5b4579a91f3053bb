"""The manager's open-files limit: raised to the hard limit at start, as supervisord's
``minfds`` and systemd do, and turned into a number of bots.

Each running bot costs the manager :data:`FDS_PER_BOT` descriptors (measured from
``/proc/PID/fd`` in ``tests/integration/test_machine_faults.py``): the read ends of its
stdout and stderr pipes, the pidfd trio waits on, and its log file. A start briefly needs a
few more (the write ends, ``/dev/null``, the exec error pipe): :data:`START_FDS`.
"""

from __future__ import annotations

import os
import resource

import attrs

__all__ = [
    "FDS_PER_BOT",
    "RESERVED_FDS",
    "SPARE_FDS",
    "START_FDS",
    "TIGHT_FDS",
    "FdLimit",
    "free_fds",
    "raise_fd_limit",
]

# stdout pipe + stderr pipe + pidfd + log file.
FDS_PER_BOT = 4
# The manager's own descriptors (db, -wal, -shm, lock, manager log, epoll, wake-up pipes,
# control socket and its clients, command file) and a few starts in flight.
RESERVED_FDS = 32
# What one start holds at its peak: both ends of two pipes, /dev/null, the exec error
# pipe, the pidfd; and soon the log file.
START_FDS = 8
# Descriptors a start never takes: the control socket must accept `trio-orch list` and
# `stop`, and the db and log files keep working, however many bots wait to start.
SPARE_FDS = 8
# Fewer free descriptors than this: starts go one at a time, keeping SPARE_FDS free.
TIGHT_FDS = 256
# With no hard limit (not on Linux), this is high enough.
_UNLIMITED_TARGET = 1 << 20


@attrs.frozen
class FdLimit:
    soft: int
    hard: int
    previous: int  # the soft limit before we raised it
    error: str | None = None  # why it could not be raised

    @property
    def room_for_bots(self) -> int:
        return max(0, (self.soft - RESERVED_FDS) // FDS_PER_BOT)

    def describe(self) -> str:
        raised = f" (raised from {self.previous})" if self.soft != self.previous else ""
        return f"open files limit {self.soft}{raised}: room for about {self.room_for_bots} bots"


def raise_fd_limit() -> FdLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit; never raises."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            return FdLimit(soft, hard, soft, str(exc))
        return FdLimit(target, hard, soft)
    return FdLimit(soft, hard, soft)


def free_fds() -> int | None:
    """How many more descriptors this process may open now (None: unknown, no /proc)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        return soft - len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
