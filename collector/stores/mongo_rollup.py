"""Rollup tiers of the MongoDB store (see ``rollup.py`` for the model).

Collections ``roll_60`` and ``roll_3600`` hold *partial buckets*, ClickHouse's
way: mergeable states of one series over part of one bucket. A partial has
the series' fields (``session, kind, name, host, tags, path``), ``b`` (the
bucket start, epoch seconds), ``n``, ``s`` (sum), ``mn``, ``mx``, ``f`` and
``l`` (first and last: ``{t: ms, o: document _id, v: value}``), ``inc`` (the
counter increase over its points) and, in the hour tier only, ``sk``: the
DDSketch bins (``{p: {key: count}, n: {key: count}, z: count}``).

Writing is insert-only. The writer's ``write_batch`` inserts the documents,
then one partial per (series, tier, bucket) of the documents it actually
inserted (duplicates skipped by idempotence are never counted), with one
``insert_many`` per tier. The engine merges a bucket's partials at query time
(``Partial.merge``; partials that overlap in time make ``rate`` fall back to
raw documents). Compaction keeps partials few: once a bucket has
``_COMPACT_AT`` partials, or whenever the writer is idle, they are merged in
Python into one, inserted with ``of`` (the _ids it replaces, which readers
then skip), and the replaced ones deleted; partials that overlap in time
(late documents) are rebuilt from the raw documents instead.

Why not ``$inc``/``$min``/``$max`` upserts into one document per bucket:
every update statement on FerretDB 1.24 (the test server) scans its
collection (20-80 ms each at 2,000 buckets), and an ``update`` command of
100 statements ran past a 20 s timeout; inserts of 2,000 documents take
~0.5 s. A counter increase across two pieces also needs the bucket's last
value, which FerretDB cannot read inside an update (no pipeline updates).

Recomputing (an API create, update or delete; a batch retried after a
failure) deletes every partial of the touched (stream, tier, bucket) and
inserts them again from the raw documents: idempotent, so a batch that failed
halfway is repaired by its retry, which finds its documents already stored
above the session's ``acked`` mark and recomputes their buckets instead of
counting them again. There is no unfolded tail: a batch's partials are stored
before it is acknowledged, so a reader at most misses the batch being written.

Raw points come from ``find`` with the filters of ``GET /metrics`` and a
projection of the one field asked for; values are checked here (numbers only,
no bools), as ``leaves`` does for the tiers.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bson.datetime_ms import DatetimeMS
from bson.objectid import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.collection import Collection
from pymongo.database import Database

from . import rollup
from .base import MetricQuery
from .rollup import (
    DOCS,
    HOUR,
    MINUTE,
    RAW,
    SKETCH_TIERS,
    TIERS,
    Bucket,
    Partial,
    RawPoint,
    SeriesKey,
    Sketch,
    StreamRow,
    stream_columns,
)

__all__ = ["INDEXES", "MongoSql", "Tiers", "collection_name"]

_NUMBERS = (int, float)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
#: A bucket is compacted once it has this many partials (one per batch that
#: touched it): a query then reads at most this many per bucket, and a
#: compaction merges this many at once.
_COMPACT_AT: Final = 16
#: Partials per insert_many: ~0.5 s on FerretDB, so each call stays far
#: below the store's socket timeout.
_INSERT_SLICE: Final = 2000
#: Buckets with partials a writer tracks for compaction (one per series and
#: tier being written; thousands). Past this, all are compacted at once.
_TRACKED_MAX: Final = 100_000

#: Every tier collection's indexes: a query reads one path's partials over a
#: range of starts, often of one name or session (compaction reads one
#: stream's); retention deletes by start.
INDEXES: Final = (
    IndexModel([("path", ASCENDING), ("b", ASCENDING)], name="path_b"),
    IndexModel([("name", ASCENDING), ("path", ASCENDING), ("b", ASCENDING)], name="name_path_b"),
    IndexModel(
        [("session", ASCENDING), ("path", ASCENDING), ("b", ASCENDING)], name="session_path_b"
    ),
    IndexModel([("b", ASCENDING)], name="b"),
)

#: (session, kind, name, host, tags): one stream of documents.
Stream = tuple[str, str, str, "str | None", tuple[str, ...]]
#: (stream, tier, bucket start): what a recompute rebuilds, every path at once.
Unit = tuple[Stream, int, int]
#: (stream, path, tier, bucket start): one bucket of one series.
BucketKey = tuple[Stream, str, int, int]


@dataclass(frozen=True, slots=True)
class MongoSql:
    """mongo.py's filter and path builders (handed in: importing that module
    would make an import cycle)."""

    #: the MetricQuery filters as a list of clauses to AND
    filters: Callable[[MetricQuery], list[dict[str, Any]]]
    #: ANDs clauses into one filter
    and_: Callable[[list[dict[str, Any]]], dict[str, Any]]
    #: a dotted data path as a document field (``data.cpu.percent``)
    data_field: Callable[[str], str]


def collection_name(tier: int) -> str:
    return f"roll_{tier}"


def _within(f: rollup.Filters, lo: float | None, hi: float | None) -> MetricQuery:
    """``f``'s filters over ``[lo, hi)``."""
    return MetricQuery(f.session, f.name, f.kind, f.host, f.tags, ts_from=lo, ts_to=hi)


