"""The MongoDB store: ``mongodb://`` or ``mongodb+srv://`` URIs, through pymongo.

Layout, in the database ``telemetry_${APP_ENV}``:

``docs``
    One document per stored frame or API point: ``session, seq, kind, name,
    host, tags, ts, data?, value?`` and MongoDB's ``_id`` (an ObjectId, shown
    to the API as its 24-digit hex string).
``sessions``
    One document per session, ``_id`` = the session name, with what
    ``sessions()`` lists and ``acked``, the session's resume point (below).
``counters``
    ``{_id: "api_seq", next}``: the seqs of points created through the API.
``roll_60``, ``roll_3600``
    The rollup tiers: one document per (series, minute or hour), kept by the
    writer as it inserts documents (see ``mongo_rollup.py``).

Timestamps: ``ts`` (and the sessions' times) are BSON dates, which have
millisecond precision, as PROTOCOL.md allows ("millisecond precision or
better"). A date is what a TTL index (``RETENTION_DAYS``) expires on and what
MongoDB's tools show as a time; keeping the exact float next to it would cost
a field and an index key per document for sub-millisecond digits no
consumer needs. A ts is stored as the nearest millisecond and read back as
``ms / 1000``, so a millisecond-precise ts round-trips exactly, and time
filters and page cursors compare in the same milliseconds as what was stored.

Durability: writes use ``w="majority", j=True`` and ``retryWrites=True``: an
ack sent to an agent means the document is journaled on a majority of a
replica set and survives a failover (on a standalone server, "majority" is
that server). Options written in the URI win over these defaults and over
the pool and timeout settings, so an operator can trade durability for speed
explicitly (e.g. ``?w=1``) without a code change.

Resume point: ``insert_many(ordered=False)`` may store any subset of a batch
before failing, and the collector may crash before it retries. The highest
stored seq of a session could then sit above a hole, and an agent resuming
from it would never resend the hole. So ``acked`` is not ``max(seq)`` of the
documents: it is a high-water mark in ``sessions``, raised (``$max``) only
after a whole batch has been stored. After such a crash it lags behind what
is stored; the agent then resends documents that are already there, which
are skipped (idempotence on the unique ``(session, seq)`` index).

Threads: one MongoClient per store; it is thread-safe and pools its own
connections, so the collector's worker threads call the store concurrently.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import parse_qsl

from bson.codec_options import CodecOptions, DatetimeConversion, TypeDecoder, TypeRegistry
from bson.datetime_ms import DatetimeMS
from bson.errors import InvalidDocument
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, MongoClient, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from deltawire.formats import redact_uri
from deltawire.protocol import Document, Hello

from ..point import PointError, check_fields
from . import mongo_rollup
from .base import (
    API_SESSION,
    AggQuery,
    DocumentRows,
    FoundPage,
    MetricQuery,
    SessionQuery,
    StoreError,
    StoreUnavailable,
)
from .catalog import Catalog, StreamTracker, first_sample_paths, sample_paths
from .mongo_stream import StreamReader
from .rollup import SKETCH_TIERS, TIERS, RollupData, RollupRequest

__all__ = ["MongoStore"]

log = logging.getLogger("deltawire.collector.stores.mongo")

_DUPLICATE_KEY: Final = 11000

#: Server error codes that mean "not now" rather than "never": the server or
#: the replica set is shutting down, electing, overloaded or out of time.
#: Anything else from the server (bad query, bad document) is a StoreError.
_TRANSIENT_CODES: Final = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        24,  # LockTimeout
        46,  # LockBusy
        50,  # MaxTimeMSExpired
        64,  # WriteConcernFailed (wtimeout)
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        133,  # FailedToSatisfyReadPreference
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        202,  # NetworkInterfaceExceededTimeLimit
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
        14031,  # OutOfDiskSpace: frees up, like SQLite's SQLITE_FULL
    }
)
#: Labels the server or driver puts on errors worth retrying.
_TRANSIENT_LABELS: Final = ("RetryableWriteError", "TransientTransactionError")

_GROUP_FIELDS: Final = frozenset({"name", "host", "session", "kind"})
_AGG_FUNCS: Final = frozenset({"count", "avg", "min", "max", "sum"})

# Canonical ObjectId spelling only (what ``str(ObjectId)`` gives): upper-case
# hex would be a second id for the same document.
_OBJECT_ID_RE: Final = re.compile(r"[0-9a-f]{24}")
# telemetry_<app_env> must be a valid database name on every MongoDB version
# (at most 64 bytes, none of /\. "$ or NUL).
_APP_ENV_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,54}")

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_API_SEQ_COUNTER: Final = "api_seq"
#: Buckets fold_idle compacts a call (three round trips each): the writer looks
#: for a waiting batch between calls, so a batch waits for one slice, not for
#: every bucket (FerretDB scans a tier per bucket: compacting them all at once
#: held ingest back for tens of seconds after an outage).
_IDLE_COMPACT_SLICE: Final = 16
#: How often the writer drops tier buckets past their retention (fold_idle).
_PRUNE_PERIOD_S: Final = 600.0
_TTL_INDEX: Final = "ts_ttl"
#: Catalog entries a process remembers as upserted; bounded like the SQLite
#: store's names (a stream of ever-new event names must not grow it forever).
_CATALOG_KNOWN_MAX: Final = 100_000

# Every listing index ends with (ts, _id): find() sorts and pages on exactly
# that key, so the index yields documents in order and a page stops after
# ``limit`` index entries instead of sorting every match in memory.
_DOC_INDEXES: Final = (
    IndexModel([("session", ASCENDING), ("seq", ASCENDING)], name="session_seq", unique=True),
    IndexModel([("ts", ASCENDING), ("_id", ASCENDING)], name="ts_id"),
    IndexModel([("name", ASCENDING), ("ts", ASCENDING), ("_id", ASCENDING)], name="name_ts_id"),
    IndexModel([("tags", ASCENDING), ("ts", ASCENDING), ("_id", ASCENDING)], name="tags_ts_id"),
    IndexModel(
        [("session", ASCENDING), ("ts", ASCENDING), ("_id", ASCENDING)], name="session_ts_id"
    ),
    IndexModel([("kind", ASCENDING), ("ts", ASCENDING), ("_id", ASCENDING)], name="kind_ts_id"),
    IndexModel([("host", ASCENDING), ("ts", ASCENDING), ("_id", ASCENDING)], name="host_ts_id"),
)
_SESSION_INDEXES: Final = (
    IndexModel([("last_seen", DESCENDING), ("_id", ASCENDING)], name="last_seen_id"),
)


class _Int64AsInt(TypeDecoder):
    """Decode BSON int64 as a plain int: data must round-trip with its exact
    JSON types, and ``Int64`` is a subclass, not ``int`` itself."""

    bson_type = Int64

    def transform_bson(self, value: Any) -> int:
        return int(value)


# Dates decode as DatetimeMS (an int of milliseconds): no detour through
# datetime, whose microseconds and time zones could shift a value.
_CODEC_OPTIONS: Final[CodecOptions[dict[str, Any]]] = CodecOptions(
    tz_aware=True,
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    type_registry=TypeRegistry([_Int64AsInt()]),
)


# -- conversions -------------------------------------------------------------------


def _finite(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise StoreError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _ms(ts: float, what: str = "ts") -> DatetimeMS:
    """The BSON date of epoch seconds ``ts``: the nearest millisecond."""
    ms = round(_finite(ts, what) * 1000)
    if not _INT64_MIN <= ms <= _INT64_MAX:
        raise StoreError(f"{what} {ts!r} is out of the range of a date")
    return DatetimeMS(ms)


def _ms_bound(ts: float, what: str) -> DatetimeMS:
    """The smallest stored millisecond whose ts (ms / 1000) is >= ``ts``.

    ``ts >= x`` becomes ``date >= bound(x)`` and ``ts < x`` becomes
    ``date < bound(x)``: a filter then means what it says about the ts values
    find() returns, whatever float ``x`` is.
    """
    x = _finite(ts, what)
    if x * 1000 <= _INT64_MIN:
        return DatetimeMS(_INT64_MIN)
    if x * 1000 >= _INT64_MAX:
        return DatetimeMS(_INT64_MAX)
    ms = math.ceil(x * 1000)
    # x * 1000 is rounded, so the ceiling may be one off either way.
    while ms / 1000 < x:
        ms += 1
    while (ms - 1) / 1000 >= x:
        ms -= 1
    return DatetimeMS(max(_INT64_MIN, min(_INT64_MAX, ms)))


def _seconds(value: Any) -> float | None:
    """Epoch seconds of a stored date (DatetimeMS), None for a missing one."""
    return None if value is None else int(value) / 1000


def _object_id(doc_id: Any) -> ObjectId | None:
    if type(doc_id) is not str or not _OBJECT_ID_RE.fullmatch(doc_id):
        return None
    return ObjectId(doc_id)


def _int64_or_none(value: Any) -> int | None:
    # bool is an int subclass, but true is no exit code.
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None


def _doc_dict(raw: Mapping[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": str(raw["_id"]),
        "session": raw["session"],
        "seq": raw["seq"],
        "kind": raw["kind"],
        "name": raw["name"],
        "host": raw.get("host"),
        "tags": list(raw.get("tags") or ()),
        "ts": int(raw["ts"]) / 1000,
    }
    if raw.get("value") is not None:
        doc["value"] = raw["value"]
    if raw.get("data") is not None:
        doc["data"] = raw["data"]
    return doc


def _session_dict(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "session": raw["_id"],
        "host": raw.get("host"),
        "agent": raw.get("agent"),
        "tags": list(raw.get("tags") or ()),
        "first_seen": _seconds(raw.get("first_seen")),
        "last_seen": _seconds(raw.get("last_seen")),
        "connected": bool(raw.get("connected")),
        "ended": _seconds(raw.get("ended")),
        "exit_code": raw.get("exit_code"),
        "signal": raw.get("signal"),
    }


def _data_field(path: str) -> str:
    """``cpu.percent`` -> ``data.cpu.percent``, refusing what MongoDB would
    read as something else: ``$`` starts operators and variables, an empty
    segment is no key, and BSON keys cannot hold NUL."""
    parts = path.split(".")
    for part in parts:
        if not part or "$" in part or "\0" in part:
            raise StoreError(f"bad path {path!r}: keys must be non-empty and without '$' or NUL")
    return "data." + path


def _filters(q: MetricQuery) -> list[dict[str, Any]]:
    """The MetricQuery filters as a list of clauses to be ANDed."""
    clauses: list[dict[str, Any]] = []
    for field in ("session", "name", "kind", "host"):
        value = getattr(q, field)
        if value is not None:
            clauses.append({field: value})
    if q.tags:
        clauses.append({"tags": {"$all": list(dict.fromkeys(q.tags))}})
    ts_range = _ms_range(q.ts_from, q.ts_to, "ts_from", "ts_to")
    if ts_range:
        clauses.append({"ts": ts_range})
    return clauses


def _ms_range(lo: float | None, hi: float | None, lo_what: str, hi_what: str) -> dict[str, Any]:
    """``{"$gte": lo, "$lt": hi}`` as BSON dates, for the bounds given."""
    out: dict[str, Any] = {}
    if lo is not None:
        out["$gte"] = _ms_bound(lo, lo_what)
    if hi is not None:
        out["$lt"] = _ms_bound(hi, hi_what)
    return out


def _and(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


#: What the rollup tiers (mongo_rollup.py) build their queries with.
_ROLLUP_SQL: Final = mongo_rollup.MongoSql(_filters, _and, _data_field)


def _api_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """($set, $unset) for the API-writable fields present in ``fields``,
    validated by the one point model."""
    try:
        checked = check_fields(fields)
    except PointError as exc:
        raise StoreError(str(exc)) from None
    sets: dict[str, Any] = {}
    unsets: list[str] = []
    for field, value in checked.items():
        if value is None:
            unsets.append(field)
        elif field == "value":
            # A float like the SQLite store's REAL column, so both stores
            # answer the same JSON.
            sets[field] = float(value)
        elif field == "ts":
            sets[field] = _ms(value)
        else:
            sets[field] = value
    return sets, unsets


# -- errors ------------------------------------------------------------------------


def _is_transient(exc: PyMongoError) -> bool:
    if isinstance(exc, (ConnectionFailure, ExecutionTimeout, WTimeoutError)):
        # ConnectionFailure covers AutoReconnect, NotPrimaryError,
        # NetworkTimeout, ServerSelectionTimeoutError, WaitQueueTimeoutError.
        return True
    if isinstance(exc, InvalidOperation):
        return True  # the client was closed under us: "not open"
    if any(exc.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            return True
        return any(e.get("code") in _TRANSIENT_CODES for e in details.get("writeErrors", ()))
    return isinstance(exc, OperationFailure) and exc.code in _TRANSIENT_CODES


def _describe(exc: PyMongoError) -> str:
    """A short message: pymongo's own text of a bulk error quotes every failed
    document in full, which would put a whole batch of data into the logs."""
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        write_errors = details.get("writeErrors") or []
        concern_errors = details.get("writeConcernErrors") or []
        parts = []
        if write_errors:
            first = write_errors[0]
            parts.append(
                f"{len(write_errors)} write error(s), first: code {first.get('code')}:"
                f" {first.get('errmsg')}"
            )
        if concern_errors:
            first = concern_errors[0]
            parts.append(f"write concern error: code {first.get('code')}: {first.get('errmsg')}")
        return "; ".join(parts) or "bulk write failed"
    if isinstance(exc, OperationFailure):
        errmsg = (exc.details or {}).get("errmsg") or str(exc)
        return f"code {exc.code}: {errmsg}"
    return str(exc)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn pymongo and BSON errors into the store's two kinds of failure."""
    try:
        yield
    except PyMongoError as exc:
        if _is_transient(exc):
            raise StoreUnavailable(f"mongodb {action}: {_describe(exc)}") from exc
        raise StoreError(f"mongodb {action}: {_describe(exc)}") from exc
    except (InvalidDocument, OverflowError) as exc:
        # Raised while encoding, before anything is sent: e.g. an integer
        # beyond 64 bits, which JSON allows and BSON does not.
        raise StoreError(f"mongodb {action}: cannot store as BSON: {exc}") from exc


