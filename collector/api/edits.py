"""Group commit for the API's writes: concurrent edits share ONE store call.

Every SQLite write transaction takes the store's cross-process write lock and
ends with an fsync; under ingest an edit spent ~7 ms there (~3 ms of it the
fsync), one at a time, so edits capped near 140/s and a bench pacing 500/s
queued for seconds. Here the requests that arrive while a flush is running
wait for the next one, and it applies all of them in one transaction
(``Store.apply_edits``: one lock turn, one fsync, a SAVEPOINT per edit). The
batch grows exactly as fast as the store is slow, so a lone edit is not
delayed at all. Every answer goes out after its commit: durability is the same.

No task of its own: the request that finds a flush slot free does the next
one (a flush is at most ``MAX_BATCH`` edits, so no request carries others for
long), and the others wait for a flush to end. Two flushes may run at once:
SQLite's ``apply_edits`` syncs the log after it lets the write lock go
(``SqliteStore._sync_log``), so the next group's transaction runs during the
previous one's fsync instead of after it. (With the fsync inside the lock, a
second flush only made smaller groups and more fsyncs: measured worse.)

Generic over what a flush applies: the API's ``EditJob`` groups, which the
edit writer process commits (``Deps.apply_jobs``), or store ``Edit``s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

from deltawire.collector.stores.base import StoreError

__all__ = ["MAX_BATCH", "MAX_FLUSHES", "EditBatcher"]

#: Edits per transaction: bounds how long one commit holds the write lock
#: (the ingest writer and the folder wait out the longest holder) and how long
#: a leading request waits beyond its own edit.
MAX_BATCH = 64
#: Flushes at once: one in its write transaction, one syncing the log.
MAX_FLUSHES = 2


J = TypeVar("J")  # what a flush applies (a job)
R = TypeVar("R")  # its result


class _Pending(Generic[J, R]):
    __slots__ = ("edit", "failure", "finished", "result", "taken", "wake")

    def __init__(self, edit: J) -> None:
        self.edit = edit
        self.taken = False  # in a running flush's batch
        self.finished = False
        self.result: R | None = None
        self.failure: BaseException | None = None  # the whole flush failed (503)
        self.wake: anyio.Event | None = None  # set when it may be finished or lead a flush


class EditBatcher(Generic[J, R]):
    """Runs edits through ``await apply(edits)`` a batch at a time.

    ``apply``'s errors (the API's: 503) are every edit's answer in that
    batch. Once it started, a cancellation must wait for it to end (a thread
    call does; ``EditWriter.apply`` shields itself), so that an applied batch
    always gets its results. ``after(results)`` runs before any is answered.
    """

    def __init__(
        self,
        apply: Callable[[list[J]], Awaitable[list[R]]],
        after: Callable[[list[R]], Awaitable[None]] | None = None,
    ) -> None:
        self._apply = apply
        self._after = after
        self._queue: list[_Pending[J, R]] = []
        self.running = 0  # flushes under way
        self.flushes = 0  # store transactions so far (tests, stats)
        self.edits = 0

    async def run(self, edit: J) -> R:
        """``edit``'s result once committed; a StoreError of its own is raised."""
        p: _Pending[J, R] = _Pending(edit)
        self._queue.append(p)
        try:
            while not p.finished:
                if not p.taken and self.running < MAX_FLUSHES:
                    await self._flush()
                else:
                    p.wake = anyio.Event()
                    await p.wake.wait()
        except BaseException:
            if not p.finished and p in self._queue:  # cancelled before its flush
                self._queue.remove(p)
                self._wake(())  # it may have been the one to lead the next flush
            raise
        if p.failure is not None:
            raise p.failure
        if isinstance(p.result, StoreError):
            raise p.result
        return p.result  # type: ignore[return-value]

    def _wake(self, batch: list[_Pending[J, R]] | tuple[()]) -> None:
        """Wake ``batch`` (its edits finished, or back in the queue) and, if
        a flush slot is free, the first edit waiting, to lead the next flush.
        Only those: waking every waiter at every flush's end cost 100 task
        steps per ~30 edits at c=100."""
        for p in batch:
            if p.wake is not None:
                p.wake.set()
        if self._queue and self.running < MAX_FLUSHES:
            head = self._queue[0].wake
            if head is not None:
                head.set()

    async def _flush(self) -> None:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        for p in batch:
            p.taken = True
        self.running += 1
        self._wake(())  # the rest may lead a second flush (see MAX_FLUSHES)
        results: list[R] | None = None
        try:
            # Once the call runs, a cancellation waits for it (see the class),
            # so an applied batch always gets its results here.
            results = await self._apply([p.edit for p in batch])
        except Exception as e:  # the store call failed (503): all of the batch did
            for p in batch:
                p.failure, p.finished = e, True
            raise
        finally:
            if results is None:
                # Cancelled before the store call began: those edits go first next time.
                again = [p for p in batch if not p.finished]
                for p in again:
                    p.taken = False
                self._queue[:0] = again
            self.flushes += 1
            self.edits += len(batch)
            self.running -= 1  # the next group may take the store meanwhile
            self._wake(() if results is not None else batch)
        try:
            if self._after is not None:
                # Committed: the batch's cache bump (one for all of it) comes
                # before any of its answers, whatever happens to this task.
                with anyio.CancelScope(shield=True):
                    await self._after(results)
        finally:
            for p, result in zip(batch, results, strict=True):
                p.result, p.finished = result, True
            self._wake(batch)
