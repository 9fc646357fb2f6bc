"""Readers decode only what the ingest queue can take (``Pipeline.room``).

A reader that decoded a run and then waited for the queue held work the
writer could not have yet: with 100 compressed sessions (a read is a whole
session, ~770 samples a run) the first pass of the event loop decoded 77,000
samples before the writer's first batch, and the end had as many waiting for
the writer alone (issue 16: zstd ingest at 0.72x of plain, quiet). Real
sockets are not needed for that: memory streams, a real SQLite store."""

from __future__ import annotations

import pathlib

import trio
import trio.testing

from deltawire.collector.connection import handle_connection
from deltawire.collector.hub import Hub, IngestConfig
from deltawire.collector.pipeline import Pipeline, PipelineConfig
from deltawire.collector.stats import Stats
from deltawire.collector.stores import open_store
from deltawire.collector.writer import Item, ThreadWriter
from deltawire.protocol import NEED_DATA, ClientConnection, Hello, Snap

SESSIONS = 8
PER_SESSION = 100
QUEUE = 2


async def _until(conn: ClientConnection, stream: trio.abc.Stream, done: object) -> None:
    while not done():  # type: ignore[operator]
        conn.receive_data(await stream.receive_some())
        while conn.next_event() is not NEED_DATA:
            pass


async def _connect(
    nursery: trio.Nursery, hub: Hub, session: str
) -> tuple[ClientConnection, trio.abc.Stream]:
    """A session over a memory stream to ``hub``, welcomed."""
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_connection, server, hub)
    conn = ClientConnection()
    await client.send_all(conn.send(Hello(session=session)))
    await _until(conn, client, lambda: conn.welcome is not None)
    return conn, client


async def test_readers_wait_for_room_before_decoding(tmp_path: pathlib.Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'room.db'}")
    store.open()
    stats = Stats()
    pipeline = Pipeline(store, stats, PipelineConfig(queue_size=QUEUE), writer=ThreadWriter(store))
    hub = Hub(store, pipeline, stats, IngestConfig(ack_interval=0.01))
    clients: list[tuple[ClientConnection, trio.abc.Stream]] = []
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(SESSIONS):
                    clients.append(await _connect(nursery, hub, f"room-{i}"))
                for conn, client in clients:
                    # One read each: a run of PER_SESSION samples, then the
                    # start of a line that is not complete (it decodes to
                    # nothing: a reader woken for room may have nothing).
                    wire = b"".join(conn.send(Snap(s, 1.0 + s, "p", {"v": s}))
                                    for s in range(1, PER_SESSION + 1))  # fmt: skip
                    await client.send_all(wire + b'{"t":"snap","seq":')
                await trio.testing.wait_all_tasks_blocked()
                # No writer yet: the queue holds QUEUE runs and nobody
                # decoded more (before: every reader had decoded its run).
                assert stats.documents_queued == QUEUE * PER_SESSION
                nursery.start_soon(pipeline.run)
                # Every sample is stored and acked: none of the readers is
                # left waiting for room that nobody tells it about.
                for conn, client in clients:
                    await _until(conn, client, lambda c=conn: c.acked >= PER_SESSION)
                for _conn, client in clients:
                    await client.aclose()
                await hub.all_left()
                pipeline.close()
    finally:
        store.close()
    assert stats.documents_queued == SESSIONS * PER_SESSION


class _Nobody:
    def on_commit(self, seq: int) -> None:
        pass

    def on_store_reject(self, seq: int, reason: str) -> None:
        pass


async def test_waiting_readers_get_room_first_come_first_served(
    tmp_path: pathlib.Path, autojump_clock: object
) -> None:
    """Each chunk the writer takes hands its slot to the reader that waited
    longest, which then goes: none wakes only to find the room gone and
    queue again at the back, none is overtaken (the first version woke one
    reader per chunk taken, and each woken reader also woke the next while
    its own run was still on its way: half of them went to the back)."""
    store = open_store(f"sqlite:///{tmp_path / 'fifo.db'}")
    # One document a chunk and a batch: each _next_batch takes one chunk.
    pipeline = Pipeline(store, Stats(), PipelineConfig(queue_size=QUEUE, batch_max_docs=1),
                        writer=ThreadWriter(store))  # fmt: skip
    queued: list[int] = []

    async def reader(i: int) -> None:  # what a connection's read loop does
        await pipeline.room()
        pipeline.decoded(queued=True)
        await pipeline.submit(_Nobody(), [Item(f"s{i}", 1, "n", 1.0, None)], promised=True)
        queued.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(SESSIONS):  # they come in this order
            nursery.start_soon(reader, i)
            await trio.testing.wait_all_tasks_blocked()
        assert queued == list(range(QUEUE))
        assert pipeline.waiting == SESSIONS - QUEUE
        taken: list[str] = []
        for n in range(QUEUE + 1, SESSIONS + 1):
            batch = await pipeline._next_batch()  # the writer's take
            assert batch is not None
            taken += [chunk.session for chunk in batch]
            await trio.testing.wait_all_tasks_blocked()
            # The slot went to the next in line, and nobody else moved.
            assert queued == list(range(n))
            assert pipeline.waiting == SESSIONS - n
    assert taken == [f"s{i}" for i in range(SESSIONS - QUEUE)]


async def test_a_reader_that_took_every_line_goes_back_to_its_socket(
    tmp_path: pathlib.Path,
) -> None:
    """A run shorter than a run's limit took every complete line the read
    had: the reader reads its socket next, it does not wait for room in the
    queue only to learn that it has nothing (the first version did, so every
    paced reader whose run filled the queue waited a writer's take for
    nothing, and counted as queued work for flow control while it did)."""
    store = open_store(f"sqlite:///{tmp_path / 'short.db'}")
    store.open()
    stats = Stats()
    pipeline = Pipeline(store, stats, PipelineConfig(queue_size=1), writer=ThreadWriter(store))
    hub = Hub(store, pipeline, stats, IngestConfig(ack_interval=0.01))
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                clients = []
                for i in range(2):
                    clients.append(await _connect(nursery, hub, f"short-{i}"))
                for conn, client in clients:
                    await client.send_all(b"".join(conn.send(Snap(s, 1.0 + s, "p", {"v": s}))
                                                   for s in range(1, 11)))  # fmt: skip
                    await trio.testing.wait_all_tasks_blocked()
                # The first run fills the queue; its reader is back at its
                # socket. Only the second, which has a run to decode, waits.
                assert stats.documents_queued == 10
                assert pipeline.waiting == 1
                nursery.start_soon(pipeline.run)
                for conn, client in clients:
                    await _until(conn, client, lambda c=conn: c.acked >= 10)
                    await client.aclose()
                await hub.all_left()
                pipeline.close()
    finally:
        store.close()
