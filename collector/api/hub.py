"""``GET /stream``: newly stored documents fanned out to subscribers.

Where documents come from: the ingest process tells this process after each
commit (the control pipe's ``bump``), and ``StreamHub.wake`` is called; one
task (``run``) then reads what was stored since the last document it saw
(``Store.since``: one indexed read for all subscribers, never one per client)
and publishes it. Points created through the API are published by the route
that created them. Nothing is read while nobody listens.

Each subscriber has a bounded queue. A subscriber whose queue is full (it
reads slower than documents arrive) is dropped: it gets a last ``dropped``
event saying so, and its memory never grows past the bound.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from deltawire.collector.stores.base import MetricQuery, Store

from .views import doc_out

__all__ = ["KEEPALIVE_S", "QUEUE_EVENTS", "StreamHub", "Subscriber"]

log = logging.getLogger("deltawire.collector.api.stream")

QUEUE_EVENTS = 1024  # events a subscriber may lag behind before it is dropped
KEEPALIVE_S = 15.0  # a comment line at least this often (HTTP_API.md)
_READ_BATCH = 2000  # documents per Store.since call
_DROPPED = (
    b"event: dropped\ndata: "
    + orjson.dumps(
        {"error": "slow_consumer", "detail": f"more than {QUEUE_EVENTS} events behind; reconnect"}
    )
    + b"\n\n"
)


def _matches(q: MetricQuery, d: dict[str, Any]) -> bool:
    if q.session is not None and d.get("session") != q.session:
        return False
    if q.name is not None and d.get("name") != q.name:
        return False
    if q.kind is not None and d.get("kind") != q.kind:
        return False
    if q.host is not None and d.get("host") != q.host:
        return False
    if q.ts_from is not None and d["ts"] < q.ts_from:
        return False
    if q.ts_to is not None and d["ts"] >= q.ts_to:
        return False
    return not q.tags or set(q.tags) <= set(d.get("tags") or ())


@dataclass(eq=False)
class Subscriber:
    query: MetricQuery
    paths: Sequence[tuple[str, ...]] | None
    send: MemoryObjectSendStream[bytes]
    receive: MemoryObjectReceiveStream[bytes]
    dropped: bool = False
    sent: int = field(default=0)


class StreamHub:
    def __init__(self, store: Store, max_subscribers: int = 10_000) -> None:
        self.store = store
        self.max_subscribers = max_subscribers
        self.subscribers: set[Subscriber] = set()
        self.published = 0
        self.dropped = 0
        #: Told the subscriber count whenever it changes (the other API
        #: workers wake this one for documents they create only while it
        #: has subscribers: peers.py).
        self.on_count: Callable[[int], None] | None = None
        self._wake: anyio.Event | None = None  # made in run(): an Event needs the loop
        self._pending = False
        self._last: str | None = None  # id of the newest document seen

    # -- the feed -------------------------------------------------------------------------

    def wake(self) -> None:
        """Something was stored: read it (if anyone listens)."""
        self._pending = True
        if self._wake is not None:
            self._wake.set()

    async def run(
        self, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            if not self._pending:
                self._wake = anyio.Event()
                await self._wake.wait()
            self._pending = False
            if not self.subscribers:
                self._last = None  # start from "now" when someone subscribes
                continue
            try:
                await self._catch_up()
            except Exception as e:  # a failing store must not end the stream task
                log.warning("stream: reading new documents failed: %s", e)

    async def _catch_up(self) -> None:
        if self._last is None:
            _, self._last = await anyio.to_thread.run_sync(self.store.since, None, 0)
        while self.subscribers:
            docs, self._last = await anyio.to_thread.run_sync(
                self.store.since, self._last, _READ_BATCH
            )
            self.publish(docs)
            if len(docs) < _READ_BATCH:
                return

    def publish(self, docs: Sequence[dict[str, Any]]) -> None:
        """Hand ``docs`` (store form) to every subscriber whose filters match."""
        if not docs or not self.subscribers:
            return
        self.published += len(docs)
        plain: dict[int, bytes] = {}  # encoded once for all subscribers without fields=
        for sub in list(self.subscribers):
            for i, d in enumerate(docs):
                if not _matches(sub.query, d):
                    continue
                if sub.paths is None:
                    event = plain.get(i)
                    if event is None:
                        event = plain[i] = b"data: " + orjson.dumps(doc_out(d)) + b"\n\n"
                else:
                    event = b"data: " + orjson.dumps(doc_out(d, sub.paths)) + b"\n\n"
                try:
                    sub.send.send_nowait(event)
                except anyio.WouldBlock:
                    self._drop(sub)
                    break
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._discard(sub)
                    break

    def _drop(self, sub: Subscriber) -> None:
        sub.dropped = True
        self.dropped += 1
        self._discard(sub)
        sub.send.close()  # the reader drains what is queued, then ends with _DROPPED

    # -- subscribers ----------------------------------------------------------------------

    def subscribe(self, query: MetricQuery, paths: Sequence[tuple[str, ...]] | None) -> Subscriber:
        send, receive = anyio.create_memory_object_stream[bytes](QUEUE_EVENTS)
        sub = Subscriber(query, paths, send, receive)
        self.subscribers.add(sub)
        if self.on_count is not None:
            self.on_count(len(self.subscribers))
        return sub

    def _discard(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            if self.on_count is not None:
                self.on_count(len(self.subscribers))

    def full(self) -> bool:
        return len(self.subscribers) >= self.max_subscribers

    async def events(
        self, sub: Subscriber, keepalive_s: float = KEEPALIVE_S
    ) -> AsyncIterator[bytes]:
        """The subscriber's SSE bytes: a first comment, events, a comment at
        least every ``keepalive_s``, and a last ``dropped`` event if it lagged."""
        try:
            yield b": deltawire stream; one JSON document per data line\n\n"
            while True:
                event = b": keepalive\n\n"
                ended = False
                # No yield inside the cancel scope: it must not span a suspension.
                with anyio.move_on_after(keepalive_s):
                    try:
                        event = await sub.receive.receive()
                    except anyio.EndOfStream:
                        ended = True
                if ended:
                    if sub.dropped:
                        yield _DROPPED
                    return
                yield event
        finally:
            self._discard(sub)
            sub.send.close()
            sub.receive.close()
