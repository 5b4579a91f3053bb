"""Group commits of state writes to SQLite, in order, retried while the db is unavailable.

Each caller of :meth:`StateWriter.commit` gets back only once its write is durable, so a
transition is committed before it is reported; yet 100 bots starting at once cost a
handful of transactions, not 100. A write that cannot be committed now (the db locked by
another process, a full disk) stays queued in order and is retried with backoff, without
holding the db's thread limiter while it waits.

While the db is unavailable (a full disk, say), callers are not kept waiting: once commits
have failed for :data:`UNAVAILABLE_AFTER_SECONDS`, every caller with a queued write, and
every later one until a commit succeeds again, is told at once (``StateError``, transient)
while its write stays queued. A ``stop X`` then answers in about a second from memory
instead of waiting ``commit_wait`` for each of its transitions.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import attrs
import trio

from trio_orchestrator.errors import StateError

if TYPE_CHECKING:
    from trio_orchestrator.state import StateStore, Write

__all__ = ["StateWriter"]

LOGGER = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.05
# Low enough that a db back from a full disk is written to again within seconds.
RETRY_MAX_SECONDS = 2.0
# How long a caller waits for its write while the db is unavailable before it is told
# (StateError); the write itself stays queued and is committed when the db is back.
COMMIT_WAIT_SECONDS = 10.0
# Commits failing this long mean the db is unavailable: callers stop waiting for them.
UNAVAILABLE_AFTER_SECONDS = 1.0
# After close(), how long queued writes may still be retried before they are given up.
CLOSE_GRACE_SECONDS = 5.0


@attrs.define(eq=False)
class _Pending:
    write: Write
    # Set once the write is committed, failed for good, or the db is found unavailable.
    answered: trio.Event = attrs.Factory(trio.Event)
    committed: bool = False
    error: StateError | None = None


@attrs.define(eq=False)
class StateWriter:
    """The one task that writes to the db; see the module docstring.

    Args:
        store: the opened database.
        limiter: the db's ``CapacityLimiter(1)``, shared with the readers.
        commit_wait: the longest :meth:`commit` waits for a write.
        unavailable_after: how long commits must fail before callers stop waiting.
    """

    store: StateStore
    limiter: trio.CapacityLimiter
    commit_wait: float = COMMIT_WAIT_SECONDS
    unavailable_after: float = UNAVAILABLE_AFTER_SECONDS
    _queue: deque[_Pending] = attrs.field(init=False, factory=deque)
    _wakeup: trio.Event = attrs.field(init=False, factory=trio.Event)
    _closed_at: float | None = attrs.field(init=False, default=None)
    _closing: trio.Event = attrs.field(init=False, factory=trio.Event)
    # Set while the db is known to be unavailable: callers are answered at once.
    _unavailable: bool = attrs.field(init=False, default=False)

    async def commit(self, write: Write) -> None:
        """Queue *write* and return once it is committed.

        Raises:
            StateError: the write failed for good (a corrupt db), or is not committed
                within ``commit_wait`` or while the db is unavailable (it stays queued
                and is retried).

        **Cancellation:** only the wait is cancelled; the write stays queued.
        """
        pending = _Pending(write)
        self._queue.append(pending)
        self._wakeup.set()
        if self._unavailable:
            await trio.lowlevel.checkpoint()
        else:
            with trio.move_on_after(self.commit_wait):
                await pending.answered.wait()
        if pending.error is not None:
            raise pending.error
        if not pending.committed:
            raise StateError(
                "state not saved yet (the db is unavailable); retrying", transient=True
            )

    def close(self) -> None:
        """Stop once the queue is drained (or after CLOSE_GRACE_SECONDS of failures)."""
        self._closed_at = trio.current_time()
        self._closing.set()  # a retry waiting out its delay tries once more now
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        """Commit until closed and drained.

        **Cancellation:** writes still queued are lost (logged).
        """
        task_status.started()
        try:
            while self._queue or self._closed_at is None:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                if self._queue and not await self._commit_queued():
                    return
        finally:
            if self._queue:
                LOGGER.error("%d state changes could not be saved", len(self._queue))

    async def _commit_queued(self) -> bool:
        """Commit everything queued now, retrying while the db is unavailable.

        Returns False when giving up after close().
        """
        batch = list(self._queue)
        delay = RETRY_FIRST_SECONDS
        failing_since: float | None = None
        while True:
            try:
                await trio.to_thread.run_sync(
                    self.store.commit, [pending.write for pending in batch], limiter=self.limiter
                )
            except StateError as exc:
                if not exc.transient:
                    LOGGER.error("could not save state: %s", exc)
                    self._finish(batch, exc)
                    return True
                if failing_since is None:
                    failing_since = trio.current_time()
                    LOGGER.warning("could not save state: %s; retrying", exc)
                if trio.current_time() - failing_since >= self.unavailable_after:
                    self._unavailable = True
                    for pending in self._queue:  # stop keeping them waiting
                        pending.answered.set()
                wait = delay
                if self._closed_at is not None:
                    wait = self._closed_at + CLOSE_GRACE_SECONDS - trio.current_time()
                    if wait <= 0:
                        return False
                    wait = min(delay, wait)
                with trio.move_on_after(wait):
                    if self._closed_at is None:
                        await self._closing.wait()  # a close() tries once more at once
                    else:
                        await trio.sleep_forever()
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if failing_since is not None:
                LOGGER.warning(
                    "state saved again after %.1fs (%d changes were waiting)",
                    trio.current_time() - failing_since,
                    len(batch),
                )
            self._unavailable = False
            self._finish(batch, None)
            return True

    def _finish(self, batch: list[_Pending], error: StateError | None) -> None:
        for pending in batch:
            self._queue.popleft()
            pending.error = error
            pending.committed = error is None
            pending.answered.set()
