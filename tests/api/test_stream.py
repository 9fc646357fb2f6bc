"""``GET /stream``: the hub's bounds in process, and end to end with real
processes: a real HTTP client reading events from the API process that the
collector started, fed by the ingest side; 1,000 subscribers within an RSS bound."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
import trio

from deltawire.collector.api.hub import QUEUE_EVENTS, StreamHub
from deltawire.collector.stores.base import MetricQuery
from deltawire.protocol import Document
from deltawire.testing.harness import (
    Level,
    collector_process,
    make_samples,
    stream_session,
    wait_for,
)

from .inproc import sqlite_store

T0 = 1_790_000_000.0


def _doc(i: int, session: str = "s1") -> dict[str, Any]:
    return {"id": str(i), "session": session, "seq": i, "kind": "sample", "name": "proc",
            "host": "h", "tags": ["a"], "ts": T0 + i, "data": {"cpu": {"percent": i}}}  # fmt: skip


async def _read_all(hub: StreamHub, sub: Any) -> list[bytes]:
    out = []
    async for event in hub.events(sub, keepalive_s=60):
        out.append(event)
    return out


async def test_filters_and_fields(tmp_path: Path) -> None:
    hub = StreamHub(sqlite_store(tmp_path))
    sub = hub.subscribe(MetricQuery(session="s2", tags=("a",)), (("cpu", "percent"),))
    hub.publish([_doc(1), _doc(2, "s2"), {**_doc(3, "s2"), "tags": []}])
    events = hub.events(sub, keepalive_s=60)
    assert (await events.__anext__()).startswith(b": ")
    event = await events.__anext__()
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    doc = orjson.loads(event[6:])
    assert (doc["id"], doc["data"]) == ("2", {"cpu": {"percent": 2}})
    await events.aclose()
    assert not hub.subscribers


async def test_slow_consumer_is_dropped_with_a_last_event(tmp_path: Path) -> None:
    hub = StreamHub(sqlite_store(tmp_path))
    slow = hub.subscribe(MetricQuery(), None)
    fast = hub.subscribe(MetricQuery(session="other"), None)
    hub.publish([_doc(i) for i in range(QUEUE_EVENTS + 10)])
    assert slow.dropped and slow not in hub.subscribers and fast in hub.subscribers
    events = await _read_all(hub, slow)
    assert len(events) == 1 + QUEUE_EVENTS + 1  # hello comment, the queue, the last word
    assert events[-1].startswith(b"event: dropped\n")
    assert orjson.loads(events[-1].split(b"data: ")[1])["error"] == "slow_consumer"


async def test_keepalive_comment(tmp_path: Path) -> None:
    hub = StreamHub(sqlite_store(tmp_path))
    sub = hub.subscribe(MetricQuery(), None)
    events = hub.events(sub, keepalive_s=0.01)
    assert (await events.__anext__()).startswith(b": deltawire")
    assert await events.__anext__() == b": keepalive\n\n"
    await events.aclose()


async def test_hub_reads_the_store_once_for_all_subscribers(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    hub = StreamHub(store)
    subs = [hub.subscribe(MetricQuery(), None) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        hub.wake()  # the tail starts at the newest id
        # The starting point is read (a store read no event announces).
        await wait_for(lambda: hub._last is not None, 10, "the tail's starting point")
        store.write_batch([Document("s9", i, "sample", "p", T0 + i, "h", (), {"n": i})
                           for i in range(3)])  # fmt: skip
        hub.wake()
        got: list[list[int]] = []
        for sub in subs:
            seqs: list[int] = []
            with trio.fail_after(10):
                while len(seqs) < 3:
                    seqs.append(orjson.loads((await sub.receive.receive())[6:])["seq"])
            got.append(seqs)
        assert got == [[0, 1, 2]] * 3
        nursery.cancel_scope.cancel()


# -- end to end --------------------------------------------------------------------------


async def _subscribe(base: str, params: dict[str, str], started: trio.Event,
                     events: list[tuple[float, dict[str, Any]]], count: Level) -> None:  # fmt: skip
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as c,
        c.stream("GET", "/stream", params=params) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith(":"):
                started.set()
            elif line.startswith("data: "):
                events.append((time.monotonic(), orjson.loads(line[6:])))
                count.set(len(events))


@pytest.mark.slow
async def test_a_stored_document_reaches_a_subscriber_within_1s_of_its_ack(
    tmp_path: Path,
) -> None:
    with collector_process(tmp_path, http=True) as cp:
        base = f"http://127.0.0.1:{cp.http_port}"
        events: list[tuple[float, dict[str, Any]]] = []
        acked_at: dict[int, float] = {}

        def progress(seq: int) -> None:
            for s in range(seq + 1):
                acked_at.setdefault(s, time.monotonic())

        async with trio.open_nursery() as nursery:
            started = trio.Event()
            received = Level(0)
            nursery.start_soon(_subscribe, base, {"session": "live-1"}, started, events, received)
            with trio.fail_after(20):
                await started.wait()
            samples = make_samples(5)
            await stream_session(cp.port, "live-1", samples, chunk=1, progress=progress)
            await received.reach(len(samples), timeout=10)
            nursery.cancel_scope.cancel()
        assert [e["seq"] for _, e in events] == list(range(5))
        assert events[0][1]["data"] == samples[0] and events[0][1]["session"] == "live-1"
        lags = [at - acked_at[e["seq"]] for at, e in events]
        assert max(lags) < 1.0, lags


@pytest.mark.slow
async def test_a_thousand_subscribers_within_an_rss_bound(tmp_path: Path) -> None:
    n = 1000
    with collector_process(tmp_path, http=True) as cp:
        api = next(
            p for p in psutil.Process(cp.pid).children() if "collector.api" in " ".join(p.cmdline())
        )
        rss_before = api.memory_info().rss
        streams: list[trio.SocketStream] = []
        request = b"GET /stream?session=crowd HTTP/1.1\r\nhost: x\r\n\r\n"
        received = [b""] * n

        async def open_one(i: int) -> None:
            s = await trio.open_tcp_stream("127.0.0.1", cp.http_port)
            await s.send_all(request)
            streams.append(s)
            with trio.fail_after(60):
                while b": deltawire" not in received[i]:
                    received[i] += await s.receive_some(4096)

        async def read_event(i: int, s: trio.SocketStream) -> None:
            with trio.fail_after(60):
                while b"data: " not in received[i]:
                    received[i] += await s.receive_some(4096)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(open_one, i)
        rss_subscribed = api.memory_info().rss
        await stream_session(cp.port, "crowd", make_samples(1))
        async with trio.open_nursery() as nursery:
            for i, s in enumerate(streams):
                nursery.start_soon(read_event, i, s)
        rss_after = api.memory_info().rss
        for s in streams:
            await s.aclose()
        # ~20 KB per subscriber would be generous (a socket, a task, a queue).
        assert rss_subscribed - rss_before < n * 60_000, (rss_before, rss_subscribed)
        assert rss_after - rss_before < n * 60_000 + (20 << 20), (rss_before, rss_after)
        print(f"RSS: {rss_before >> 20} MiB idle, {rss_subscribed >> 20} MiB with {n} "
              f"subscribers, {rss_after >> 20} MiB after one event each")  # fmt: skip
