"""``StoreThreads``: store reads on worker threads, at most ``size`` at once,
on asyncio (the served process: an executor) and on trio (anyio's
hand-off). Real threads, real loops; every wait has a deadline."""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading

import pytest
import trio

from deltawire.collector.api import Deps, LocalCache
from deltawire.collector.api.cache import Answer, StoreRead
from deltawire.collector.api.deps import ApiConfig
from deltawire.collector.api.errors import ApiError
from deltawire.collector.api.store_threads import StoreThreads, auto_size
from deltawire.collector.stores.base import StoreError, StoreUnavailable
from deltawire.collector.stores.mongo import MongoStore
from deltawire.collector.stores.sqlite import SqliteStore

DEADLINE = 10.0  # s: a hung hand-off fails the test instead of hanging it


class Gate:
    """A call that reports it started, then waits to be let through."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started = threading.Semaphore(0)
        self.open = threading.Event()
        self.ran: list[int] = []

    def __call__(self, n: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.started.release()
        try:
            assert self.open.wait(DEADLINE), "never let through"
            self.ran.append(n)
            return n * 2
        finally:
            with self.lock:
                self.running -= 1

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self.started.acquire(timeout=DEADLINE), "a call never started"


def test_asyncio_runs_off_the_loop_at_most_size_at_once() -> None:
    threads = StoreThreads(3)
    gate = Gate()

    async def main() -> list[int]:
        loop_thread = threading.get_ident()
        where = await threads.run(threading.get_ident)
        assert where != loop_thread
        calls = [asyncio.ensure_future(threads.run(gate, n)) for n in range(8)]
        await asyncio.to_thread(gate.wait_started, 3)
        assert gate.running == 3  # the other five wait for a thread
        gate.open.set()
        return await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)

    try:
        assert asyncio.run(main()) == [n * 2 for n in range(8)]
    finally:
        threads.close()
    assert gate.most == 3


async def _one_running_one_queued(
    threads: StoreThreads, gate: Gate
) -> tuple[asyncio.Future[int], asyncio.Future[int]]:
    """Call 1 running on the one thread (held at the gate), call 2 queued behind it."""
    first = asyncio.ensure_future(threads.run(gate, 1))
    await asyncio.to_thread(gate.wait_started, 1)
    waiting = asyncio.ensure_future(threads.run(gate, 2))
    await asyncio.sleep(0)  # queued for the one thread, which is busy
    return first, waiting


def test_asyncio_a_cancelled_caller_drops_a_call_not_started() -> None:
    threads = StoreThreads(1)
    gate = Gate()

    async def main() -> None:
        first, waiting = await _one_running_one_queued(threads, gate)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.open.set()
        assert await asyncio.wait_for(first, DEADLINE) == 2
        assert await asyncio.wait_for(threads.run(gate, 3), DEADLINE) == 6

    try:
        asyncio.run(main())
    finally:
        threads.close()
    assert gate.ran == [1, 3]  # 2's caller left before a thread took it


def test_asyncio_close_drops_the_calls_not_started() -> None:
    """close() (the app's lifespan ending): a call no thread took is never
    run and its caller is cancelled; the one running finishes."""
    threads = StoreThreads(1)
    gate = Gate()

    async def main() -> None:
        first, waiting = await _one_running_one_queued(threads, gate)
        threads.close()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, DEADLINE)
        gate.open.set()
        assert await asyncio.wait_for(first, DEADLINE) == 2

    asyncio.run(main())
    assert gate.ran == [1]


def test_asyncio_errors_reach_the_caller() -> None:
    threads = StoreThreads(2)

    def fails() -> None:
        raise KeyError("boom")

    async def main() -> None:
        with pytest.raises(KeyError, match="boom"):
            await threads.run(fails)

    try:
        asyncio.run(main())
    finally:
        threads.close()


def test_asyncio_then_tells_the_outcome_on_the_loop() -> None:
    """The callback form (the HTTP fast path's): ``done(result, error)``
    on the loop's thread, once the call ran on a store thread."""
    threads = StoreThreads(2)

    def fails() -> None:
        raise KeyError("boom")

    async def main() -> list[tuple[object, str | None, bool]]:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        told: list[tuple[object, str | None, bool]] = []
        both = asyncio.Event()

        def done(result: object, error: BaseException | None) -> None:
            told.append((result, None if error is None else repr(error),
                         threading.get_ident() == loop_thread))  # fmt: skip
            if len(told) == 2:
                both.set()

        threads.then(threading.get_ident, (), done)
        threads.then(fails, (), done)
        await asyncio.wait_for(both.wait(), DEADLINE)
        assert loop.is_running()
        return told

    try:
        told = asyncio.run(main())
    finally:
        threads.close()
    by_error = {error: (result, on_loop) for result, error, on_loop in told}
    assert by_error["KeyError('boom')"] == (None, True)
    where, on_loop = by_error[None]
    assert on_loop and isinstance(where, int) and where != threading.get_ident()


def test_asyncio_close_tells_a_then_not_started_the_store_is_gone() -> None:
    """A callback call no thread took is never run, and its caller is
    told (StoreUnavailable: answered 503), never left without an answer."""
    threads = StoreThreads(1)
    gate = Gate()

    async def main() -> BaseException | None:
        first = asyncio.ensure_future(threads.run(gate, 1))
        await asyncio.to_thread(gate.wait_started, 1)
        told = asyncio.get_running_loop().create_future()
        threads.then(gate, (2,), lambda result, error: told.set_result(error))
        threads.close()
        error = await asyncio.wait_for(told, DEADLINE)
        gate.open.set()
        assert await asyncio.wait_for(first, DEADLINE) == 2
        return error

    error = asyncio.run(main())
    assert isinstance(error, StoreUnavailable)
    assert gate.ran == [1]


def test_close_then_use_again() -> None:
    """The app's lifespan closes it; an app started again gets new threads."""
    threads = StoreThreads(2)
    for _ in range(2):
        assert asyncio.run(threads.run(pow, 2, 10)) == 1024
        threads.close()


async def test_trio_runs_off_the_loop_at_most_size_at_once() -> None:
    threads = StoreThreads(2)
    gate = Gate()
    results: list[int] = []

    async def one(n: int) -> None:
        results.append(await threads.run(gate, n))

    with trio.fail_after(DEADLINE):
        assert await threads.run(threading.get_ident) != threading.get_ident()
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(one, n)
            await trio.to_thread.run_sync(gate.wait_started, 2)
            assert gate.running == 2
            gate.open.set()
    assert sorted(results) == [n * 2 for n in range(5)]
    assert gate.most == 2


def test_auto_size_follows_the_cores_and_the_store(tmp_path: pathlib.Path) -> None:
    cores = len(os.sched_getaffinity(0))
    sqlite = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")  # not opened: no file needed
    assert auto_size(sqlite) == cores + 1  # CPU work: a thread more than the cores
    assert auto_size(sqlite, workers=cores) == 2  # API workers share the cores
    assert auto_size(MongoStore("mongodb://127.0.0.1:1")) == 4 * cores  # network waits


def test_the_api_sizes_its_reads_from_the_setting(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    cache = LocalCache(size=0)
    assert Deps(store, cache).reads.size == auto_size(store)  # STORE_THREADS=auto
    assert Deps(store, cache, config=ApiConfig(store_threads=7)).reads.size == 7


def _read_then(deps: Deps, read: StoreRead) -> tuple[Answer | None, BaseException | None]:
    """``deps.read_then(read)`` on a loop, and what it told."""

    async def main() -> tuple[Answer | None, BaseException | None]:
        told: asyncio.Future[tuple[Answer | None, BaseException | None]]
        told = asyncio.get_running_loop().create_future()
        deps.read_then(read, lambda answer, error: told.set_result((answer, error)))
        return await asyncio.wait_for(told, DEADLINE)

    try:
        return asyncio.run(main())
    finally:
        deps.reads.close()


def test_read_then_answers_as_store_call_would(tmp_path: pathlib.Path) -> None:
    """Deps.read_then, the fast path's uncached listing: the answer built
    from the read's result; a store failure a 503 (and counted); a
    StoreError the read says is the client's (a foreign cursor) its 422."""
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.open()
    deps = Deps(store, LocalCache(size=0))
    try:
        answer, error = _read_then(
            deps, StoreRead(store.get, ("1",), lambda doc: Answer(b"%r" % doc))
        )
        assert error is None and answer == Answer(b"None")

        def foreign() -> None:
            raise StoreError("cursor id 'x' is not a document id of this store")

        refused = ApiError(422, "bad_parameter", "after: not a cursor of this store")
        answer, error = _read_then(deps, StoreRead(foreign, (), Answer, refused))
        assert answer is None and isinstance(error, ApiError) and error.status == 422
        assert error.detail.endswith("is not a document id of this store")
        assert deps.stats.store_errors == 0

        def broken(doc: object) -> Answer:
            raise RuntimeError("a bug in building the answer")

        answer, error = _read_then(deps, StoreRead(store.get, ("1",), broken))
        assert answer is None and isinstance(error, RuntimeError)  # told, not left hanging

        store.close()
        answer, error = _read_then(deps, StoreRead(store.get, ("1",), Answer))
        assert answer is None and isinstance(error, ApiError)
        assert (error.status, error.code) == (503, "store_unavailable")
        assert deps.stats.store_errors == 1
    finally:
        store.close()