def _only_duplicates(exc: BulkWriteError) -> bool:
    details = exc.details or {}
    errors = details.get("writeErrors") or []
    return (
        bool(errors)
        and not details.get("writeConcernErrors")
        and all(e.get("code") == _DUPLICATE_KEY for e in errors)
    )


# -- the store ---------------------------------------------------------------------


def _create_missing_indexes(coll: Collection[dict[str, Any]], models: Sequence[IndexModel]) -> None:
    """Create only the indexes that are not there yet, by name.

    Every collector opens the store at start-up; asking for indexes that exist
    is a no-op on MongoDB but still a round of catalogue work per index, so
    look first (one listIndexes) and create what is missing.
    """
    existing = {ix.get("name") for ix in coll.list_indexes()}
    missing = [m for m in models if m.document["name"] not in existing]
    if missing:
        coll.create_indexes(missing)


class MongoStore(DocumentRows):
    """The Store protocol on MongoDB (see the module docstring)."""

    reads_use_cpu = False  # a read mostly waits for the server

    def __init__(
        self,
        uri: str,
        *,
        app_env: str = "local",
        retention_days: int = 0,
        max_pool_size: int = 32,
        timeout_ms: int = 5000,
        rollup_retention_days: Sequence[float] = (30, 400),
        rollups: bool = True,
        tier_reads: bool | None = None,
    ) -> None:
        """``rollup_retention_days``: days the 1-minute and the 1-hour tier
        keep (0: forever), never less than ``retention_days`` keeps the raw
        documents. ``rollups=False`` keeps no tiers (aggregations scan raw
        documents): what the store bench measures the tiers' cost against.
        ``tier_reads``: whether aggregations read the tiers; None (default):
        yes on MongoDB, no on FerretDB, which uses no index for them and
        scans a whole tier per read (slower than the raw documents when the
        streams are sparse); tests of the tiers set it."""
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("not a MongoDB URI (expected mongodb://… or mongodb+srv://…)")
        if type(app_env) is not str or not _APP_ENV_RE.fullmatch(app_env):
            raise ValueError(f"app_env must be 1-54 characters of A-Z a-z 0-9 _ -, got {app_env!r}")
        for what, n, least in (
            ("retention_days", retention_days, 0),
            ("max_pool_size", max_pool_size, 1),
            ("timeout_ms", timeout_ms, 1),
        ):
            if type(n) is not int or n < least:
                raise ValueError(f"{what} must be an integer >= {least}, got {n!r}")
        self.uri = uri
        self.database_name = f"telemetry_{app_env}"
        self.retention_days = retention_days
        self.max_pool_size = max_pool_size
        self.timeout_ms = timeout_ms
        days = tuple(rollup_retention_days)
        if len(days) != len(TIERS) or any(
            type(d) not in (int, float) or not math.isfinite(d) or d < 0 for d in days
        ):
            raise ValueError(
                f"rollup_retention_days must be {len(TIERS)} numbers >= 0, got {days!r}"
            )
        # Tiers outlive the raw documents (Netdata's way); 0 (forever) wins.
        self.rollup_retention: dict[int, float] = {
            tier: 0 if 0 in (d, retention_days) else max(d, retention_days) * 86400.0
            for tier, d in zip(sorted(TIERS), days, strict=True)
        }
        #: Tier widths the engine may plan with: none when tiers are off,
        #: or not read (decided at ``open``).
        self.rollup_tiers: tuple[int, ...] = ()
        self.rollup_sketch_tiers: tuple[int, ...] = SKETCH_TIERS
        self._keep_tiers = rollups
        self._tier_reads = tier_reads
        self._tiers: mongo_rollup.Tiers | None = None
        self._tiers_lock = threading.Lock()  # Tiers writes are not thread-safe
        self._pruned = 0.0  # monotonic time of the last prune (0: never)
        self._lock = threading.Lock()
        self._stream = StreamReader()
        self._client: MongoClient[dict[str, Any]] | None = None
        self._db: Database[dict[str, Any]] | None = None
        # Catalog entries (what, scope, term) this process has upserted, and
        # the sessions whose data paths it took (see catalog.py).
        self._catalog_known: set[tuple[str, str, str]] = set()
        self._catalog_lock = threading.Lock()
        self._path_sessions = StreamTracker()

    def __repr__(self) -> str:
        return f"MongoStore({redact_uri(self.uri)!r}, database={self.database_name!r})"

    # -- connections ----------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        """Our defaults for every option the URI does not set itself."""
        query = self.uri.partition("?")[2]
        # Option names in a MongoDB URI are case-insensitive.
        in_uri = {key.lower() for key, _ in parse_qsl(query, keep_blank_values=True)}
        defaults: dict[str, Any] = {
            "maxPoolSize": self.max_pool_size,
            "serverSelectionTimeoutMS": self.timeout_ms,
            "connectTimeoutMS": self.timeout_ms,
            # Also bounds a write waiting for a majority that is not there
            # (no wtimeout needed): the collector then retries, nothing lost.
            "socketTimeoutMS": self.timeout_ms,
            "retryWrites": True,
            "w": "majority",
            "journal": True,
            "appname": "deltawire-collector",
        }
        if "j" in in_uri:  # the URI spelling of "journal"
            in_uri.add("journal")
        return {k: v for k, v in defaults.items() if k.lower() not in in_uri}

    def _database(self) -> Database[dict[str, Any]]:
        db = self._db
        if db is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return db

    def _docs(self) -> Collection[dict[str, Any]]:
        return self._database()["docs"]

    def _sessions(self) -> Collection[dict[str, Any]]:
        return self._database()["sessions"]

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            with _translated("connect"):
                client: MongoClient[dict[str, Any]] = MongoClient(
                    self.uri, document_class=dict, **self._client_options()
                )
            try:
                db = client.get_database(self.database_name, codec_options=_CODEC_OPTIONS)
                with _translated("create indexes"):
                    _create_missing_indexes(db["docs"], _DOC_INDEXES)
                    _create_missing_indexes(db["sessions"], _SESSION_INDEXES)
                    self._ensure_ttl(db["docs"])
                    tiers = mongo_rollup.Tiers(db, self.timeout_ms, _ROLLUP_SQL)
                    if self._keep_tiers:
                        tiers.create_indexes(_create_missing_indexes)
                        reads = self._tier_reads
                        if reads is None:
                            info = client.admin.command("buildInfo")
                            reads = not ("ferretdbVersion" in info or "ferretdbFeatures" in info)
                        self.rollup_tiers = TIERS if reads else ()
            except BaseException:
                client.close()
                raise
            self._client, self._db, self._tiers = client, db, tiers

    def _ensure_ttl(self, docs: Collection[dict[str, Any]]) -> None:
        """Make the TTL index on ts match retention_days (none when 0).

        TTL indexes are single-field, hence an index of its own next to
        (ts, _id). Changing RETENTION_DAYS changes the index in place
        (collMod); setting it to 0 drops the index, so documents are kept
        as the setting says.
        """
        existing = next((ix for ix in docs.list_indexes() if ix.get("name") == _TTL_INDEX), None)
        if self.retention_days == 0:
            if existing is not None:
                log.warning("RETENTION_DAYS is 0: dropping the TTL index, documents are kept",
                            extra={"database": self.database_name})  # fmt: skip
                try:
                    docs.drop_index(_TTL_INDEX)
                except OperationFailure as exc:
                    if exc.code != 27:  # IndexNotFound: another collector was first
                        raise
            return
        seconds = self.retention_days * 86400
        if existing is None:
            try:
                docs.create_index([("ts", ASCENDING)], name=_TTL_INDEX, expireAfterSeconds=seconds)
            except OperationFailure as exc:
                if _is_transient(exc):
                    raise
                raise StoreError(
                    f"RETENTION_DAYS={self.retention_days} needs a TTL index on docs.ts, and"
                    f" the server refused it ({_describe(exc)}). Set RETENTION_DAYS=0 on"
                    " servers without TTL indexes (e.g. FerretDB)."
                ) from exc
        elif existing.get("expireAfterSeconds") != seconds:
            log.warning("RETENTION_DAYS changed: updating the TTL index",
                        extra={"database": self.database_name, "was_seconds":
                               existing.get("expireAfterSeconds"), "seconds": seconds})  # fmt: skip
            docs.database.command(
                "collMod", docs.name, index={"name": _TTL_INDEX, "expireAfterSeconds": seconds}
            )

    def close(self) -> None:
        with self._lock:
            client, self._client, self._db = self._client, None, None
            self._tiers = None
        if client is not None:
            client.close()

    def ping(self) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    # -- ingest ---------------------------------------------------------------

    def write_batch(self, docs: Sequence[Document]) -> None:
        if not docs:
            return
        rows: list[dict[str, Any]] = []
        # session -> its update of the sessions collection
        per_session: dict[str, _SessionTouch] = {}
        for doc in docs:
            try:
                ts = _ms(doc.ts)
            except StoreError as exc:
                raise StoreError(f"document {doc.session}/{doc.seq}: {exc}") from None
            row: dict[str, Any] = {
                "session": doc.session,
                "seq": doc.seq,
                "kind": doc.kind,
                "name": doc.name,
                "host": doc.host,
                "tags": list(doc.tags),
                "ts": ts,
            }
            if doc.data is not None:
                row["data"] = doc.data
            rows.append(row)
            touch = per_session.get(doc.session)
            if touch is None:
                per_session[doc.session] = touch = _SessionTouch(doc, ts)
            else:
                touch.add(doc, ts)
        docs_coll = self._docs()
        duplicates: list[int] = []
        try:
            with _translated("write_batch"):
                # Unordered: one duplicate must not stop the rest, and the
                # server may spread the inserts. Fresh dicts every call, so
                # the _ids pymongo adds never leak into a retry.
                docs_coll.insert_many(rows, ordered=False)
        except StoreError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, BulkWriteError) and _only_duplicates(cause)):
                raise
            # Only (session, seq) already stored: skipped, as the contract says.
            duplicates = [e["index"] for e in (cause.details or {}).get("writeErrors", ())]
        if self._keep_tiers:
            self._fold(rows, duplicates)
        # Only now is every document of the batch stored, and in the tiers:
        # the resume points may move (see the module docstring).
        self._touch_sessions([t.update() for t in per_session.values()], "write_batch")
        self._record_catalog(docs)

    def _fold(self, rows: list[dict[str, Any]], duplicates: list[int]) -> None:
        """Add the documents this batch inserted to the tiers. Duplicates
        at or below their session's ``acked`` were counted when first
        stored; those above it may be from an attempt that failed before
        its tiers were written, so their buckets are recomputed."""
        fresh, stale = rows, []
        if duplicates:
            skipped = set(duplicates)
            fresh = [row for i, row in enumerate(rows) if i not in skipped]
            dup_rows = [rows[i] for i in skipped]
            with _translated("write_batch"):
                acked = {
                    raw["_id"]: -1 if raw.get("acked") is None else int(raw["acked"])
                    for raw in self._sessions().find(
                        {"_id": {"$in": list({r["session"] for r in dup_rows})}}, {"acked": 1}
                    )
                }
            stale = [r for r in dup_rows if r["seq"] > acked.get(r["session"], -1)]
        with self._tiers_lock, _translated("write_batch tiers"):
            self._rollups().add(fresh, stale)

    def _rollups(self) -> mongo_rollup.Tiers:
        tiers = self._tiers
        if tiers is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return tiers

    def _touch_tiers(self, docs: Iterable[Mapping[str, Any] | None]) -> None:
        """Recompute the buckets of an API-edited document's versions."""
        versions = [d for d in docs if d is not None]
        if self._keep_tiers and versions:
            with self._tiers_lock, _translated("tiers"):
                self._rollups().touch(versions)

    def _record_catalog(self, docs: Sequence[Document]) -> None:
        """Names, and the data paths of new sessions' and streams' first samples."""
        with self._lock:
            sessions = self._path_sessions.unseen({d.session for d in docs})
            known = self._catalog_known
        entries: set[tuple[str, str, str]] = {("name", str(d.kind), d.name) for d in docs}
        streams = {n for w, k, n in entries if k in ("sample", "event") and (w, k, n) not in known}
        if sessions or streams:
            rows = ((d.session, d.kind, d.name, d.data) for d in docs)
            entries |= {("path", n, p) for n, p in first_sample_paths(rows, sessions, streams)}
        self._add_catalog(entries)
        with self._lock:
            self._path_sessions.remember(sessions)

    def _add_catalog(self, entries: set[tuple[str, str, str]]) -> None:
        """Insert catalog entries not known to be there. Inserts, not upserts:
        concurrent upserts of one _id trip FerretDB, while a duplicate insert
        is a plain duplicate-key error, which means "already there"."""
        with self._catalog_lock:  # one writer per process: no racing itself
            new = entries - self._catalog_known
            if not new:
                return
            rows = [{"_id": "\x1f".join(e), "what": e[0], "scope": e[1], "term": e[2]} for e in new]
            try:
                with _translated("catalog"):
                    self._database()["catalog"].insert_many(rows, ordered=False)
            except StoreError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, BulkWriteError) and _only_duplicates(cause)):
                    raise
            if len(self._catalog_known) + len(new) > _CATALOG_KNOWN_MAX:
                self._catalog_known.clear()
            self._catalog_known |= new

    def _touch_sessions(self, updates: list[UpdateOne], action: str) -> None:
        sessions = self._sessions()
        # Two upserts of one new session racing each other can make one fail
        # with a duplicate _id; run again, the document then exists.
        for attempt in range(3):
            try:
                with _translated(action):
                    sessions.bulk_write(updates, ordered=False)
                return
            except StoreError as exc:
                cause = exc.__cause__
                if attempt == 2 or not (
                    isinstance(cause, BulkWriteError) and _only_duplicates(cause)
                ):
                    raise

    def acked(self, session: str) -> int:
        with _translated("acked"):
            if session == API_SESSION:
                # API points are stored one insert at a time, so there is
                # no hole below their highest seq.
                top = self._docs().find_one(
                    {"session": API_SESSION}, {"seq": 1}, sort=[("seq", DESCENDING)]
                )
                return -1 if top is None else int(top["seq"])
            row = self._sessions().find_one({"_id": session}, {"acked": 1})
        if row is None or row.get("acked") is None:
            return -1
        return int(row["acked"])

    def session_connected(self, hello: Hello, ts: float) -> None:
        when = _ms(ts)
        # A reconnect keeps first_seen and ``ended``: a client whose ack for
        # its bye was lost reconnects to learn it was stored, and that must
        # not reopen a finished session.
        update = UpdateOne(
            {"_id": hello.session},
            {
                "$set": {
                    "host": hello.host,
                    "agent": hello.agent,
                    "tags": list(hello.tags),
                    "connected": True,
                },
                "$max": {"last_seen": when},
                "$setOnInsert": {
                    "first_seen": when,
                    "ended": None,
                    "exit_code": None,
                    "signal": None,
                },
            },
            upsert=True,
        )
        self._touch_sessions([update], "session_connected")

    def session_disconnected(self, session: str, ts: float) -> None:
        when = _ms(ts)
        with _translated("session_disconnected"):
            # No upsert: a session never announced stays unknown.
            self._sessions().update_one(
                {"_id": session}, {"$set": {"connected": False}, "$max": {"last_seen": when}}
            )

    # -- API ------------------------------------------------------------------

    def find_page(
        self, q: MetricQuery, paths: Sequence[tuple[str, ...]] | None = None
    ) -> FoundPage | None:
        return None  # the API renders find's documents (MongoDB writes no such JSON)

    def find(self, q: MetricQuery) -> list[dict[str, Any]]:
        if q.limit < 1:
            raise StoreError(f"limit must be >= 1, got {q.limit}")
        clauses = _filters(q)
        if q.after is not None:
            after_ts, after_id = q.after
            oid = _object_id(after_id)
            if oid is None:
                raise StoreError(f"cursor id {after_id!r} is not a document id of this store")
            at = _ms(after_ts, "cursor ts")
            # (ts, _id) > (at, oid), written so that the ts bound is a plain
            # range the (…, ts, _id) indexes can seek to.
            if q.descending:
                clauses.append({"ts": {"$lte": at}})
                clauses.append({"$or": [{"ts": {"$lt": at}}, {"_id": {"$lt": oid}}]})
            else:
                clauses.append({"ts": {"$gte": at}})
                clauses.append({"$or": [{"ts": {"$gt": at}}, {"_id": {"$gt": oid}}]})
        direction = DESCENDING if q.descending else ASCENDING
        with _translated("find"):
            cursor = (
                self._docs()
                .find(_and(clauses))
                .sort([("ts", direction), ("_id", direction)])
                .limit(q.limit)
                .max_time_ms(self.timeout_ms)
            )
            return [_doc_dict(raw) for raw in cursor]

    def get(self, doc_id: str) -> dict[str, Any] | None:
        oid = _object_id(doc_id)
        if oid is None:
            return None
        with _translated("get"):
            raw = self._docs().find_one({"_id": oid})
        return None if raw is None else _doc_dict(raw)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        sets, _unsets = _api_fields(doc)
        if "name" not in sets:
            raise StoreError("a metric point needs a name")
        row: dict[str, Any] = {
            "session": API_SESSION,
            "kind": "metric",
            "name": sets["name"],
            "host": sets.get("host"),
            "tags": sets.get("tags", []),
            "ts": sets["ts"] if "ts" in sets else _ms(time.time()),
        }
        for field in ("value", "data"):
            if field in sets:
                row[field] = sets[field]
        docs = self._docs()
        counters = self._database()["counters"]
        for attempt in range(3):
            with _translated("create"):
                # An atomic counter: concurrent creates (other threads, other
                # collector processes) never take the same seq.
                counter = counters.find_one_and_update(
                    {"_id": _API_SEQ_COUNTER},
                    {"$inc": {"next": 1}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            if counter is None:  # cannot happen with upsert + AFTER; keeps the types honest
                raise StoreError("mongodb create: the seq counter was not returned")
            row["seq"] = int(counter["next"]) - 1  # the first point gets seq 0
            row.pop("_id", None)
            try:
                with _translated("create"):
                    docs.insert_one(row)
                break
            except StoreError as exc:
                if attempt == 2 or not isinstance(exc.__cause__, DuplicateKeyError):
                    raise
                # The counter is behind the documents (restored from a
                # backup, or dropped): move it past them and take another.
                with _translated("create"):
                    top = docs.find_one(
                        {"session": API_SESSION}, {"seq": 1}, sort=[("seq", DESCENDING)]
                    )
                    if top is not None:
                        counters.update_one(
                            {"_id": _API_SEQ_COUNTER},
                            {"$max": {"next": int(top["seq"]) + 1}},
                            upsert=True,
                        )
        if self._keep_tiers:
            # A new document: its partials are simply added (insert-only).
            with self._tiers_lock, _translated("tiers"):
                self._rollups().add([row])
        self._add_catalog(_point_entries(row))
        return _doc_dict(row)

    def replace(self, doc_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set the given fields (any of name, value, tags, ts, data); others stay."""
        sets, unsets = _api_fields(fields)
        oid = _object_id(doc_id)
        if oid is None:
            return None
        update: dict[str, Any] = {}
        if sets:
            update["$set"] = sets
        if unsets:
            update["$unset"] = dict.fromkeys(unsets, "")
        with _translated("replace"):
            if not update:
                raw = self._docs().find_one({"_id": oid})
            else:
                old = self._docs().find_one_and_update(
                    {"_id": oid}, update, return_document=ReturnDocument.BEFORE
                )
                raw = None if old is None else self._docs().find_one({"_id": oid})
                self._touch_tiers([old, raw])
        if raw is not None:
            self._add_catalog(_point_entries(raw))
        return None if raw is None else _doc_dict(raw)

    def delete(self, doc_id: str) -> bool:
        oid = _object_id(doc_id)
        if oid is None:
            return False
        with _translated("delete"):
            old = self._docs().find_one_and_delete({"_id": oid})
        self._touch_tiers([old])
        return old is not None

    def aggregate(self, q: AggQuery) -> list[dict[str, Any]]:
        if q.func not in _AGG_FUNCS:
            raise StoreError(f"unknown aggregate {q.func!r}; known: {sorted(_AGG_FUNCS)}")
        if q.group_by is not None and q.group_by not in _GROUP_FIELDS:
            raise StoreError(f"cannot group by {q.group_by!r}; known: {sorted(_GROUP_FIELDS)}")
        if q.limit < 1:
            raise StoreError(f"limit must be >= 1, got {q.limit}")
        clauses = _filters(q.where)
        field: str | None = None
        if q.path is None:
            if q.func != "count":
                raise StoreError(f"{q.func} needs a path ('value' or a path into data)")
        elif q.path == "value":
            field = "value"  # always a number where present (see _api_fields)
            clauses.append({"value": {"$type": "number"}})
        else:
            field = _data_field(q.path)
            # Only numbers count: true is no 1, and $min/$max would order
            # strings and arrays among the numbers. $type alone also matches
            # an array holding a number (and a path through an array of
            # objects); $isNumber checks the value the group will see. The
            # $type clause stays as a cheap prefilter.
            clauses.append({field: {"$type": "number"}})
            clauses.append({"$expr": {"$isNumber": "$" + field}})
        group: dict[str, Any] = {"_id": None if q.group_by is None else "$" + q.group_by}
        if q.func == "count":
            # value and count are the same number: one accumulator.
            group["count"] = {"$sum": 1}
            sort_key = "count"
        else:
            group["value"] = {"$" + q.func: "$" + str(field)}
            group["count"] = {"$sum": 1}
            sort_key = "value"
        direction = ASCENDING if q.ascending else DESCENDING
        pipeline: list[dict[str, Any]] = [
            {"$match": _and(clauses)},
            {"$group": group},
            {"$sort": {sort_key: direction, "_id": ASCENDING}},
            {"$limit": q.limit},
        ]
        with _translated("aggregate"):
            rows = list(
                self._docs().aggregate(pipeline, allowDiskUse=True, maxTimeMS=self.timeout_ms)
            )
        return [
            {
                "group": row["_id"],
                "value": row["count"] if q.func == "count" else row["value"],
                "count": row["count"],
            }
            for row in rows
        ]

    # -- rollup tiers ----------------------------------------------------------

    def rollup_read(self, req: RollupRequest) -> RollupData:
        with _translated("rollup_read"):
            return self._rollups().read(self._docs(), req)

    def fold_rollups(self, max_docs: int = 0) -> int:
        """Compact the partial buckets this process wrote (the writer keeps
        the tiers as it writes; the SQLite store's method, for tests and
        benches that call both); how many buckets."""
        if not self._keep_tiers:
            return 0
        with _translated("tiers compaction"):
            return self._rollups().compact()

    def fold_idle(self) -> bool:
        """Between batches: compact the tiers' partial buckets (see
        mongo_rollup.py), and drop those past their retention at most every
        ``_PRUNE_PERIOD_S``. ``_IDLE_COMPACT_SLICE`` buckets a call: True
        while more are left."""
        if not self._keep_tiers:
            return False
        now = time.monotonic()
        with _translated("tiers compaction"):
            more = self._rollups().compact_some(_IDLE_COMPACT_SLICE)
            if not self._pruned or now - self._pruned >= _PRUNE_PERIOD_S:
                self._pruned = now
                self._rollups().prune(self.rollup_retention)
        return more

    def sessions(self, limit: int = 1000) -> list[dict[str, Any]]:
        if limit < 1:
            raise StoreError(f"limit must be >= 1, got {limit}")
        with _translated("sessions"):
            cursor = (
                self._sessions()
                .find({}, {"acked": 0})
                .sort([("last_seen", DESCENDING), ("_id", ASCENDING)])
                .limit(limit)
                .max_time_ms(self.timeout_ms)
            )
            return [_session_dict(raw) for raw in cursor]

    def find_sessions(self, q: SessionQuery) -> list[dict[str, Any]]:
        clauses: list[dict[str, Any]] = []
        for field, value in (("host", q.host), ("exit_code", q.exit_code)):
            if value is not None:
                clauses.append({field: value})
        if q.connected is not None:
            clauses.append({"connected": q.connected})
        if q.ended is not None:
            clauses.append({"ended": {"$ne": None}} if q.ended else {"ended": None})
        if q.tags:
            clauses.append({"tags": {"$all": list(dict.fromkeys(q.tags))}})
        seen = _ms_range(q.seen_from, q.seen_to, "from", "to")
        if seen:
            clauses.append({"last_seen": seen})
        if q.after is not None:
            at = _ms_bound(q.after[0], "after")
            clauses.append(
                {"$or": [{"last_seen": {"$lt": at}}, {"last_seen": at, "_id": {"$gt": q.after[1]}}]}
            )
        with _translated("sessions"):
            cursor = (
                self._sessions()
                .find(_and(clauses), {"acked": 0})
                .sort([("last_seen", DESCENDING), ("_id", ASCENDING)])
                .limit(q.limit)
                .max_time_ms(self.timeout_ms)
            )
            return [_session_dict(raw) for raw in cursor]

    def get_session(self, session: str) -> dict[str, Any] | None:
        with _translated("sessions"):
            raw = self._sessions().find_one({"_id": session}, {"acked": 0})
        return None if raw is None else _session_dict(raw)

    def since(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        # _id order is not store order with several writers: see mongo_stream.py.
        oid = None
        if after is not None:
            oid = _object_id(after)
            if oid is None:
                raise StoreError(f"{after!r} is not a document id of this store")
        with _translated("since"):
            docs, cursor = self._stream.since(self._docs(), oid, limit, self.timeout_ms, _doc_dict)
        return docs, str(cursor) if cursor is not None else "0" * 24

    def catalog(self) -> Catalog:
        """The names seen (see catalog.py), from the small catalog collection."""
        names: dict[str, set[str]] = {}
        paths: dict[str, set[str]] = {}
        tags: set[str] = set()
        with _translated("catalog"):
            for e in self._database()["catalog"].find({}, {"_id": 0}).max_time_ms(self.timeout_ms):
                what, scope, term = e.get("what"), str(e.get("scope")), str(e.get("term"))
                if what == "name":
                    names.setdefault(scope, set()).add(term)
                elif what == "path":
                    paths.setdefault(scope, set()).add(term)
                elif what == "tag":
                    tags.add(term)
            for name in names.get("sample", set()) - set(paths):
                # Written before the catalog had paths: learn them from its latest sample.
                raw = self._docs().find_one(
                    {"name": name, "kind": "sample"}, {"data": 1}, sort=[("ts", DESCENDING)]
                )
                if raw is not None and isinstance(raw.get("data"), dict):
                    paths[name] = set(sample_paths(raw["data"]))
            hosts: set[str] = set()
            sessions: set[str] = set()
            cursor = self._sessions().find({}, {"host": 1, "tags": 1})
            for raw in cursor.max_time_ms(self.timeout_ms):
                sessions.add(str(raw["_id"]))
                if raw.get("host"):
                    hosts.add(raw["host"])
                tags.update(t for t in raw.get("tags") or () if isinstance(t, str))
        return Catalog.of(names, paths, hosts, sessions, tags)


def _point_entries(row: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """Catalog entries of an API point: its name and tags."""
    entries = {("name", str(row.get("kind") or "metric"), str(row["name"]))}
    entries |= {("tag", "", t) for t in row.get("tags") or () if isinstance(t, str)}
    return entries


class _SessionTouch:
    """What one batch does to one session's document in ``sessions``."""

    __slots__ = ("acked", "end", "first", "host", "last", "session", "tags")

    def __init__(self, doc: Document, ts: DatetimeMS) -> None:
        self.session = doc.session
        self.acked = doc.seq
        self.first = self.last = ts
        # A session first heard of in a batch (no hello seen, e.g. a replayed
        # capture) is listed with the host and tags of its documents.
        self.host = doc.host
        self.tags = list(doc.tags)
        self.end: dict[str, Any] | None = None
        self._bye(doc, ts)

    def add(self, doc: Document, ts: DatetimeMS) -> None:
        self.acked = max(self.acked, doc.seq)
        if int(ts) < int(self.first):
            self.first = ts
        if int(ts) > int(self.last):
            self.last = ts
        self._bye(doc, ts)

    def _bye(self, doc: Document, ts: DatetimeMS) -> None:
        if doc.kind != "session":
            return
        data = doc.data or {}
        signal = data.get("signal")
        self.end = {
            "ended": ts,
            "exit_code": _int64_or_none(data.get("exit_code")),
            "signal": signal if type(signal) is str else None,
        }

    def update(self) -> UpdateOne:
        on_insert: dict[str, Any] = {
            "host": self.host,
            "agent": None,
            "tags": self.tags,
            "first_seen": self.first,
            "connected": False,
        }
        update: dict[str, Any] = {"$max": {"acked": self.acked, "last_seen": self.last}}
        if self.end is not None:
            update["$set"] = self.end
        else:
            on_insert.update(ended=None, exit_code=None, signal=None)
        update["$setOnInsert"] = on_insert
        return UpdateOne({"_id": self.session}, update, upsert=True)
