"""The collector's connection handler over in-memory streams (no sockets), on a
real SQLite store: every golden capture fed whole and byte by byte."""

from __future__ import annotations

import pathlib
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from deltawire.collector.connection import handle_connection
from deltawire.collector.hub import Hub, IngestConfig
from deltawire.collector.pipeline import Pipeline, PipelineConfig
from deltawire.collector.stats import Stats
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.protocol import NEED_DATA, Ack, ClientConnection, Closed, ErrorFrame, Frame, Welcome

CAPTURES = pathlib.Path(__file__).parents[1] / "captures"


def _one_way(
    max_bytes: int | None,
) -> tuple[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    if max_bytes is not None:

        async def pump() -> None:
            trio.testing.memory_stream_pump(send, receive, max_bytes=max_bytes)

        send.send_all_hook = pump
        receive.receive_some_hook = pump
    return send, receive


async def run_session(
    store_uri: str, wire: bytes, *, max_bytes: int | None = None, config: IngestConfig | None = None
) -> tuple[list[Frame], Stats]:
    """Feed ``wire`` to one connection, close our side, return every frame the collector sent."""
    store = open_store(store_uri)
    store.open()
    stats = Stats()
    pipeline = Pipeline(store, stats, PipelineConfig(batch_max_ms=5))
    hub = Hub(store, pipeline, stats, config or IngestConfig(ack_interval=0.01))
    c2s_send, c2s_recv = _one_way(max_bytes)
    s2c_send, s2c_recv = _one_way(None)
    server_stream = trio.StapledStream(s2c_send, c2s_recv)
    frames: list[Frame] = []
    conn = ClientConnection()
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipeline.run)

                async def connection() -> None:
                    await handle_connection(server_stream, hub)

                nursery.start_soon(connection)
                await c2s_send.send_all(wire)
                await c2s_send.aclose()
                while not conn.closed:
                    conn.receive_data(await s2c_recv.receive_some())
                    while (frame := conn.next_event()) is not NEED_DATA:
                        if type(frame) is not Closed:
                            frames.append(frame)  # type: ignore[arg-type]
                pipeline.close()
    finally:
        store.close()
    return frames, stats


def _expected(capture: str) -> list[dict[str, Any]]:
    return orjson.loads((CAPTURES / f"{capture}.expected.json").read_bytes())  # type: ignore[no-any-return]


@pytest.mark.parametrize("max_bytes", [None, 1, 13])
@pytest.mark.parametrize("capture", ["basic_session", "bad_lines", "crlf_blank", "invalid_utf8"])
async def test_capture_through_the_collector(
    sqlite_uri: str, capture: str, max_bytes: int | None
) -> None:
    wire = (CAPTURES / f"{capture}.ndjson").read_bytes()
    frames, stats = await run_session(sqlite_uri, wire, max_bytes=max_bytes)
    expected = _expected(capture)
    docs = [e["doc"] for e in expected if "doc" in e]
    errors = [(e["error"], e["seq"]) for e in expected if "error" in e]
    session = expected[0]["hello"]

    assert isinstance(frames[0], Welcome) and frames[0].acked == -1
    assert [(f.code, f.seq) for f in frames if isinstance(f, ErrorFrame)] == errors
    acks = [f.seq for f in frames if isinstance(f, Ack)]
    assert acks == sorted(acks)
    last_seq = max([d["seq"] for d in docs] + [s for _, s in errors if s is not None])
    assert acks[-1] == last_seq

    store = open_store(sqlite_uri)
    store.open()
    stored = store.find(MetricQuery(session=session, limit=1000))
    assert [
        (d["seq"], d["kind"], d["name"], d.get("data"))
        for d in sorted(stored, key=lambda d: d["seq"])
    ] == [(d["seq"], d["kind"], d["name"], d["data"]) for d in docs]
    assert stats.documents_stored == len(docs)

    # Replaying the same bytes stores nothing twice; welcome.acked is the last stored seq.
    frames2, _ = await run_session(sqlite_uri, wire, max_bytes=max_bytes)
    assert isinstance(frames2[0], Welcome) and frames2[0].acked == max(d["seq"] for d in docs)
    assert len(store.find(MetricQuery(session=session, limit=1000))) == len(docs)
    store.close()


async def test_frames_after_a_bye_are_not_read(sqlite_uri: str) -> None:
    wire = (
        b'{"t":"hello","v":1,"session":"after-bye"}\n'
        b'{"t":"bye","seq":1,"ts":1}\n'
        b'{"t":"event","seq":2,"ts":1,"name":"too-late"}\n'
    )
    frames, stats = await run_session(sqlite_uri, wire)
    assert [type(f) for f in frames] == [Welcome, Ack]
    assert frames[-1] == Ack(1)
    assert stats.documents_stored == 1
