"""Reading /proc: process identity, group membership. Pure and synchronous.

Every function here answers from kernel memory and never blocks for long, but a scan of
all of /proc costs a few milliseconds on a busy machine: the async callers run the scans
(:func:`group_has_live_member`, :func:`tagged_group_leaders`) through ``trio.to_thread``.
"""

from __future__ import annotations

import os

__all__ = [
    "child_processes",
    "group_has_live_member",
    "group_rss_bytes",
    "proc_stat_fields",
    "process_environ",
    "process_start_ticks",
    "tagged_group_leaders",
    "tagged_processes",
]


def proc_stat_fields(pid: int | str) -> list[bytes] | None:
    """Fields 3 and on of /proc/PID/stat (state, ppid, pgrp, ...), or None if no process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ")".
    return data[data.rindex(b")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """The start time of *pid* in clock ticks since boot (/proc/PID/stat field 22).

    Together with the pid it identifies a process: a pid reused by another process has a
    different start time. None if there is no such process.
    """
    fields = proc_stat_fields(pid)
    return None if fields is None else int(fields[19])


def _pids() -> list[str]:
    try:
        return [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def group_has_live_member(pgid: int) -> bool:
    """Whether group *pgid* has a member that is not a zombie (True if /proc is missing).

    ``killpg(pgid, 0)`` also finds zombies: members reparented to init stay zombies until
    init reaps them (a second or more on some systems), but they have exited.
    """
    if not os.path.isdir("/proc/self"):
        return True
    for pid in _pids():
        fields = proc_stat_fields(pid)
        if fields is not None and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def group_rss_bytes(pgid: int) -> int:
    """The resident memory of the live members of process group *pgid*, in bytes.

    Scans /proc (a few milliseconds): call it through ``trio.to_thread``. 0 when the group
    is gone or /proc is missing.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in _pids():
        fields = proc_stat_fields(pid)
        # fields[2] is the group (stat field 5), fields[21] the RSS in pages (field 24).
        if fields is not None and int(fields[2]) == pgid and fields[0] != b"Z":
            total += int(fields[21]) * page
    return total


def tagged_group_leaders(tag: str) -> list[tuple[int, int | None, str]]:
    """Processes whose environment holds *tag* (``NAME=value``) and lead their own group.

    Returns ``(pid, start_ticks, bot_name)`` for each, ``bot_name`` from the
    ``TRIO_ORCH_BOT`` variable. A manager tags its bots (``BotRunner.extra_env``), so this
    finds the bots of a dead manager even when it died before recording their pids.
    Processes of other users (unreadable environment) are never reported.
    """
    needle = tag.encode()
    prefix = b"TRIO_ORCH_BOT="
    found = []
    for entry in _pids():
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
            if needle not in variables or os.getpgid(pid) != pid:
                continue
        except OSError:  # gone, or not ours
            continue
        name = next((v[len(prefix) :] for v in variables if v.startswith(prefix)), b"?")
        found.append((pid, process_start_ticks(pid), name.decode(errors="replace")))
    return found


def process_environ(pid: int) -> list[bytes] | None:
    """The initial environment of *pid* (``NAME=value`` entries); None if unreadable
    (gone, a zombie's is empty, or another user's)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            data = environ.read()
    except OSError:
        return None
    return data.split(b"\0") if data else None


def child_processes(skip: frozenset[int] = frozenset()) -> list[tuple[int, bool]]:
    """This process's children as ``(pid, is_zombie)``, but for those in *skip*.

    From ``/proc/self/task/*/children`` (all threads: an adopted orphan may be attached
    to any of them), or a scan of /proc for our pid as parent when the kernel has no
    such files.
    """
    me = os.getpid()
    pids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        tasks = []
    found_files = False
    for task in tasks:
        try:
            with open(f"/proc/{me}/task/{task}/children", "rb") as children:
                pids.update(int(pid) for pid in children.read().split())
            found_files = True
        except (OSError, ValueError):
            continue
    if not found_files:
        for entry in _pids():
            fields = proc_stat_fields(entry)
            if fields is not None and int(fields[1]) == me:
                pids.add(int(entry))
    result = []
    for pid in sorted(pids - skip):
        fields = proc_stat_fields(pid)
        if fields is not None:
            result.append((pid, fields[0] == b"Z"))
    return result


def tagged_processes(tag: str, bot: str) -> list[tuple[int, int | None]]:
    """Live processes whose environment holds *tag* and ``TRIO_ORCH_BOT=<bot>``.

    Returns ``(pid, start_ticks)`` for each: whatever a bot started, wherever it went
    (another session, reparented), as long as it kept the environment it inherited.
    """
    needles = (tag.encode(), f"TRIO_ORCH_BOT={bot}".encode())
    found = []
    for entry in _pids():
        pid = int(entry)
        if pid == os.getpid():
            continue
        variables = process_environ(pid)
        if variables is None or not all(needle in variables for needle in needles):
            continue
        fields = proc_stat_fields(pid)
        if fields is not None and fields[0] != b"Z":
            found.append((pid, int(fields[19])))
    return found
