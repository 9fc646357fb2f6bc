"""PROTOCOL.md "One connection per session": a second hello takes the session
over, the older connection gets ``replaced`` (fatal) and is closed, and what
it accepted is stored before the new welcome, so ``welcome.acked`` counts it.
Also issue 11's defect 6: a frame below the session's high-water mark that
was never stored is stored (not acked and dropped), on both stores.

A collector runs in this process (``serve`` with the thread writer) on a real
socket; the SQLite store is stalled by holding its write lock from another
real connection.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from deltawire.collector.hub import IngestConfig
from deltawire.collector.server import ServeConfig, serve
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.protocol import Document, ErrorFrame
from deltawire.testing.harness import Client


def _snap(seq: int, ts: float | None = None, value: int | None = None) -> dict[str, Any]:
    return {"t": "snap", "seq": seq, "ts": ts if ts is not None else 1000.0 + seq,
            "name": "p", "data": {"v": seq if value is None else value}}  # fmt: skip


def _hello(session: str) -> dict[str, Any]:
    return {"t": "hello", "v": 1, "session": session}


@pytest.fixture
async def collector(tmp_path: pathlib.Path) -> AsyncIterator[tuple[int, pathlib.Path]]:
    db = tmp_path / "takeover.db"
    # A replaced connection waits shutdown_grace for the store before it closes
    # anyway: 1 s, not 10, while a test holds the store's lock.
    cfg = ServeConfig(listen=("127.0.0.1", 0), http=None, store_uri=f"sqlite:///{db}",
                      writer="thread", ingest=IngestConfig(shutdown_grace=1.0))  # fmt: skip
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, cfg)
        yield port, db
        nursery.cancel_scope.cancel()


async def _welcomed(port: int, session: str) -> Client:
    client = await Client.connect(port)
    await client.send(_hello(session))
    await client.until(lambda c: c.welcome)
    return client


def _seqs(db: pathlib.Path, session: str) -> list[int]:
    store = open_store(f"sqlite:///{db}")
    store.open()
    try:
        return sorted(d["seq"] for d in store.find(MetricQuery(session=session, limit=1000)))
    finally:
        store.close()


async def test_second_hello_takes_over_after_the_first_connection_is_stored(
    collector: tuple[int, pathlib.Path],
) -> None:
    port, db = collector
    a = await _welcomed(port, "s")
    # Stall the store, so what A sends is accepted but cannot be stored yet.
    blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        # The unknown frame's error comes back at once: A's reader has then
        # accepted every frame before it.
        await a.send(*[_snap(i) for i in range(10)], {"t": "nope", "seq": 10})
        await a.until(lambda c: c.errors)
        assert a.acked == -1
        b = await Client.connect(port)
        await b.send(_hello("s"))
        # A is told and closed; B's welcome waits for the store.
        await a.until_closed()
        assert isinstance(a.frames[-1], ErrorFrame)
        assert (a.frames[-1].code, a.frames[-1].fatal) == ("replaced", True)
        assert b.welcome is None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await b.until(lambda c: c.welcome)
    assert b.welcome is not None and b.welcome.acked == 9  # A's frames count
    await b.send(_snap(11), {"t": "bye", "seq": 12, "ts": 2000.0})
    await b.until_closed()
    assert b.acked == 12 and not b.errors
    assert _seqs(db, "s") == [*range(10), 11, 12]


async def test_a_takeover_chain_leaves_one_holder(collector: tuple[int, pathlib.Path]) -> None:
    port, db = collector
    clients = []
    for _ in range(4):
        c = await Client.connect(port)
        await c.send(_hello("chain"))
        clients.append(c)
    last = clients[-1]
    await last.until(lambda c: c.welcome)
    for c in clients[:-1]:
        await c.until_closed()
        assert [(e.code, e.fatal) for e in c.errors] == [("replaced", True)]
    await last.send(_snap(0))
    await last.until(lambda c: c.acked == 0)
    assert not last.errors
    # Other sessions are not touched by a takeover.
    other = await Client.connect(port)
    await other.send(_hello("other"), _snap(0))
    await other.until(lambda c: c.acked == 0)
    await last.send(_snap(1))
    await last.until(lambda c: c.acked == 1)
    assert _seqs(db, "chain") == [0, 1]


async def test_a_gap_below_the_mark_is_stored_not_dropped(
    collector: tuple[int, pathlib.Path],
) -> None:
    """Defect 6: A stores 0, 1, 2, 10; B (after taking over) sends 5, which A
    never sent, and 11, and is acked for 11: 5 must be stored. Resending 10
    and 5 stores nothing twice."""
    port, db = collector
    a = await Client.connect(port)
    await a.send(_hello("gap"), _snap(0), _snap(1), _snap(2), _snap(10))
    await a.until(lambda c: c.acked == 10)
    b = await Client.connect(port)
    await b.send(_hello("gap"))
    await b.until(lambda c: c.welcome)
    assert b.welcome is not None and b.welcome.acked == 10
    await b.send(_snap(5), _snap(11))
    await b.until(lambda c: c.acked == 11)
    assert _seqs(db, "gap") == [0, 1, 2, 5, 10, 11]
    c = await Client.connect(port)
    await c.send(_hello("gap"), _snap(5), _snap(10), _snap(12))
    await c.until(lambda cl: cl.acked == 12)
    assert _seqs(db, "gap") == [0, 1, 2, 5, 10, 11, 12]


def _doc(session: str, seq: int) -> Document:
    return Document(session, seq, "sample", "p", 1000.0 + seq, "h", (), {"v": seq})


@pytest.fixture(params=["sqlite", "mongo"])
def store_uri(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gap.db'}"
    else:
        yield request.getfixturevalue("mongo_uri")


def test_store_keeps_a_gap_below_the_mark(store_uri: str) -> None:
    """The store half of defect 6, for every store: idempotent on (session,
    seq), not on 'at or below the highest seq'."""
    store = open_store(store_uri)
    store.open()
    session = f"gap-{id(store)}"
    try:
        store.write_batch([_doc(session, 10)])
        store.write_batch([_doc(session, 5), _doc(session, 11)])
        # resends, in separate batches and within one
        store.write_batch([_doc(session, 5), _doc(session, 10), _doc(session, 11)])
        store.write_batch([_doc(session, 7), _doc(session, 7), _doc(session, 12)])
        # a gap, then a resend above it but below the mark
        store.write_batch([_doc(session, 8), _doc(session, 10), _doc(session, 13)])
        docs = store.find(MetricQuery(session=session, limit=100))
        assert sorted(d["seq"] for d in docs) == [5, 7, 8, 10, 11, 12, 13]
        assert store.acked(session) == 13
    finally:
        store.close()


async def test_a_finished_connection_is_closed_while_the_store_is_down(
    collector: tuple[int, pathlib.Path],
) -> None:
    """The store is write-locked, so marking the session disconnected is
    retried (for up to 5 s): the connection's socket is closed first, not
    after the store answers (it was held 5 s), and a newer connection for
    the session is welcomed meanwhile."""
    port, db = collector
    a = await _welcomed(port, "down")
    blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        assert isinstance(a.stream, trio.SocketStream)
        await a.stream.send_eof()  # the agent is done sending
        await a.until_closed(timeout=3)  # was 5 s: the store's retries first
        b = await Client.connect(port)
        await b.send(_hello("down"))
        await b.until(lambda c: c.welcome)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await b.send(_snap(0))
    await b.until(lambda c: c.acked == 0)
