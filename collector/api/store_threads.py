"""Short store reads on worker threads: ``StoreThreads.run(fn, *args)``.

Why not just ``anyio.to_thread.run_sync``: on the served process (asyncio,
uvloop) its hand-off cost the event loop 42-62 µs of CPU per call (a cancel
scope, a capacity limiter, a future and a wake-up, each in Python), against
20-24 µs for ``loop.run_in_executor``. An uncached ``GET /metrics`` is one
such call: with the executor, bench.api's uncached pages at c=100 went from
1,271-1,784 to 1,680-2,314 a second with the LRU, and from 1,052-1,156 to
1,531-1,728 with Redis (3 rounds each, interleaved; docs/api-performance.md).
So on asyncio the reads go to an executor of ``size`` threads (which is also
the bound on how many run at once); on any other loop (the in-process tests
run the app on trio) through anyio, with a limiter of the same size.

Only reads come here. A read whose caller is cancelled (its client left)
may finish on its thread with nobody waiting, which costs nothing but the
read; a write must not be let go that way (deps.store_call keeps writes on
anyio, which waits for the thread).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio.to_thread
import sniffio
from anyio import CapacityLimiter

from deltawire.collector.stores.base import Store

__all__ = ["StoreThreads", "auto_size"]

T = TypeVar("T")


def auto_size(store: Store) -> int:
    """How many reads to run at once when STORE_THREADS is ``auto``.

    SQLite's reads are CPU work (the GIL let go for the statement): the
    cores + 1, one to fill a core while another thread takes the GIL. More
    only queue for the cores, and starve the event loop and the clients on
    the same machine: on 2 cores, bench.listing's uncached pages at c=100
    (quiet, 2026-11-30) had a p99 of 74-86 ms in 5 runs with 3 threads and
    81-276 ms in 5 with 4, for the same 1.5-2.3k pages/s. MongoDB's reads
    mostly wait on the network: 4 a core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    return cores + 1 if store.reads_use_cpu else 4 * cores


class StoreThreads:
    def __init__(self, size: int, name: str = "store-read") -> None:
        self.size = max(1, size)
        self._name = name
        self._limiter = CapacityLimiter(self.size)
        self._pool: ThreadPoolExecutor | None = None  # made on first use (asyncio only)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the threads, once one is free."""
        if sniffio.current_async_library() != "asyncio":
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self._name)
        call = functools.partial(fn, *args) if args else fn
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        """Let the threads go once their calls end; calls not started are dropped."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
