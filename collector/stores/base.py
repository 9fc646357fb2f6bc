"""The store contract: what the collector's pipeline and HTTP API need from a database.

Stores are blocking objects (sqlite3, pymongo); the collector calls them from
worker threads, never from the trio loop. Every store passes the same contract
suite (tests/test_store_contract.py) and behaves the same behind the HTTP API.

Documents leave a store as plain dicts in the API's shape, with ``ts`` as epoch
seconds (the API formats it as RFC 3339):
``{"id", "session", "seq", "kind", "name", "host", "tags", "ts", "value"?, "data"?}``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import orjson

from deltawire.protocol import Document, DocumentFactory, Hello
from deltawire.retry import Backoff

if TYPE_CHECKING:  # rollup.py imports this module
    from .rollup import RollupData, RollupRequest
from .catalog import Catalog

__all__ = [
    "API_SESSION",
    "STORE_BACKOFF",
    "AggQuery",
    "Catalog",
    "Change",
    "Changed",
    "Create",
    "Delete",
    "DocFilter",
    "DocumentRows",
    "Edit",
    "EditResult",
    "FoundPage",
    "MetricQuery",
    "Refused",
    "Replace",
    "Row",
    "SessionQuery",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "apply_each",
    "decode_cursor",
    "encode_cursor",
]

#: Points created through ``POST /metrics`` belong to this pseudo-session, so
#: (session, seq) identifies every document, streamed or not; their seq is a
#: fresh integer, one above the session's highest.
API_SESSION = "api"

#: A document as its store commits it, made by ``Store.encode_row``: plain
#: strings and numbers that pickle fast, in a layout only the store reads.
Row = tuple[Any, ...]


class StoreError(Exception):
    """A store failed in a way that retrying will not fix (bad data, bad query)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is locked: retry later, nothing was lost."""


class Refused(StoreError):
    """A ``Change``'s ``decide`` said no; ``reason`` is the caller's own error
    (the API's 403 or 422), given back to it as this edit's result."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(str(reason))
        self.reason = reason


#: How callers retry a store that is unavailable: soon at first (a lock is
#: often gone within milliseconds), then at most every 2 s until it is back.
STORE_BACKOFF = Backoff(0.05, 2.0)


@dataclass(frozen=True, slots=True)
class Create:
    """An API edit: store a new point (``Store.create``'s fields)."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replace:
    """An API edit: set fields of document ``doc_id`` (``Store.replace``)."""

    doc_id: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    """An API edit: delete document ``doc_id`` (``Store.delete``)."""

    doc_id: str


@dataclass(frozen=True, slots=True)
class Change:
    """An API edit that reads document ``doc_id`` first, in the same
    transaction: ``decide(old)`` gives the fields to set (as ``Replace``) or
    None to delete it, or raises ``Refused``. The API's PUT/PATCH/DELETE need
    the old document (its owner, what a merge patch applies to, what cached
    answers to drop): one thread hop and one transaction instead of a read
    and then a write, and no other edit between the two. ``decide`` runs
    inside the write transaction: it must be quick and touch no store."""

    doc_id: str
    decide: Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Changed:
    """What a ``Change`` came to: the document before, and after (None: deleted)."""

    old: dict[str, Any]
    new: dict[str, Any] | None


#: One API write, as ``Store.apply_edits`` takes them.
Edit = Create | Replace | Delete | Change
#: What an edit came to: the created or replaced document (None: no such
#: document), whether a delete found its document, a ``Change``'s
#: ``Changed``, or the StoreError that refused this edit alone.
EditResult = dict[str, Any] | bool | None | Changed | StoreError


@dataclass(frozen=True, slots=True)
class DocFilter:
    """Which documents: every given filter must match (``/metrics``, ``/stream``)."""

    session: str | None = None
    name: str | None = None
    kind: str | None = None
    host: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricQuery(DocFilter):
    """Filters of ``GET /metrics``: every given filter must match."""

    ts_from: float | None = None  # inclusive
    ts_to: float | None = None  # exclusive
    limit: int = 100
    descending: bool = False
    after: tuple[float, str] | None = None  # (ts, id) of the last item of the previous page


@dataclass(frozen=True, slots=True)
class FoundPage:
    """A page of ``find``, its documents already written as the API's JSON
    (``Store.find_page``, or the API's own ``doc_out`` where a store has none)."""

    items: bytes  # the documents' JSON objects, comma-joined
    count: int  # how many documents ``items`` holds
    #: (ts, id) of the page's last document when more documents match after
    #: it (the next page's cursor), else None.
    next: tuple[float, str] | None
    #: The ts of the first document past the page when the query read one
    #: (it asks for one more than it shows), else None: a write later than
    #: that in the page's order cannot change the page (the cache's span).
    beyond: float | None


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """Filters of ``GET /sessions``: every given filter must match. Ordered by
    last seen, newest first, then session; ``after`` is the (last_seen,
    session) of the previous page's last item."""

    host: str | None = None
    tags: tuple[str, ...] = ()
    connected: bool | None = None
    ended: bool | None = None
    exit_code: int | None = None
    seen_from: float | None = None  # last_seen inclusive
    seen_to: float | None = None  # last_seen exclusive
    limit: int = 100
    after: tuple[float, str] | None = None


@dataclass(frozen=True, slots=True)
class AggQuery:
    """An aggregation for ``/query``: ``func`` of ``path`` over matching documents.

    ``path`` is ``"value"`` or a dotted path into ``data`` (``"cpu.percent"``);
    with ``func="count"`` it may be None. ``group_by`` is a document field
    (``name``, ``host``, ``session``, ``kind``) or None for one row. Rows are
    ``{"group": <value or None>, "value": <number>, "count": <int>}`` ordered by
    value (descending unless ``ascending``), at most ``limit`` rows.
    """

    func: Literal["count", "avg", "min", "max", "sum"]
    path: str | None = None
    where: MetricQuery = field(default_factory=MetricQuery)
    group_by: str | None = None
    limit: int = 100
    ascending: bool = False


@runtime_checkable
class Store(Protocol):
    uri: str
    #: True where a read is CPU work in this process (SQLite), False where it
    #: mostly waits on the network (MongoDB): how many reader threads pay.
    reads_use_cpu: bool

    # -- lifecycle --------------------------------------------------------
    def open(self) -> None:
        """Connect, create or migrate the schema and indexes. Idempotent."""

    def close(self) -> None: ...

    def ping(self) -> bool:
        """True if the store answers now (readiness)."""

    # -- ingest -------------------------------------------------------------
    def write_batch(self, docs: Sequence[Document]) -> None:
        """Durably store documents, idempotent on (session, seq).

        Documents already stored are skipped silently. A session's documents
        must come in seq order, across batches too (PROTOCOL.md: frames are
        stored in order), so a store may skip any seq at or below the
        session's ``acked`` as a resend. A bye document
        (kind ``session``) also marks its session ended with its exit code.
        Updates the sessions' ``last_seen``. Raises ``StoreUnavailable`` when
        the store is down or locked: then nothing or only a prefix of whole
        documents was stored, and retrying the same batch is safe.
        """

    @property
    def encode_row(self) -> DocumentFactory:
        """One document (its fields) as the ``Row`` that ``write_rows``
        commits: no I/O, and it may run in another process than the commit.
        Raises ``BadFrame`` for a document the store cannot represent."""

    def write_rows(self, rows: Sequence[Row]) -> None:
        """``write_batch`` for rows made by ``encode_row``."""

    def start_checkpointer(self) -> None:
        """Called by the process that does the bulk of the writing: move
        housekeeping off the commit path where the store has some to move."""

    def fold_idle(self) -> bool:
        """One short slice of background work while no batch waits (the writer
        calls it between batches); True if there may be more to do."""

    def acked(self, session: str) -> int:
        """Highest stored seq of ``session``; -1 if none."""

    def session_connected(self, hello: Hello, ts: float) -> None:
        """Upsert the session: host, agent, tags, first/last seen, connected."""

    def session_disconnected(self, session: str, ts: float) -> None: ...

    # -- API ----------------------------------------------------------------
    def find(self, q: MetricQuery) -> list[dict[str, Any]]:
        """Up to ``q.limit`` documents, ordered by (ts, id) per ``q.descending``."""

    def find_page(
        self, q: MetricQuery, paths: Sequence[tuple[str, ...]] | None = None
    ) -> FoundPage | None:
        """``find(q)``'s documents as ``views.doc_out(doc, paths)`` writes
        them (no byte budget); None where the store cannot write them exactly
        as that does, for the caller to render ``find``'s. A fast path: None
        is always a right answer."""

    def get(self, doc_id: str) -> dict[str, Any] | None: ...

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Store an API-created point: ``name``, ``value``, ``tags``, ``ts``, ``data``.

        Assigns ``session=API_SESSION``, a fresh ``seq`` and ``kind="metric"``.
        """

    def replace(self, doc_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Replace ``name``, ``value``, ``tags``, ``ts``, ``data``; None if absent."""

    def delete(self, doc_id: str) -> bool: ...

    def apply_edits(self, edits: Sequence[Edit]) -> list[EditResult]:
        """Each edit in order, as ``create``/``replace``/``delete`` would, one
        result per edit. A StoreError of one edit is its result and leaves the
        others alone; if the call raises, none was applied. A store may commit
        them together (SQLite: one transaction, one fsync)."""

    def aggregate(self, q: AggQuery) -> list[dict[str, Any]]: ...

    def sessions(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Sessions, most recently seen first: ``session, host, agent, tags,
        first_seen, last_seen, connected, ended, exit_code``."""

    def find_sessions(self, q: SessionQuery) -> list[dict[str, Any]]:
        """Up to ``q.limit`` sessions matching ``q``, as ``sessions`` orders them."""

    def get_session(self, session: str) -> dict[str, Any] | None: ...

    def since(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Streamed documents stored after the one with id ``after``, in the
        order they were stored (API points excluded: the API publishes its
        own), at most ``limit``; and the id to pass next time. ``after=None``
        returns no documents, only the newest id: where a live tail starts."""

    # -- rollup tiers (rollup.py; read by deltawire.collector.aggregate) ----------
    #: Tier widths in seconds the store keeps, coarsest first; () for none.
    rollup_tiers: tuple[int, ...]
    #: Those whose buckets carry a quantile sketch (percentiles read only these).
    rollup_sketch_tiers: tuple[int, ...]

    def rollup_read(self, req: RollupRequest) -> RollupData:
        """Tier buckets and raw points (the unfolded tail too) for ``req``,
        from one snapshot."""

    def catalog(self) -> Catalog:
        """The names seen, for the /query vocabulary; kept at ingest, cheap to read."""


class DocumentRows:
    """``encode_row``, ``write_rows``, ``start_checkpointer`` and ``fold_idle`` for a store
    whose rows are simply the documents' fields (its driver encodes dicts
    itself) and that has no housekeeping to move."""

    @staticmethod
    def encode_row(*fields: Any) -> Row:
        return fields  # the Document's fields, in order

    def write_rows(self, rows: Sequence[Row]) -> None:
        self.write_batch([Document(*row) for row in rows])

    def write_batch(self, docs: Sequence[Document]) -> None:
        raise NotImplementedError

    def apply_edits(self, edits: Sequence[Edit]) -> list[EditResult]:
        return apply_each(self, edits)  # type: ignore[arg-type]

    def start_checkpointer(self) -> None:
        pass

    def fold_idle(self) -> bool:
        return False  # no background work


def encode_cursor(ts: float, doc_id: str) -> str:
    """An opaque, URL-safe page cursor for keyset pagination on (ts, id)."""
    return base64.urlsafe_b64encode(orjson.dumps([ts, doc_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of ``encode_cursor``; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, doc_id = orjson.loads(raw)
    except Exception:
        raise ValueError("not a cursor from a previous page") from None
    if type(ts) not in (int, float) or type(doc_id) is not str:
        raise ValueError("not a cursor from a previous page")
    return float(ts), doc_id


def _apply_one(store: Store, edit: Edit) -> EditResult:
    match edit:
        case Create(fields):
            return store.create(fields)
        case Replace(doc_id, fields):
            return store.replace(doc_id, fields)
        case Delete(doc_id):
            return store.delete(doc_id)
        case Change(doc_id, decide):
            # Not atomic here (each call commits alone), as before Change.
            old = store.get(doc_id)
            if old is None:
                return None
            to_set = decide(old)
            if to_set is None:
                return Changed(old, None) if store.delete(doc_id) else None
            new = store.replace(doc_id, to_set)
            return None if new is None else Changed(old, new)
    raise TypeError(f"not an edit: {edit!r}")


def apply_each(store: Store, edits: Sequence[Edit]) -> list[EditResult]:
    """``apply_edits`` one edit (and commit) at a time, for a store with no
    cheaper way (MongoDB: each write is its own durable operation anyway)."""
    results: list[EditResult] = []
    for edit in edits:
        try:
            results.append(_apply_one(store, edit))
        except StoreError as e:  # each edit stands alone here, so does its failure
            results.append(e)
    return results
