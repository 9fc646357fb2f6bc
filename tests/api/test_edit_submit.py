"""The group commit's callback form (``EditBatcher.submit``), which the HTTP
protocol's write fast path uses: no task per edit, one task per flush (the
batcher spawns it), and every edit answered exactly once, whatever its
group or a neighbour's callback does. On asyncio, as in the served process.
The flushes' store is a function that waits for the test's say-so, so the
edits really pile up behind the two flushes under way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.collector.api.edits import MAX_BATCH, MAX_FLUSHES, EditBatcher
from deltawire.collector.stores.base import StoreError, StoreUnavailable

DEADLINE_S = 10.0


async def _until(check: Callable[[], bool], what: str) -> None:
    """Until ``check()``: the flushes run in tasks of their own."""
    async with asyncio.timeout(DEADLINE_S):
        while not check():
            await asyncio.sleep(0)
    assert check(), what


class _Gated:
    """``apply``: doubles each edit once the gate opens; counts the tasks spawned."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.gate = asyncio.Event()
        self.fail = fail
        self.groups: list[list[int]] = []
        self.spawned = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def apply(self, edits: list[int]) -> list[int | StoreError]:
        self.groups.append(edits)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [StoreError("refused") if e < 0 else 2 * e for e in edits]

    def spawn(self, flush: Coroutine[Any, Any, None]) -> None:
        self.spawned += 1
        task = asyncio.get_running_loop().create_task(flush)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _pile_up(store: _Gated, batcher: EditBatcher[int, int], edits: list[int],
                   answered: Callable[[int], Any]) -> None:  # fmt: skip
    """Submit ``edits``: the first MAX_FLUSHES lead a flush each, the rest queue."""
    for i, e in enumerate(edits):
        batcher.submit(e, answered(e))
        if i < MAX_FLUSHES:
            await _until(lambda n=i + 1: len(store.groups) == n, "a flush to take the edit")
    assert batcher.running == MAX_FLUSHES and len(batcher._queue) == len(edits) - MAX_FLUSHES


def test_submitted_edits_share_commits_and_each_is_answered_once() -> None:
    async def body() -> None:
        store = _Gated()
        batcher: EditBatcher[int, int] = EditBatcher(store.apply, spawn=store.spawn)
        answers: dict[int, list[Any]] = {}

        def answered(e: int) -> Callable[[int | None, BaseException | None], None]:
            def done(result: int | None, error: BaseException | None) -> None:
                answers.setdefault(e, []).append(result if error is None else type(error))
                if e == 3:
                    raise RuntimeError("a broken answer")  # logged; the others still answered

            return done

        edits = [1, 2, 3, -4, 5, 6, 7]
        await _pile_up(store, batcher, edits, answered)
        assert store.spawned == MAX_FLUSHES  # one task per flush, none per edit
        store.gate.set()
        await _until(lambda: len(answers) == len(edits), "every edit's answer")
        assert answers == {e: [StoreError] if e < 0 else [2 * e] for e in edits}
        assert store.groups == [[1], [2], [3, -4, 5, 6, 7]]  # the queue went in one group
        assert store.spawned == MAX_FLUSHES + 1 and batcher.flushes == 3
        assert batcher.running == 0 and not batcher._queue

    asyncio.run(body())


@pytest.mark.parametrize("fail", [StoreUnavailable("down"), RuntimeError("a bug")])
def test_a_failed_group_is_every_submitted_edits_answer(fail: Exception) -> None:
    async def body() -> None:
        store = _Gated(fail)
        batcher: EditBatcher[int, int] = EditBatcher(store.apply, spawn=store.spawn)
        answers: dict[int, tuple[Any, BaseException | None]] = {}

        def answered(e: int) -> Callable[[int | None, BaseException | None], None]:
            return lambda result, error: answers.__setitem__(e, (result, error))

        await _pile_up(store, batcher, [1, 2, 3, 4], answered)
        store.gate.set()
        await _until(lambda: len(answers) == 4, "every edit's answer")
        assert answers == {e: (None, fail) for e in (1, 2, 3, 4)}
        # The batcher still works: the next edit leads a flush of its own.
        store.fail = None
        batcher.submit(5, answered(5))
        await _until(lambda: 5 in answers, "the next edit's answer")
        assert answers[5] == (10, None)

    asyncio.run(body())


def test_run_and_submit_share_the_queue() -> None:
    """A request on the full path (``run``) queued behind submitted edits is
    answered with them, and a run() caller never waits for a flush nobody leads."""

    async def body() -> None:
        store = _Gated()
        batcher: EditBatcher[int, int] = EditBatcher(store.apply, spawn=store.spawn)
        answers: dict[int, int | None] = {}

        def answered(e: int) -> Callable[[int | None, BaseException | None], None]:
            return lambda result, error: answers.__setitem__(e, result)

        await _pile_up(store, batcher, [1, 2, 3], answered)
        ran = asyncio.get_running_loop().create_task(batcher.run(4))
        await _until(lambda: len(batcher._queue) == 2, "the run() caller to queue")
        batcher.submit(5, answered(5))
        store.gate.set()
        async with asyncio.timeout(DEADLINE_S):
            assert await ran == 8
        await _until(lambda: len(answers) == 4, "every submitted edit's answer")
        assert answers == {1: 2, 2: 4, 3: 6, 5: 10}

    asyncio.run(body())


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=150),
    leaders=st.sets(st.integers(0, 149), max_size=10),
)
def test_every_edit_is_answered_once_whatever_the_timing(
    plan: list[tuple[int, int]], leaders: set[int]
) -> None:
    """Edits arrive ``gap`` loop turns apart, each group takes as many turns
    as its first edit says, and a few edits come through ``run`` (the full
    path) among the submitted ones: every edit is answered exactly once, in
    groups of at most MAX_BATCH, with at most MAX_FLUSHES under way."""

    async def body() -> None:
        tasks: set[asyncio.Task[Any]] = set()
        peak = 0

        def spawn(flush: Coroutine[Any, Any, None]) -> None:
            task = asyncio.get_running_loop().create_task(flush)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def apply(edits: list[int]) -> list[int]:
            nonlocal peak
            peak = max(peak, batcher.running)
            assert len(edits) <= MAX_BATCH
            for _ in range(plan[edits[0]][1]):
                await asyncio.sleep(0)
            return [2 * e for e in edits]

        batcher: EditBatcher[int, int] = EditBatcher(apply, spawn=spawn)
        answers: dict[int, list[int | None]] = {}

        def answered(e: int) -> Callable[[int | None, BaseException | None], None]:
            return lambda result, error: answers.setdefault(e, []).append(result)

        async def ran(e: int) -> None:
            result = await batcher.run(e)
            answers.setdefault(e, []).append(result)

        for e, (gap, _) in enumerate(plan):
            for _ in range(gap):
                await asyncio.sleep(0)
            if e in leaders:
                spawn(ran(e))
            else:
                batcher.submit(e, answered(e))
        await _until(lambda: len(answers) == len(plan), "every edit's answer")
        assert answers == {e: [2 * e] for e in range(len(plan))}
        assert peak <= MAX_FLUSHES and batcher.running == 0 and not batcher._queue

    asyncio.run(body())
