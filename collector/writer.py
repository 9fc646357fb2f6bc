"""The store writer: where batches become durable.

Decoding and reassembling frames takes a core; so does committing rows. Python
gives one core per process, so by default the collector commits in a child
process of its own (``python -m deltawire.collector.writer_child``) and the ingest process
only ships it batches over a pipe: length-prefixed pickles (the child is our
own, and pickle moves a row's JSON text as one copy, where JSON would escape
every quote in it and the child would unescape them again), one reply per
batch, in order. ``ThreadWriter`` does the same work in a worker thread of
the ingest process (tests, small deployments).

Either way a writer retries while the store is unavailable and never returns
before the batch is committed; a document the store refuses for good (a value
it cannot represent) is isolated and reported, so it cannot block the rest.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple, Protocol

import orjson
import trio

from deltawire.protocol import Document, DocumentFactory
from deltawire.retry import Backoff

from .child import Child
from .stores import open_store
from .stores.base import Store
from .writer_child import _HEADER, _READY, BatchResult, commit_batch, commit_rows, main

__all__ = [
    "BatchResult",
    "BatchWriter",
    "Item",
    "ProcessWriter",
    "ThreadWriter",
    "commit_batch",
    "commit_rows",
    "item_factory",
    "main",
]

log = logging.getLogger("deltawire.collector.writer")

#: A writer that keeps dying is restarted at most every 5 s.
_RESTART_BACKOFF = Backoff(0.1, 5.0)


class Item(NamedTuple):
    """One document as it flows through the pipeline: what the pipeline reads
    (session, seq, name) beside what the writer commits (``row``: the store's
    row for the process writer, the ``Document`` for the thread writer).

    Built by the writer's ``make_item`` while the frame is decoded, so the
    document is encoded while its data is still in the CPU's caches."""

    session: str
    seq: int
    name: str
    ts: float  # what the HTTP API's cache must know of it (see api.cache.Span)
    row: Any
    #: and its kind (the cache's ``kind:K`` scopes); None: not known, so the
    #: cache forgets the answers of every kind
    kind: str | None = None


#: ``Item(...)`` without the Python-level ``__new__`` of named tuples: one
#: per document on the ingest loop
_new_item = tuple.__new__


def item_factory(encode: DocumentFactory) -> DocumentFactory:
    """A ``make_item``: each document as an ``Item`` whose row is ``encode``'s."""

    def make_item(session, seq, kind, name, ts, host, tags, data):
        # the DocumentFactory signature; named, not *fields: no index reads
        row = encode(session, seq, kind, name, ts, host, tags, data)
        return _new_item(Item, (session, seq, name, ts, row, kind))

    return make_item


Waiter = Callable[[], Awaitable[BatchResult]]


class BatchWriter(Protocol):
    """Batches in, in order; results out, in the same order.

    ``make_item`` is the ``document`` factory of the connections'
    ``ServerConnection``: it builds each document directly as an ``Item``
    (raising ``BadFrame`` for one the store cannot represent). ``pack`` turns
    one connection's run of items into what is queued. ``submit`` hands a
    batch of packs over and returns an awaitable for its result (indexes in
    the result count documents across the batch), so the next batch can be
    handed over while this one is being committed. Results must be awaited
    in submission order.
    """

    @property
    def make_item(self) -> DocumentFactory: ...

    def pack(self, items: list[Item]) -> Any: ...

    async def start(self) -> None:
        """Get ready before the first batch (called once, before ingest starts)."""

    async def submit(self, packs: list[Any]) -> Waiter: ...

    async def aclose(self) -> None: ...


class ThreadWriter:
    """Commits in a worker thread of this process."""

    #: the row is the Document: the store encodes it in the worker thread
    make_item: Final = staticmethod(item_factory(Document))

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def pack(items: list[Item]) -> list[Item]:
        return items  # the store encodes them in the worker thread

    async def submit(self, packs: list[list[Item]]) -> Waiter:
        def commit() -> BatchResult:
            return commit_batch(self.store, [item.row for items in packs for item in items])

        async def result() -> BatchResult:
            # Not cancellable on purpose: a write in flight must finish so
            # that what we ack and what is stored never disagree.
            return await trio.to_thread.run_sync(commit)

        return result

    async def write(self, docs: list[Document]) -> BatchResult:
        return await (
            await self.submit([[Item(d.session, d.seq, d.name, d.ts, d, d.kind) for d in docs]])
        )()

    async def start(self) -> None:
        pass  # the store is open already, and threads start in microseconds

    async def aclose(self) -> None:
        pass


def _grow_pipe(stream: Any) -> None:
    """A batch is ~1 MB: a 1 MiB pipe moves it in a few writes instead of a
    ping-pong of 64 KiB ones between the two processes (Linux only)."""
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, AttributeError, ValueError):
        pass  # a smaller pipe is only slower


