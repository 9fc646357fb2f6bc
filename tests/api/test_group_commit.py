"""Group commit of the API's writes (edits.py, SqliteStore.apply_edits): on a
real SQLite file, with the real cross-process write lock held by a second
open file so that concurrent requests really pile up behind it."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltawire.collector.api.edits import MAX_BATCH, MAX_FLUSHES, EditBatcher
from deltawire.collector.stores import Store, open_store
from deltawire.collector.stores.base import (
    Change,
    Changed,
    Create,
    Delete,
    Edit,
    EditResult,
    MetricQuery,
    Refused,
    Replace,
    StoreError,
)
from deltawire.collector.stores.sqlite import SqliteStore
from deltawire.collector.stores.sqlite_lock import LOCK_SUFFIX

from .inproc import client, sqlite_store

T0 = 1_700_000_000.0


def _all(store: Store) -> list[dict[str, Any]]:
    return store.find(MetricQuery(limit=10_000))


def _serially(store: Store, edits: list[Edit]) -> list[Any]:
    """What the edits give one store call (and one commit) at a time."""
    out: list[Any] = []
    for edit in edits:
        try:
            if isinstance(edit, Create):
                out.append(store.create(edit.fields))
            elif isinstance(edit, Replace):
                out.append(store.replace(edit.doc_id, edit.fields))
            else:
                out.append(store.delete(edit.doc_id))
        except StoreError as e:
            out.append(type(e))
    return out


def _comparable(results: list[EditResult]) -> list[Any]:
    return [type(r) if isinstance(r, StoreError) else r for r in results]


_EDITS: list[Edit] = [
    Create({"name": "a", "value": 1.0, "ts": T0}),
    Create({"name": "b", "value": 2.0, "ts": T0 + 1, "tags": ["x=1"], "data": {"k": 1}}),
    Create({"value": 3.0}),  # no name: refused alone
    Replace("1", {"name": "a2", "value": 5.0, "ts": T0 + 2}),
    Replace("2", {"tags": "not a list"}),  # refused alone
    Delete("2"),
    Delete("2"),  # gone already: False, like a serial second delete
    Replace("99", {"value": 1.0}),  # no such document: None
    Create({"name": "c", "value": 7.0, "ts": T0 + 3}),  # its id is above the deleted one's
    Delete("x"),  # not an id of this store
]


def test_one_transaction_gives_what_serial_calls_give(tmp_path: Path) -> None:
    batched, serial = sqlite_store(tmp_path, "b.db"), sqlite_store(tmp_path, "s.db")
    try:
        results = batched.apply_edits(_EDITS)
        assert _comparable(results) == _serially(serial, _EDITS)
        assert isinstance(results[2], StoreError) and isinstance(results[4], StoreError)
        assert _all(batched) == _all(serial)
        assert sorted(d["id"] for d in _all(batched)) == ["1", "3"]  # id 2 never handed out again
    finally:
        batched.close()
        serial.close()


# Edits over ids 1-6: creates (some refused: no name, a bad tag) in runs of
# any length, and replaces and deletes between them.
_AN_EDIT = st.one_of(
    st.builds(lambda v, ts: Create({"name": "p", "value": v, "ts": T0 + ts}),
              st.floats(-1e6, 1e6), st.integers(0, 10_000)),
    st.just(Create({"value": 1.0})),
    st.just(Create({"name": "p", "tags": [""]})),
    st.builds(lambda i, v: Replace(str(i), {"value": v}), st.integers(1, 6), st.floats(0, 9)),
    st.builds(lambda i: Delete(str(i)), st.integers(1, 6)),
)  # fmt: skip


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=st.lists(_AN_EDIT, min_size=1, max_size=12))
def test_runs_of_creates_give_what_serial_calls_give(tmp_path: Path, edits: list[Edit]) -> None:
    """A run of creates goes in with one executemany (``_creates_in``): the
    same ids, seqs, documents and refusals as one create at a time, and ids
    still above every deleted one."""
    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    batched, serial = sqlite_store(d, "b.db"), sqlite_store(d, "s.db")
    try:
        assert _comparable(batched.apply_edits(edits)) == _serially(serial, edits)
        assert _all(batched) == _all(serial)
    finally:
        batched.close()
        serial.close()


def _set(fields: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda old: fields


# Changes (the API's PUT/PATCH/DELETE) over ids 1-7 (7 is never created):
# sets, renames and moves (indexed columns), deletes, refusals, bad fields,
# and a few creates between them, so that runs of changes of any length form.
_A_CHANGE = st.one_of(
    st.builds(lambda i, v: Change(str(i), _set({"value": v})), st.integers(1, 7), st.floats(0, 9)),
    st.builds(lambda i, ts: Change(str(i), _set({"name": "q", "ts": T0 + ts, "tags": ["t"]})),
              st.integers(1, 7), st.integers(0, 10_000)),
    st.builds(lambda i: Change(str(i), lambda old: None), st.integers(1, 7)),
    st.builds(lambda i: Change(str(i), _refuse_b), st.integers(1, 7)),
    st.builds(lambda i: Change(str(i), _set({"tags": "not a list"})), st.integers(1, 7)),
    st.just(Change("x", lambda old: None)),
    st.just(Create({"name": "p", "value": 1.0, "ts": T0})),
)  # fmt: skip


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=st.lists(_A_CHANGE, min_size=1, max_size=12))
def test_runs_of_changes_give_what_serial_calls_give(tmp_path: Path, edits: list[Edit]) -> None:
    """A run of changes goes in with one read and no savepoint each
    (``_changes_in``): the same results, documents and refusals as one
    change per transaction, and the next id still above every deleted one."""
    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    batched, serial = sqlite_store(d, "b.db"), sqlite_store(d, "s.db")
    seed: list[Edit] = [
        Create({"name": "b" if i % 3 == 0 else "a", "value": float(i), "ts": T0 + i})
        for i in range(6)
    ]
    try:
        for store in (batched, serial):
            store.apply_edits(seed)
        got = batched.apply_edits(edits)
        want = [serial.apply_edits([edit])[0] for edit in edits]
        assert _comparable(got) == _comparable(want)
        assert _all(batched) == _all(serial)
        after = [Create({"name": "z", "ts": T0})]
        assert _comparable(batched.apply_edits(after)) == _comparable(serial.apply_edits(after))
    finally:
        batched.close()
        serial.close()


async def _queue_and_cancel_the_head(
    nursery: trio.Nursery, batcher: EditBatcher, edit: Callable[..., Any], blocker: int
) -> None:
    for i in range(MAX_FLUSHES):  # the flushes that wait for the lock
        nursery.start_soon(edit, i)
    await _until(lambda: batcher.running == MAX_FLUSHES, "the flushes to start")
    head = trio.CancelScope()
    nursery.start_soon(edit, 100, head)  # first in the queue: the next leader
    for i in range(MAX_FLUSHES, MAX_FLUSHES + 3):
        nursery.start_soon(edit, i)
    await _until(lambda: len(batcher._queue) == 4, "the others to queue")
    head.cancel()
    await _until(lambda: len(batcher._queue) == 3, "the cancelled one to leave")
    fcntl.flock(blocker, fcntl.LOCK_UN)


async def test_a_cancelled_waiter_never_stalls_the_queue(tmp_path: Path) -> None:
    """Only the first waiting edit is woken to lead the next flush (not every
    waiter, at every flush's end): once it is cancelled and gone, the next
    one must lead instead, and every other edit is still answered."""
    store = sqlite_store(tmp_path)
    blocker = os.open(str(tmp_path / "api.db") + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT)
    batcher: EditBatcher[Edit, EditResult] = EditBatcher(
        lambda edits: anyio.to_thread.run_sync(store.apply_edits, edits)
    )
    done: list[Any] = []

    async def edit(i: int, cancel: trio.CancelScope | None = None) -> None:
        if cancel is None:
            done.append((await batcher.run(Create({"name": "c", "value": i})))["value"])  # type: ignore[index]
            return
        with cancel:
            await batcher.run(Create({"name": "c", "value": i}))
            done.append("cancelled edit answered")  # pragma: no cover

    try:
        fcntl.flock(blocker, fcntl.LOCK_EX)
        with trio.fail_after(10):  # a stalled queue fails here, never hangs
            async with trio.open_nursery() as nursery:
                await _queue_and_cancel_the_head(nursery, batcher, edit, blocker)
        assert sorted(done) == list(range(MAX_FLUSHES + 3))
        assert sorted(d["value"] for d in _all(store)) == sorted(done)  # not the cancelled one
    finally:
        os.close(blocker)
        store.close()


class _FailsAfterDeleting(SqliteStore):
    """A delete of id 1 that fails after its DELETE ran: only a SAVEPOINT
    can undo it without undoing the other edits of the transaction."""

    def _delete_in(self, conn: sqlite3.Connection, rowid: int, touches: list[Any]) -> bool:
        deleted = super()._delete_in(conn, rowid, touches)
        if rowid == 1:
            raise StoreError("refused after the fact")
        return deleted


def test_a_failing_edit_is_rolled_back_alone(tmp_path: Path) -> None:
    store = _FailsAfterDeleting(f"sqlite:///{tmp_path / 'f.db'}")
    store.open()
    try:
        store.apply_edits([Create({"name": "a", "ts": T0}), Create({"name": "b", "ts": T0 + 1})])
        results = store.apply_edits([Create({"name": "c", "ts": T0 + 2}), Delete("1"), Delete("2")])
        assert isinstance(results[1], StoreError) and results[2] is True
        assert results[0] is not None and results[0]["name"] == "c"  # type: ignore[index]
        assert sorted(d["name"] for d in _all(store)) == ["a", "c"]
    finally:
        store.close()


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.002)


async def test_concurrent_requests_share_commits_and_answer_alone(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    # The lock file opened a second time: flock locks belong to an open file,
    # so this one excludes the store's writer as another process would.
    blocker = os.open(str(tmp_path / "api.db") + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT)
    n = 24
    try:
        async with client(store) as (c, deps):
            first = (await c.post("/metrics", json={"name": "seed", "value": 0})).json()["id"]
            before = deps.edits.flushes
            answers: dict[str, int] = {}

            async def send(key: str, method: str, url: str, body: Any = None) -> None:
                r = await c.request(method, url, json=body)
                answers[key] = r.status_code

            fcntl.flock(blocker, fcntl.LOCK_EX)  # as the ingest writer holds it meanwhile
            async with trio.open_nursery() as nursery:
                for i in range(n - 2):
                    nursery.start_soon(
                        send, f"post{i}", "POST", "/metrics", {"name": "m", "value": i}
                    )
                # Both deletes read the document before either commits:
                # the batch answers the second one 404 on its own.
                nursery.start_soon(send, "del1", "DELETE", f"/metrics/{first}")
                nursery.start_soon(send, "del2", "DELETE", f"/metrics/{first}")
                # (two flushes wait for the lock, one edit each: MAX_FLUSHES)
                await _until(
                    lambda: (
                        deps.edits.running == MAX_FLUSHES
                        and len(deps.edits._queue) == n - MAX_FLUSHES
                    ),
                    "every edit to queue behind the held lock",
                )
                fcntl.flock(blocker, fcntl.LOCK_UN)  # lets the blocked flush go
            assert deps.edits.edits - 1 == n  # the seed's edit, then these
            assert deps.edits.flushes - before < n  # fewer commits than edits
            assert deps.edits.flushes - before <= MAX_FLUSHES + -(-(n - MAX_FLUSHES) // MAX_BATCH)
            assert sorted(answers[f"post{i}"] for i in range(n - 2)) == [201] * (n - 2)
            assert sorted([answers["del1"], answers["del2"]]) == [204, 404]
            listed = (await c.get("/metrics", params={"name": "m", "limit": 100})).json()
            assert sorted(d["value"] for d in listed["items"]) == list(range(n - 2))
            assert (await c.get(f"/metrics/{first}")).status_code == 404
    finally:
        os.close(blocker)
        store.close()


def _refuse_b(old: dict[str, Any]) -> dict[str, Any] | None:
    if old["name"] == "b":
        raise Refused(PermissionError("not b"))
    return None  # delete


def _changes_give_old_and_new(store: Store) -> None:
    """A Change reads its document in the edit (what decide sees is the
    document as the earlier edits of the batch left it) and says old and new;
    a refusal is that edit's result alone."""
    a, b = store.apply_edits([Create({"name": "a", "ts": T0}), Create({"name": "b", "ts": T0})])
    assert isinstance(a, dict) and isinstance(b, dict)
    seen: list[Any] = []

    def bump(old: dict[str, Any]) -> dict[str, Any]:
        seen.append(old.get("value"))
        return {"value": (old.get("value") or 0.0) + 1}

    results = store.apply_edits([
        Change(a["id"], bump), Change(a["id"], bump), Change(b["id"], _refuse_b),
        Change(a["id"], _refuse_b), Change(a["id"], _refuse_b), Change("99999", bump),
    ])  # fmt: skip
    assert seen == [None, 1.0]
    first, second, refused, deleted, gone, missing = results
    assert isinstance(first, Changed) and first.old.get("value") is None and first.new is not None
    assert isinstance(second, Changed) and second.new and second.new["value"] == 2.0
    assert isinstance(refused, Refused) and isinstance(refused.reason, PermissionError)
    assert isinstance(deleted, Changed) and deleted.new is None and deleted.old["value"] == 2.0
    assert gone is None and missing is None
    assert [d["name"] for d in _all(store)] == ["b"]


def test_sqlite_change_reads_and_writes_in_one_transaction(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    try:
        _changes_give_old_and_new(store)
    finally:
        store.close()


@pytest.fixture
def mongo_store(mongo_uri: str) -> Iterator[Store]:
    """A MongoDB-wire store in a database of its own, closed after the test."""
    store = open_store(mongo_uri, app_env=f"edits{uuid.uuid4().hex[:12]}")
    store.open()
    try:
        yield store
    finally:
        store.close()


def test_mongo_change_gives_the_same_results(mongo_store: Store) -> None:
    _changes_give_old_and_new(mongo_store)


def test_mongo_applies_edits_one_by_one_with_the_same_results(mongo_store: Store) -> None:
    store = mongo_store
    made = store.apply_edits([Create({"name": "a", "ts": T0}), Create({"value": 1.0})])
    assert isinstance(made[1], StoreError)
    doc = made[0]
    assert isinstance(doc, dict)
    results = store.apply_edits([Replace(doc["id"], {"value": 2.0}), Delete(doc["id"])])
    assert isinstance(results[0], dict) and results[0]["value"] == 2.0
    assert results[1] is True and _all(store) == []


def test_the_log_is_synced_after_the_write_lock_is_let_go(tmp_path: Path, monkeypatch: Any) -> None:
    """apply_edits commits without fsync under the write lock, then fsyncs the
    write-ahead log before it returns, with the lock free for the others;
    with synchronous=normal it syncs nothing (as everywhere else)."""
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        other = os.open(str(tmp_path / "api.db") + LOCK_SUFFIX, os.O_RDWR)
        try:  # could another process take the write lock now?
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(other)  # (and its lock with it)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), free))
        real_fsync(fd)

    store = sqlite_store(tmp_path)
    assert isinstance(store, SqliteStore)
    try:
        monkeypatch.setattr(os, "fsync", fsync)
        made = store.apply_edits([Create({"name": "a", "value": 1.0, "ts": T0})])
        assert isinstance(made[0], dict)
        assert synced == [(str(tmp_path / "api.db") + "-wal", True)]
        # The next transaction of another kind syncs inside, as configured.
        monkeypatch.setattr(os, "fsync", real_fsync)
        conn = store._writer_conn()
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL, for now
        store.session_disconnected("s", T0)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        store.close()
    normal = open_store(f"sqlite:///{tmp_path / 'n.db'}?synchronous=normal")
    normal.open()
    try:
        synced.clear()
        monkeypatch.setattr(os, "fsync", fsync)
        assert isinstance(normal.apply_edits([Create({"name": "a", "ts": T0})])[0], dict)
        assert synced == []
    finally:
        normal.close()
