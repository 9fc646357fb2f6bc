"""API workers: the HTTP API processes that share one port, and what they tell
each other.

With ``API_WORKERS`` > 1 the collector starts that many API processes, each
binding the HTTP port with ``SO_REUSEPORT`` (the kernel spreads connections
over them) and each with its own cache, control pipe and edit writer. One API
process is bound to one core by its GIL; measured standalone on 2 cores,
two of them served 7.2-8.1k uncached pages/s at c=100 (p95 22-28 ms) where
one served 4.1-5.1k (p95 31-45 ms): docs/api-performance.md.

They share a directory (0700, made by the collector) where worker ``i`` has

- ``i.journal``: what its API writes changed, as a ring of records it alone
  appends to (``Journal``): the cache bump of each committed group of edits
  and the ids of documents it created (for ``/stream`` subscribers of the
  other workers). Every other worker reads it before each cache lookup (one
  shared-memory read when nothing is new) and every ``SYNC_EVERY_S``. So
  once a write is answered, no worker can serve an answer it made stale (a
  client that PUTs on one connection and GETs on another sees its write,
  whichever worker answers);
- ``i.sock``: a datagram socket. An empty datagram wakes it to read the
  journals now (after a create: a ``/stream`` subscriber must not wait);
  the others ask for (and answer with) counters, so ``/stats`` is the sum of
  every worker's.

Only our own processes can reach the directory, so messages are pickles.
The ingest process's control pipe feeds every worker itself (api_process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import pickle
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .cache import EVERYTHING, LocalCache, Span

if TYPE_CHECKING:
    from .deps import Deps

__all__ = ["JOURNAL_BYTES", "Journal", "PeerNews", "Peers", "attach"]

log = logging.getLogger("deltawire.collector.api.peers")

#: A journal's ring. A reader more than this behind its writer (it was stuck
#: for ~thousands of writes) has lost records and clears its cache instead.
JOURNAL_BYTES = 1 << 20
#: The header: the head (bytes ever appended) at 0, the owner's ``/stream``
#: subscriber count at 8 (native u64s: one aligned 8-byte load or store
#: each, never torn), then reserved.
_HEADER = 64
_HEAD = struct.Struct("Q")
_LISTENERS_AT = 8
_RECORD = struct.Struct("<IB")  # a record: its payload's length, its kind
_BUMP, _CREATED = 1, 2
#: A record larger than this (a group of thousands of edits) is written as
#: "everything changed" instead: readers must never wait for a huge one.
_MAX_RECORD = JOURNAL_BYTES // 8
#: Datagrams: the largest counters answer we expect (~20 routes x 1024
#: latencies as float32 plus counters), and how long /stats waits for them.
_MAX_DATAGRAM = 1 << 20
STATS_WAIT_S = 0.5
#: Journals are read before every lookup; an idle worker reads them this
#: often too, so it never falls a whole ring behind.
SYNC_EVERY_S = 0.5


@dataclass(frozen=True, slots=True)
class PeerNews:
    """What a worker's journal said since we last read it."""

    scopes: tuple[str, ...] = ()  # the scopes its write bumped (empty: none)
    span: Span = EVERYTHING
    created: tuple[str, ...] = ()  # ids of documents it created


class Journal:
    """A ring of records in a shared file: one process appends (``append``),
    others read what is new (``read``)."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _HEADER + JOURNAL_BYTES:
                os.ftruncate(fd, _HEADER + JOURNAL_BYTES)  # zeros: head 0
            self._map = mmap.mmap(fd, _HEADER + JOURNAL_BYTES)
        finally:
            os.close(fd)
        self.pos = self.head()  # a reader starts now: older news is not ours

    def head(self) -> int:
        return _HEAD.unpack_from(self._map, 0)[0]

    @property
    def listeners(self) -> int:
        """The owner's ``/stream`` subscribers (it writes this, others read it)."""
        return _HEAD.unpack_from(self._map, _LISTENERS_AT)[0]

    @listeners.setter
    def listeners(self, n: int) -> None:
        _HEAD.pack_into(self._map, _LISTENERS_AT, n)

    def append(self, kind: int, payload: bytes) -> None:
        record = _RECORD.pack(len(payload), kind) + payload
        head = self.head()
        at = head % JOURNAL_BYTES
        first = min(len(record), JOURNAL_BYTES - at)
        m = self._map
        m[_HEADER + at : _HEADER + at + first] = record[:first]
        if first < len(record):
            m[_HEADER : _HEADER + len(record) - first] = record[first:]
        # The record, then the head that makes it visible.
        _HEAD.pack_into(m, 0, head + len(record))

    def read(self) -> list[tuple[int, bytes]] | None:
        """The records appended since the last read; None if some were
        overwritten before we read them (the reader must assume anything)."""
        head = self.head()
        pos = self.pos
        if head == pos:
            return []
        self.pos = head
        if head < pos or head - pos > JOURNAL_BYTES:
            return None
        at = pos % JOURNAL_BYTES
        n = head - pos
        m = self._map
        if at + n <= JOURNAL_BYTES:
            data = m[_HEADER + at : _HEADER + at + n]
        else:
            data = (
                m[_HEADER + at : _HEADER + JOURNAL_BYTES]
                + m[_HEADER : _HEADER + at + n - JOURNAL_BYTES]
            )
        if self.head() - pos > JOURNAL_BYTES:
            return None  # lapped while we copied
        records = []
        i = 0
        while i < n:
            if i + _RECORD.size > n:
                return None
            size, kind = _RECORD.unpack_from(data, i)
            i += _RECORD.size
            if i + size > n:
                return None
            records.append((kind, data[i : i + size]))
            i += size
        return records

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._map.close()