class ProcessWriter:
    """Commits in a child process; restarts it (and resends) if it dies."""

    def __init__(
        self,
        store_uri: str,
        store_options: dict[str, Any],
        log_level: str = "warning",
    ) -> None:
        #: the store's row encoder: rows, not documents, cross the pipe
        #: (serialised once here, never parsed back into dicts); building
        #: the store object does no I/O
        self.make_item = item_factory(open_store(store_uri, **store_options).encode_row)
        self.argv = [sys.executable, "-m", "deltawire.collector.writer_child", "--store", store_uri,
                     "--options", orjson.dumps(store_options).decode(), "--log-level", log_level,
                     "--parent-pid", str(os.getpid())]  # fmt: skip
        self._child = Child(self.argv, _RESTART_BACKOFF, stdout=True)
        self._buf = bytearray()
        self._inflight: deque[bytes] = deque()  # framed batches sent, not yet answered
        self._send_lock = trio.Lock()

    @property
    def process(self) -> trio.Process | None:
        """The writer process, once started."""
        return self._child.process

    async def _process(self) -> trio.Process:
        if not self._child.running:
            self._buf.clear()
            _grow_pipe((await self._child.start()).stdin)
        assert self._child.process is not None
        return self._child.process

    async def start(self, timeout: float = 10.0) -> None:
        """Start the child now and wait, at most ``timeout``, until its store is open.

        Started on the first batch instead, the child's start-up (~0.3 s of
        imports and opening the store) held that batch, and everything queued
        behind it, for as long: the worst ack latencies of a whole run.
        Should the store still be unavailable at ``timeout`` (the child keeps
        retrying), ingest starts anyway and batches queue as usual.
        """
        async with self._send_lock:
            proc = await self._process()
        assert proc.stdout is not None
        with trio.move_on_after(timeout) as scope:
            try:
                while await self._read_frame(proc.stdout) != _READY:
                    pass  # nothing else comes before it: no batch was sent yet
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError) as exc:
                # Died at start: the first batch restarts it (with backoff).
                log.error("the store writer exited at start", extra={"error": repr(exc)})
                return
        if scope.cancelled_caught:
            log.warning("the store writer is not ready yet; starting ingest anyway",
                        extra={"waited_s": timeout})  # fmt: skip

    @staticmethod
    def pack(items: list[Item]) -> bytes:
        return pickle.dumps([item.row for item in items], protocol=pickle.HIGHEST_PROTOCOL)

    async def submit(self, packs: list[bytes]) -> Waiter:
        payload = pickle.dumps(("rows", packs), protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEADER.pack(len(payload)) + payload
        async with self._send_lock:
            self._inflight.append(frame)
            proc = await self._process()
            assert proc.stdin is not None
            try:
                # Shielded: a batch handed over is committed, whatever happens
                # to us, so what we ack and what is stored never disagree.
                with trio.CancelScope(shield=True):
                    await proc.stdin.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the writer died: _result notices, restarts it and resends
        return self._result

    async def write(self, docs: list[Document]) -> BatchResult:
        make = self.make_item
        items = [make(d.session, d.seq, d.kind, d.name, d.ts, d.host, d.tags, d.data) for d in docs]
        return await (await self.submit([self.pack(items)]))()

    async def _result(self) -> BatchResult:
        """The reply to the oldest unanswered batch (replies come in order)."""
        while True:
            proc = self._child.process
            assert proc is not None and proc.stdout is not None
            try:
                with trio.CancelScope(shield=True):
                    reply = await self._read_frame(proc.stdout)
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError) as exc:
                await self._restart(proc, exc)
                continue
            if reply == _READY:
                continue  # a (re)started child is up; its answers follow
            self._inflight.popleft()
            r = orjson.loads(reply)
            return BatchResult([(i, why) for i, why in r["rejected"]], r["seconds"], r["retries"])

    async def _restart(self, dead: trio.Process, exc: BaseException) -> None:
        """Replace a dead writer and resend, in order, every unanswered batch."""
        async with self._send_lock:
            if self._child.process is not dead:
                return  # someone else already did
            log.error("the store writer process died; restarting it and resending",
                      extra={"error": repr(exc), "batches": len(self._inflight)})  # fmt: skip
            self._buf.clear()
            with trio.CancelScope(shield=True):
                proc = await self._child.restart()
                _grow_pipe(proc.stdin)
                assert proc.stdin is not None
                try:
                    for frame in self._inflight:
                        await proc.stdin.send_all(frame)
                    self._child.healthy()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # died again: the next read finds out

    async def _read_frame(self, stream: trio.abc.ReceiveStream) -> bytes:
        buf = self._buf
        while True:
            if len(buf) >= 4:
                (size,) = _HEADER.unpack_from(buf)
                if len(buf) >= 4 + size:
                    frame = bytes(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    return frame
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise EOFError("writer closed its output")
            buf += chunk

    async def aclose(self) -> None:
        await self._child.stop()  # EOF: the writer finishes what it has and exits


if __name__ == "__main__":  # the child by its former name
    raise SystemExit(main())
