"""Short store reads on worker threads: ``StoreThreads.run(fn, *args)``.

Why not just ``anyio.to_thread.run_sync``: on the served process (asyncio,
uvloop) its hand-off cost the event loop 42-62 µs of CPU per call (a cancel
scope, a capacity limiter, a future and a wake-up, each in Python), against
20-24 µs for ``loop.run_in_executor``. An uncached ``GET /metrics`` is one
such call: with the executor, bench.api's uncached pages at c=100 went from
1,271-1,784 to 1,680-2,314 a second with the LRU, and from 1,052-1,156 to
1,531-1,728 with Redis (3 rounds each, interleaved; docs/api-performance.md).

Why not ``run_in_executor`` either, since pages got cheap (the C renderer):
its concurrent future (a condition variable), the asyncio future wrapping
it and the callbacks chaining the two cost 30-35 µs of CPU a call in all,
on uvloop with 3 threads and 50 callers, against 3.5-5 µs for ``_Threads``:
a ``queue.SimpleQueue`` of calls (C), and each result set on the caller's
own asyncio future through ``call_soon_threadsafe`` (which uvloop wakes the
loop for once for many). So on asyncio the reads go to ``size`` such
threads (which is also the bound on how many run at once); on any other
loop (the in-process tests run the app on trio) through anyio, with a
limiter of the same size.

The HTTP fast path (fast.py) takes a further step for an uncached
listing page: ``StoreThreads.then(fn, args, done)`` runs ``done(result,
error)`` on the loop once the read is over, with no future, task or
coroutine chain around it (``Deps.read_then``). Bench.api's uncached pages
at c=100, 7 interleaved pairs with and without it (2026-11-30): 254-272 µs
of API CPU a page against 239-343.

Only reads come here. A read whose caller is cancelled (its client left)
may finish on its thread with nobody waiting, which costs nothing but the
read; a write must not be let go that way (deps.store_call keeps writes on
anyio, which waits for the thread).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from deltawire.collector.stores.base import Store, StoreUnavailable

__all__ = ["Done", "StoreThreads", "auto_size"]

T = TypeVar("T")


def auto_size(store: Store, workers: int = 1) -> int:
    """How many reads to run at once when STORE_THREADS is ``auto``, in each
    of ``workers`` API processes.

    SQLite's reads are CPU work (the GIL let go for the statement): the
    cores + 1, one to fill a core while another thread takes the GIL. More
    only queue for the cores, and starve the event loop and the clients on
    the same machine: on 2 cores, bench.listing's uncached pages at c=100
    (quiet, 2026-11-30) had a p99 of 74-86 ms in 5 runs with 3 threads and
    81-276 ms in 5 with 4, for the same 1.5-2.3k pages/s. With several API
    workers the cores are theirs to share: each gets its share of them + 1
    (2 cores, 2 workers, uncached pages at c=100, 5 rounds: 2 threads each
    served 4.6-7.8k pages/s, 3 each 3.6-7.5k, 1 each 3.5-7.1k; the best
    round of 5 went to 2 four times). MongoDB's reads mostly wait on the
    network: 4 a core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    if not store.reads_use_cpu:
        return 4 * cores
    return max(1, cores // max(1, workers)) + 1


#: What a read's caller is told, on its loop: ``done(result, error)``.
Done = Callable[[Any, BaseException | None], None]


class _Call:
    """A read for a thread: the function, its arguments, and how its outcome
    reaches the caller on its loop: the caller's future, or a callback."""

    __slots__ = ("args", "done", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any] | None,
        done: Done | None = None,
    ) -> None:
        self.fn, self.args, self.loop, self.future, self.done = fn, args, loop, future, done

    def left(self) -> bool:
        """Its caller was cancelled (its client left): nobody needs it."""
        return self.future is not None and self.future.done()

    def tell(self, result: Any, error: BaseException | None) -> None:
        """From the thread: the outcome to the caller, on its loop."""
        if self.done is not None:
            self.loop.call_soon_threadsafe(self.done, result, error)
        else:
            assert self.future is not None
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: the read's outcome to its caller, unless it left."""
    if future.done():  # cancelled: its client left
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _Threads:
    """``size`` threads taking calls from one queue, in order."""

    def __init__(self, size: int, name: str) -> None:
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"{name}_{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        take = self.calls.get
        while (call := take()) is not None:
            if call.left():
                continue  # its caller was cancelled before it started: dropped
            try:
                result = call.fn(*call.args)
            except BaseException as e:
                error: BaseException | None = e
                result = None
            else:
                error = None
            try:
                call.tell(result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            del call, result, error  # not kept alive until the next call

    def close(self) -> None:
        """Calls not started are dropped (their callers cancelled); each
        thread ends after the call it is running."""
        while True:
            try:
                call = self.calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                try:
                    if call.future is not None:
                        call.loop.call_soon_threadsafe(call.future.cancel)
                    else:
                        call.tell(None, StoreUnavailable("the API process is stopping"))
                except RuntimeError:  # its loop is closed: nobody is waiting
                    pass
        for _ in self.threads:
            self.calls.put(None)


class StoreThreads:
    def __init__(self, size: int, name: str = "store-read") -> None:
        self.size = max(1, size)
        self._name = name
        self._limiter = CapacityLimiter(self.size)
        self._threads: _Threads | None = None  # started on first use (asyncio only)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the threads, once one is free."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio, in the in-process tests
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        if self._threads is None:
            self._threads = _Threads(self.size, self._name)
        future: asyncio.Future[T] = loop.create_future()
        self._threads.calls.put(_Call(fn, args, loop, future))
        return await future

    def then(self, fn: Callable[..., Any], args: tuple[Any, ...], done: Done) -> None:
        """``fn(*args)`` on one of the threads, and then ``done(result,
        error)`` on this (asyncio) loop: ``run`` without a coroutine to
        await it. Never dropped: ``done`` is told even if the threads close
        first (``StoreUnavailable``)."""
        loop = asyncio.get_running_loop()
        if self._threads is None:
            self._threads = _Threads(self.size, self._name)
        self._threads.calls.put(_Call(fn, args, loop, None, done))

    def close(self) -> None:
        """Let the threads go once their calls end; calls not started are dropped."""
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.close()
