"""Which child processes of the manager somebody is waiting for. Pure, thread-safe.

The manager is a child subreaper (:mod:`trio_orchestrator.reaper`): orphans of the bots
become its children, and it reaps them. It must never reap a child that ``trio.run_process``
or ``subprocess.Popen`` is waiting for by pid: the waiter would get ``ECHILD`` and report
exit code 0. So every spawn in the manager registers its child here
(:meth:`ChildRegistry.spawning` around the spawn, :meth:`ChildRegistry.own` with the pid,
:meth:`ChildRegistry.release` once it is reaped), and the reaper reaps a zombie only if
it is not owned and no spawn started since it looked (:meth:`ChildRegistry.may_reap`).
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CHILDREN", "ChildRegistry"]


class ChildRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._spawning = 0
        self._generation = 0

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Around a spawn, until its pid is :meth:`own`-ed (or the spawn failed)."""
        self.begin_spawn()
        try:
            yield
        finally:
            self.end_spawn()

    def begin_spawn(self) -> None:
        with self._lock:
            self._spawning += 1
            self._generation += 1

    def end_spawn(self) -> None:
        with self._lock:
            self._spawning -= 1

    def own(self, pid: int) -> None:
        with self._lock:
            self._owned.add(pid)

    def release(self, pid: int) -> None:
        """The owner has reaped *pid*."""
        with self._lock:
            self._owned.discard(pid)

    def mark(self) -> int | None:
        """Taken before looking for zombies: None while a spawn is in progress."""
        with self._lock:
            return None if self._spawning else self._generation

    def may_reap(self, pid: int, mark: int | None) -> bool:
        """Whether zombie *pid*, seen after :meth:`mark` returned *mark*, is nobody's.

        Every child spawned before the mark is owned (no spawn was in progress), and no
        spawn began since (same generation), so an unowned zombie was adopted.
        """
        with self._lock:
            return (
                mark is not None
                and self._spawning == 0
                and self._generation == mark
                and pid not in self._owned
            )

    def owned(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._owned)


CHILDREN = ChildRegistry()
