"""Group commit for the API's writes: concurrent edits share ONE store call.

Every SQLite write transaction takes the store's cross-process write lock and
ends with an fsync; under ingest an edit spent ~7 ms there (~3 ms of it the
fsync), one at a time, so edits capped near 140/s and a bench pacing 500/s
queued for seconds. Here the requests that arrive while a flush is running
wait for the next one, and it applies all of them in one transaction
(``Store.apply_edits``: one lock turn, one fsync, a SAVEPOINT per edit). The
batch grows exactly as fast as the store is slow, so a lone edit is not
delayed at all. Every answer goes out after its commit: durability is the same.

No task of its own for ``run``: the request that finds a flush slot free
does the next one (a flush is at most ``MAX_BATCH`` edits, so no request
carries others for long), and the others wait for a flush to end. The HTTP
protocol's write fast path has no task per request at all (``submit``: an
edit and a callback for its answer): its edits are flushed by a task the
batcher starts (``spawn``), one per flush, never one per edit. Flat out at
c=100 a task, an Event, its wait and its wake-up per write were ~15% of the
API process's CPU. Two flushes may run at once:
SQLite's ``apply_edits`` syncs the log after it lets the write lock go
(``SqliteStore._sync_log``), so the next group's transaction runs during the
previous one's fsync instead of after it. (With the fsync inside the lock, a
second flush only made smaller groups and more fsyncs: measured worse.)

Generic over what a flush applies: the API's ``EditJob`` groups, which the
edit writer process commits (``Deps.apply_jobs``), or store ``Edit``s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import anyio

from deltawire.collector.stores.base import StoreError

__all__ = ["MAX_BATCH", "MAX_FLUSHES", "Answered", "EditBatcher"]

log = logging.getLogger("deltawire.collector.api")


#: Edits per transaction: bounds how long one commit holds the write lock
#: (the ingest writer and the folder wait out the longest holder) and how long
#: a leading request waits beyond its own edit.
MAX_BATCH = 64
#: Flushes at once: one in its write transaction, one syncing the log.
MAX_FLUSHES = 2


J = TypeVar("J")  # what a flush applies (a job)
R = TypeVar("R")  # its result

#: ``submit``'s callback: the edit's result, or the error that is its answer
#: (the whole flush failed, or a StoreError of its own); exactly one is None.
Answered = Callable[[R | None, BaseException | None], None]


class _Pending(Generic[J, R]):
    __slots__ = ("answered", "edit", "failure", "finished", "result", "taken", "wake")

    def __init__(self, edit: J, answered: Answered[R] | None = None) -> None:
        self.edit = edit
        self.taken = False  # in a running flush's batch
        self.finished = False
        self.result: R | None = None
        self.failure: BaseException | None = None  # the whole flush failed (503)
        self.wake: anyio.Event | None = None  # set when it may be finished or lead a flush
        self.answered = answered  # submit's callback (no task waits for this edit)

    def error(self) -> BaseException | None:
        """What the edit's caller gets instead of a result, if anything."""
        if self.failure is not None:
            return self.failure
        return self.result if isinstance(self.result, StoreError) else None


class EditBatcher(Generic[J, R]):
    """Runs edits through ``await apply(edits)`` a batch at a time.

    ``apply``'s errors (the API's: 503) are every edit's answer in that
    batch. Once it started, a cancellation must wait for it to end (a thread
    call does; ``EditWriter.apply`` shields itself), so that an applied batch
    always gets its results. ``after(results)`` runs before any is answered.
    ``spawn(coroutine)`` runs a flush as a task of its own: needed by
    ``submit`` only (the API process: ``loop.create_task``).
    """

    def __init__(
        self,
        apply: Callable[[list[J]], Awaitable[list[R]]],
        after: Callable[[list[R]], Awaitable[None]] | None = None,
        spawn: Callable[[Coroutine[Any, Any, None]], object] | None = None,
    ) -> None:
        self._apply = apply
        self._after = after
        self._spawn = spawn
        self._queue: list[_Pending[J, R]] = []
        self.running = 0  # flushes under way
        self._starting = 0  # flushes spawned that have not begun (they hold a slot)
        self.flushes = 0  # store transactions so far (tests, stats)
        self.edits = 0

    async def run(self, edit: J) -> R:
        """``edit``'s result once committed; a StoreError of its own is raised."""
        p: _Pending[J, R] = _Pending(edit)
        self._queue.append(p)
        try:
            while not p.finished:
                if not p.taken and self.running + self._starting < MAX_FLUSHES:
                    await self._flush()
                else:
                    p.wake = anyio.Event()
                    await p.wake.wait()
        except BaseException:
            if not p.finished and p in self._queue:  # cancelled before its flush
                self._queue.remove(p)
                self._wake(())  # it may have been the one to lead the next flush
            raise
        error = p.error()
        if error is not None:
            raise error
        return p.result  # type: ignore[return-value]

    def submit(self, edit: J, answered: Answered[R]) -> None:
        """Queue ``edit``; ``answered(result, error)`` is called once it is
        committed (or failed), from the flush's task. Needs ``spawn``."""
        assert self._spawn is not None, "submit needs a spawn function"
        self._queue.append(_Pending(edit, answered))
        self._wake(())

    async def _spawned(self) -> None:
        self._starting -= 1
        if self._queue and self.running < MAX_FLUSHES:
            # Its errors are the batch's answers; nobody else is to hear them.
            with contextlib.suppress(Exception):
                await self._flush()
        else:
            self._wake(())  # a run() caller took the slot meanwhile

    def _wake(self, batch: list[_Pending[J, R]] | tuple[()]) -> None:
        """Answer ``batch`` (its edits finished, or back in the queue) and, if
        a flush slot is free, start the next flush: wake the first edit
        waiting in ``run`` to lead it, or spawn one for ``submit``'s edits.
        Only those: waking every waiter at every flush's end cost 100 task
        steps per ~30 edits at c=100."""
        for p in batch:
            if p.wake is not None:
                p.wake.set()
            elif p.answered is not None and p.finished:
                error = p.error()
                try:
                    p.answered(None if error else p.result, error)
                except Exception:  # one answer's bug must not cost the others theirs
                    log.exception("answering an edit failed")
        if self._queue and self.running + self._starting < MAX_FLUSHES:
            head = self._queue[0]
            if head.wake is not None:
                head.wake.set()
            elif (
                head.answered is not None
                and self._spawn is not None
                and len(self._queue) > self._starting * MAX_BATCH  # not all spoken for
            ):
                self._starting += 1
                self._spawn(self._spawned())

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
                # (Yielding first, so that the next flush hands its group to
                # the store before these answers go out, was measured: no
                # gain in writes/s, groups of ~32 instead of ~40 and more of
                # the writer's CPU a write. Not done.)
                with anyio.CancelScope(shield=True):
                    await self._after(results)
        finally:
            for p, result in zip(batch, results, strict=True):
                p.result, p.finished = result, True
            self._wake(batch)