def _bump_payload(scopes: Iterable[str], span: Span) -> bytes:
    return orjson.dumps({"s": list(scopes), "span": [repr(span.lo), repr(span.hi)]})


class Peers:
    """This worker's side of the directory: ``bumped``/``created`` append to
    our journal; ``sync`` (before a cache lookup) and a wake-up hand the
    others' news to ``on_news``; ``counters`` gathers theirs."""

    def __init__(
        self,
        directory: Path,
        index: int,
        count: int,
        counters: Callable[[], Any],
        on_news: Callable[[PeerNews | None], None] = lambda news: None,
    ) -> None:
        self.directory = Path(directory)
        self.index, self.count = index, count
        self.on_news = on_news  # None: news were lost (clear the cache)
        self.counters = counters
        self.others = [i for i in range(count) if i != index]
        self._journal: Journal | None = None
        self._theirs: list[Journal] = []
        self._sock: socket.socket | None = None
        self._buf = bytearray(_MAX_DATAGRAM)
        self._asks = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future[None], list[Any], list[int]]] = {}
        self._tick: asyncio.TimerHandle | None = None
        self._waking = False  # a wake-up of the others is scheduled
        self._socks = {i: str(self.directory / f"{i}.sock") for i in range(count)}
        self.lost = 0  # times news were lost (tests, logs)

    def _path(self, i: int, suffix: str) -> str:
        return str(self.directory / f"{i}.{suffix}")

    def open(self) -> None:
        """Map the journals and bind our socket (call on the event loop)."""
        self._journal = Journal(Path(self._path(self.index, "journal")))
        self._journal.listeners = 0  # our previous life's subscribers are gone
        self._theirs = [Journal(Path(self._path(i, "journal"))) for i in self.others]
        sock = self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(self.index, "sock"))  # our previous life's
        sock.bind(self._path(self.index, "sock"))
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_DATAGRAM + 4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * _MAX_DATAGRAM)
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._readable)
        self._tick = loop.call_later(SYNC_EVERY_S, self._ticked)

    def _ticked(self) -> None:
        self.sync()
        self._tick = asyncio.get_running_loop().call_later(SYNC_EVERY_S, self._ticked)

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for j in [self._journal, *self._theirs]:
            if j is not None:
                j.close()
        self._theirs = []

    # -- our news ---------------------------------------------------------------

    def bumped(self, scopes: Iterable[str], span: Span) -> None:
        """Our API write committed and bumped these scopes: tell the others
        (before its answer is sent)."""
        payload = _bump_payload(scopes, span)
        if len(payload) > _MAX_RECORD:
            payload = _bump_payload(["*"], EVERYTHING)
        self._append(_BUMP, payload)

    def created(self, ids: Iterable[str]) -> None:
        """Documents we created: for the others' ``/stream`` subscribers."""
        payload = orjson.dumps(list(ids))
        if len(payload) <= _MAX_RECORD:
            self._append(_CREATED, payload)
        # Those with subscribers are woken to read it now, once for all the
        # documents created in this turn of the loop (a datagram a POST was
        # ~14% of a worker's loop at c=100).
        if not self._waking and any(j.listeners for j in self._theirs):
            self._waking = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._waking = False
        for i, journal in zip(self.others, self._theirs, strict=True):
            if journal.listeners:
                self._send(i, b"")  # a full queue is awake already

    def listening(self, subscribers: int) -> None:
        """Our ``/stream`` subscriber count (the others wake us only if > 0)."""
        if self._journal is not None:
            self._journal.listeners = subscribers

    def _append(self, kind: int, payload: bytes) -> None:
        assert self._journal is not None, "Peers.open() first"
        self._journal.append(kind, payload)

    def _send(self, i: int, data: bytes) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto(data, self._socks[i])
        except (BlockingIOError, FileNotFoundError, ConnectionRefusedError):
            return False  # awake already / not running (its cache is empty)
        except OSError as e:
            log.debug("peer %d: %s", i, e)
            return False
        return True

    # -- their news -------------------------------------------------------------

    def sync(self) -> None:
        """Apply whatever the other workers' journals say that is new: one
        shared-memory read each when nothing is (call before a lookup)."""
        for journal in self._theirs:
            if journal.head() != journal.pos:
                self._news(journal)

    def _news(self, journal: Journal) -> None:
        records = journal.read()
        if records is None:
            self.lost += 1
            log.warning("this API worker fell a whole journal behind another's writes; "
                        "its cache is cleared")  # fmt: skip
            self.on_news(None)
            return
        # Created ids matter only to our /stream subscribers: with none,
        # they are not even parsed (a POST flat out is thousands a second).
        wanted = self._journal is not None and self._journal.listeners > 0
        for kind, payload in records:
            if kind == _CREATED and not wanted:
                continue
            try:
                body = orjson.loads(payload)
                if kind == _BUMP:
                    lo, hi = body["span"]
                    scopes = tuple(str(s) for s in body["s"])
                    if "*" in scopes:
                        self.on_news(None)
                    else:
                        self.on_news(PeerNews(scopes, Span(float(lo), float(hi))))
                elif kind == _CREATED:
                    self.on_news(PeerNews(created=tuple(str(i) for i in body)))
            except (ValueError, KeyError, TypeError):
                self.on_news(None)  # unreadable: assume anything changed

    def _readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                n = sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("peer socket: %s", e)
                break
            if n:
                self._message(bytes(memoryview(self._buf)[:n]))
        self.sync()

    def _message(self, data: bytes) -> None:
        try:
            msg = pickle.loads(data)  # only our own processes reach the directory
            if msg[0] == "ask":
                _, ask, sender = msg
                reply = pickle.dumps(("counters", ask, self.counters()), protocol=5)
                if len(reply) <= _MAX_DATAGRAM and not self._send(sender, reply):
                    log.debug("counters for worker %d not sent", sender)
            elif msg[0] == "counters":
                _, ask, counters = msg
                waiting = self._waiting.get(ask)
                if waiting is not None:
                    future, got, asked = waiting
                    got.append(counters)
                    if len(got) >= asked[0] and not future.done():
                        future.set_result(None)
        except Exception as e:  # a bad message must not stop the reader
            log.debug("peer message ignored: %r", e)

    async def gather(self, wait_s: float = STATS_WAIT_S) -> list[Any]:
        """The other workers' ``counters()``, those that answer within ``wait_s``."""
        if not self.others:
            return []
        ask = next(self._asks)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        got: list[Any] = []
        asked = [len(self.others)]  # lowered to those the question reached
        self._waiting[ask] = (future, got, asked)
        try:
            question = pickle.dumps(("ask", ask, self.index))
            asked[0] = sum(self._send(i, question) for i in self.others)
            if asked[0] and len(got) < asked[0]:  # not waiting for a worker that is down
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), wait_s)
        finally:
            del self._waiting[ask]
        return list(got)


def attach(peers: Peers, deps: Deps) -> None:
    """Wire ``peers`` into this worker: its cache reads the others' journals
    before each lookup and applies their bumps; documents they created go
    to this worker's ``/stream`` subscribers (read from the store)."""
    cache = deps.cache
    local: LocalCache | None = (
        cache if isinstance(cache, LocalCache) else getattr(cache, "near", None)
    )

    async def publish(ids: tuple[str, ...]) -> None:
        docs = []
        for doc_id in ids:
            try:
                doc = await deps.store_call(deps.store.get, doc_id)
            except Exception as e:  # the store failed: the stream goes on without it
                log.warning("stream: reading a document another worker created failed: %s", e)
                continue
            if doc is not None:
                docs.append(doc)
        deps.hub.publish(docs)

    def on_news(news: PeerNews | None) -> None:
        if news is None:
            if local is not None:
                local.clear()
            return
        if news.scopes and local is not None:
            local.bump_scopes(news.scopes, news.span)
        if news.created and deps.hub.subscribers:
            deps.spawn(publish(news.created))

    peers.on_news = on_news
    deps.hub.on_count = peers.listening
    if local is not None:
        local.before_lookup = peers.sync
    deps.peers = peers