def _value_at(doc: dict[str, Any], path: str) -> Any:
    if path == DOCS:
        return 1
    if path == "value":
        return doc.get("value")
    node: Any = doc.get("data")
    for key in path.split("."):
        if type(node) is not dict:
            return None
        node = node.get(key)
    return node


def _series_cache(path: str) -> Callable[[Mapping[str, Any]], SeriesKey]:
    """SeriesKey of a document or partial, one object per series."""
    cache: dict[tuple[Any, ...], SeriesKey] = {}

    def series(doc: Mapping[str, Any]) -> SeriesKey:
        skey = (doc["session"], doc["kind"], doc["name"], doc.get("host"),
                tuple(doc.get("tags") or ()))  # fmt: skip
        found = cache.get(skey)
        if found is None:
            cache[skey] = found = SeriesKey(*skey, path)
        return found

    return series


# -- reading ------------------------------------------------------------------


def _read_raw(
    docs: Collection[dict[str, Any]],
    req: rollup.RollupRequest,
    timeout_ms: int,
    sql: MongoSql,
    lo: float | None,
    hi: float | None,
) -> list[RawPoint]:
    """The raw points of ``req``'s series in ``[lo, hi)``."""
    projection: dict[str, Any] = {f: 1 for f in ("session", "kind", "name", "host", "tags", "ts")}
    if req.path == "value":
        projection["value"] = 1
    elif req.path != DOCS:
        projection[sql.data_field(req.path)] = 1
    series = _series_cache(req.path)
    points: list[RawPoint] = []
    where = sql.and_(sql.filters(_within(req.where, lo, hi)))
    for doc in docs.find(where, projection, max_time_ms=timeout_ms):
        value = _value_at(doc, req.path)
        if type(value) in _NUMBERS:
            points.append(RawPoint(series(doc), int(doc["ts"]) / 1000, str(doc["_id"]), value))
    return points


def _partial(doc: Mapping[str, Any]) -> Partial:
    f, last = doc["f"], doc["l"]
    return Partial(doc["n"], doc["s"], doc["mn"], doc["mx"], f["t"] / 1000, f["v"],
                   last["t"] / 1000, last["v"], doc["inc"])  # fmt: skip


def _current(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Partials minus those a compacted one replaced (``of``) but that are
    not deleted yet."""
    replaced = {oid for doc in docs for oid in doc.get("of") or ()}
    return [doc for doc in docs if doc["_id"] not in replaced] if replaced else docs


def _read_buckets(
    coll: Collection[dict[str, Any]],
    req: rollup.RollupRequest,
    tier: int,
    lo: float | None,
    hi: float | None,
    timeout_ms: int,
    sql: MongoSql,
) -> list[Bucket]:
    clauses = sql.filters(_within(req.where, None, None))  # the same field names
    clauses.append({"path": req.path})
    span: dict[str, Any] = {}
    if lo is not None:
        span["$gte"] = lo
    if hi is not None:
        span["$lt"] = hi
    if span:
        clauses.append({"b": span})
    projection: dict[str, Any] = {"path": 0}
    if not req.sketches:
        projection["sk"] = 0
    series = _series_cache(req.path)
    found = list(coll.find(sql.and_(clauses), projection, max_time_ms=timeout_ms))
    return [
        Bucket(
            series(doc),
            tier,
            doc["b"],
            _partial(doc),
            _sketch_of(doc.get("sk") or {}) if req.sketches else None,
        )
        for doc in _current(found)
    ]


def _sketch_of(sk: Mapping[str, Any]) -> Sketch:
    return Sketch(
        {int(k): int(v) for k, v in (sk.get("p") or {}).items()},
        {int(k): int(v) for k, v in (sk.get("n") or {}).items()},
        int(sk.get("z") or 0),
    )


def _sketch_doc(sketch: Sketch) -> dict[str, Any]:
    return {"p": {str(k): n for k, n in sketch.pos.items()},
            "n": {str(k): n for k, n in sketch.neg.items()}, "z": sketch.zero}  # fmt: skip


# -- writing ------------------------------------------------------------------


class _At(float):
    """A document's ts in seconds that also carries its milliseconds and _id
    through ``stream_columns`` (which keeps the ts objects it is given), so a
    partial's first and last say which document they are."""

    ms: int
    oid: ObjectId


def _at(ms: int, oid: ObjectId) -> _At:
    at = _At(ms / 1000)
    at.ms, at.oid = ms, oid
    return at


def _point(at: Any, value: Any) -> dict[str, Any]:
    """A first/last field: when, which document, what value."""
    return {"t": at.ms, "o": at.oid, "v": value}


def _stream_of(doc: Mapping[str, Any]) -> Stream:
    return (doc["session"], doc["kind"], doc["name"], doc.get("host"), tuple(doc.get("tags") or ()))


def _stream_filter(stream: Stream) -> dict[str, Any]:
    """The documents (or partials) of exactly ``stream``."""
    session, kind, name, host, tags = stream
    return {"session": session, "kind": kind, "name": name, "host": host, "tags": list(tags)}


def _rows_by_stream(docs: Iterable[Mapping[str, Any]]) -> dict[Stream, list[StreamRow]]:
    out: dict[Stream, list[StreamRow]] = defaultdict(list)
    for doc in docs:
        data = doc.get("data")
        oid = doc["_id"]
        out[_stream_of(doc)].append(
            (_at(int(doc["ts"]), oid), oid, doc.get("value"), data if type(data) is dict else None)
        )
    return out


def _bson_number(x: float) -> float:
    """A sum of integers as BSON can hold it: past 64 bits, a double."""
    return x if type(x) is float or _INT64_MIN <= x <= _INT64_MAX else float(x)


def _partial_doc(
    key: BucketKey,
    part: Partial,
    sketch: Sketch | None,
    ends: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A partial's document; ``ends``: its first and last, if ``part``'s
    fts and lts are plain floats (not ``_At``)."""
    stream, path, _tier, start = key
    first, last = ends or (_point(part.fts, part.fv), _point(part.lts, part.lv))
    doc = _stream_filter(stream)
    doc.update(path=path, b=start, n=part.n, s=_bson_number(part.sum), mn=part.min, mx=part.max,
               f=first, l=last, inc=_bson_number(part.inc or 0))  # fmt: skip
    if sketch is not None:
        doc["sk"] = _sketch_doc(sketch)
    return doc


def _pieces(rows_by_stream: Mapping[Stream, list[StreamRow]], tiers: Sequence[int] = TIERS
            ) -> dict[BucketKey, tuple[Partial, Sketch | None]]:  # fmt: skip
    """The partial (and hour sketch) of each bucket the rows fall into: minute
    partials, and hour partials merged from them in time order (minutes do
    not overlap, so ``inc`` stays exact)."""
    out: dict[BucketKey, tuple[Partial, Sketch | None]] = {}
    for stream, rows in rows_by_stream.items():
        minutes = sorted(stream_columns(rows, MINUTE).items(), key=lambda item: item[0][1])
        for (path, start), (tss, vals) in minutes:
            part = Partial.of(tss, vals)
            if MINUTE in tiers:
                out[(stream, path, MINUTE, start)] = (part, None)
            if HOUR not in tiers:
                continue
            key = (stream, path, HOUR, start // HOUR * HOUR)
            hour = out.get(key)
            if hour is None:
                out[key] = hour = (part.copy(), Sketch())
            else:
                hour[0].merge(part)
            assert hour[1] is not None
            hour[1].add_values(vals)
    return out


def _units(doc: Mapping[str, Any]) -> list[Unit]:
    """The buckets (every path) a stored document falls into."""
    stream = _stream_of(doc)
    ts = int(doc["ts"]) / 1000
    return [(stream, tier, int(ts // tier) * tier) for tier in TIERS]


class Tiers:
    """The tiers of one database, as one process writes and reads them.

    Writes are not thread-safe: the collector has one writer per process,
    and the store runs API edits under a lock."""

    def __init__(self, db: Database[dict[str, Any]], timeout_ms: int, sql: MongoSql) -> None:
        self._db = db
        self._timeout_ms = timeout_ms
        self._sql = sql
        #: partials this process inserted per bucket since its last compaction
        self._parts: dict[BucketKey, int] = {}

    def _coll(self, tier: int) -> Collection[dict[str, Any]]:
        return self._db[collection_name(tier)]

    def create_indexes(
        self, create: Callable[[Collection[dict[str, Any]], Sequence[IndexModel]], None]
    ) -> None:
        for tier in TIERS:
            create(self._coll(tier), INDEXES)

    # -- reads --

    def read(
        self, docs: Collection[dict[str, Any]], req: rollup.RollupRequest
    ) -> rollup.RollupData:
        """Partials for the tier segments of ``req``, raw points for the others."""
        buckets: list[Bucket] = []
        points: list[RawPoint] = []
        for seg in req.segments:
            if seg.tier == RAW:
                points += _read_raw(docs, req, self._timeout_ms, self._sql, seg.lo, seg.hi)
            elif seg.tier in TIERS:
                coll = self._coll(seg.tier)
                buckets += _read_buckets(
                    coll, req, seg.tier, seg.lo, seg.hi, self._timeout_ms, self._sql
                )
            else:
                raise ValueError(f"no {seg.tier}s tier in the MongoDB store")
        return rollup.RollupData(buckets, points)

    # -- writes --

    def add(
        self, fresh: Sequence[Mapping[str, Any]], stale: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """Insert the partials of ``fresh`` documents (just inserted, with
        their ``_id``); recompute the buckets of ``stale`` ones (stored by an
        earlier attempt that may not have reached the tiers)."""
        redo = {u for doc in stale for u in _units(doc)}
        pieces = _pieces(_rows_by_stream(fresh))
        for tier in TIERS:
            keys = [k for k in pieces if k[2] == tier and (k[0], tier, k[3]) not in redo]
            if keys:
                self._insert(tier, [_partial_doc(k, *pieces[k]) for k in keys])
                self._track(keys)
        self.recompute(redo)
        due = [k for k, n in self._parts.items() if n >= _COMPACT_AT]
        if due:
            self.compact(due)

    def _insert(self, tier: int, partials: list[dict[str, Any]]) -> None:
        """Insert in slices that each end well within the socket timeout
        (FerretDB takes seconds for tens of thousands of documents)."""
        coll = self._coll(tier)
        for i in range(0, len(partials), _INSERT_SLICE):
            coll.insert_many(partials[i : i + _INSERT_SLICE], ordered=False)

    def _track(self, keys: Iterable[BucketKey]) -> None:
        parts = self._parts
        for key in keys:
            parts[key] = parts.get(key, 0) + 1
        if len(parts) > _TRACKED_MAX:
            self.compact(list(parts))

    def compact(self, keys: Iterable[BucketKey] | None = None) -> int:
        """Merge the partials of ``keys`` (default: every bucket this process
        wrote more than one partial to since) into one each; how many buckets."""
        if keys is None:
            keys = [k for k, n in self._parts.items() if n > 1]
        redo: set[Unit] = set()
        done = 0
        for stream, path, tier, start in keys:
            self._parts.pop((stream, path, tier, start), None)
            coll = self._coll(tier)
            found = list(coll.find({**_stream_filter(stream), "path": path, "b": start},
                                   max_time_ms=self._timeout_ms))  # fmt: skip
            current = _current(found)
            if len(found) < 2:
                continue
            current.sort(key=lambda d: (d["f"]["t"], d["f"]["o"]))
            merged = _partial(current[0])
            sketch = _sketch_of(current[0].get("sk") or {}) if tier in SKETCH_TIERS else None
            for doc in current[1:]:
                merged.merge(_partial(doc))
                if sketch is not None:
                    sketch.merge(_sketch_of(doc.get("sk") or {}))
            if merged.inc is None:  # overlapping in time: rebuild from raw
                redo.add((stream, tier, start))
                continue
            # ts back in ms and the _ids of first and last: from the partials.
            first = min(current, key=lambda d: (d["f"]["t"], d["f"]["o"]))["f"]
            last = max(current, key=lambda d: (d["l"]["t"], d["l"]["o"]))["l"]
            doc = _partial_doc((stream, path, tier, start), merged, sketch, (first, last))
            doc["of"] = [d["_id"] for d in found]
            coll.insert_one(doc)
            coll.delete_many({"_id": {"$in": doc["of"]}})
            done += 1
        self.recompute(redo)
        return done + len(redo)

    def compact_some(self, limit: int) -> bool:
        """``compact`` for at most ``limit`` of the buckets it would merge;
        whether any are left."""
        keys = [k for k, n in self._parts.items() if n > 1]
        self.compact(keys[:limit])
        return len(keys) > limit

    def recompute(self, units: Iterable[Unit]) -> None:
        """Rebuild every path's partial of each unit from the raw documents."""
        docs = self._db["docs"]
        for stream, tier, start in units:
            where = _stream_filter(stream)
            span = {"$gte": DatetimeMS(start * 1000), "$lt": DatetimeMS((start + tier) * 1000)}
            raw = docs.find({**where, "ts": span}, {"seq": 0}, max_time_ms=self._timeout_ms)
            rows = _rows_by_stream(raw).get(stream, [])
            new = []
            for (path, _start), (tss, vals) in stream_columns(rows, tier).items():
                sketch = None
                if tier in SKETCH_TIERS:
                    sketch = Sketch()
                    sketch.add_values(vals)
                new.append(_partial_doc((stream, path, tier, start), Partial.of(tss, vals), sketch))
                self._parts.pop((stream, path, tier, start), None)
            coll = self._coll(tier)
            coll.delete_many({**where, "b": start})
            self._insert(tier, new)

    def touch(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """After an API create, update or delete: recompute the buckets the
        documents (the old and the new version) fall into."""
        self.recompute({u for doc in docs for u in _units(doc)})

    def prune(self, retention_s: Mapping[int, float], now: float | None = None) -> None:
        """Drop partials older than their tier's retention (0: keep forever)."""
        now = time.time() if now is None else now
        for tier, keep in retention_s.items():
            if keep > 0:
                self._coll(tier).delete_many({"b": {"$lt": now - keep}})
