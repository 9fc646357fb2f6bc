"""Rollup tiers of the SQLite store (see ``rollup.py`` for the model).

Tables: ``roll_series`` names each series once (its id keys the buckets);
``roll_60``, ``roll_600`` and ``roll_3600`` (``KEPT_TIERS``: minutes, ten
minutes, hours) hold one row per (series, bucket start), with
its sketch (packed, see ``Sketch.to_bytes``; none for a minute of ``DOCS``,
whose values are all 1, nor for a minute folded before minutes had one); ``roll_state`` the watermark: every document
with ``id <= watermark`` is in the tiers, none above it.

Folding (``Folder``) reads the documents above the watermark back in id
order and adds them to buckets in memory, with no lock; a checkpoint then
writes those buckets in SHORT write transactions, a few series at a time, so
a batch commit of the writer never waits long. While a checkpoint is under
way some series are folded further than the watermark: ``roll_pending``
holds their mark (every document up to it is in that series' buckets), and
readers skip a tail row that its series' mark covers. The last transaction
moves the watermark and empties ``roll_pending``. A folder that dies half
way leaves ``roll_pending`` behind; the next one finishes that checkpoint
first (``Folder``'s resume), so nothing is counted twice.

A bucket that the new rows overlap in time (a late document) is recomputed
from its raw rows, so ``inc`` (the counter increase) stays exact. An API
update or delete marks the buckets it touches dirty (``mark_dirty``): readers
read those raw, and the folder rebuilds them between checkpoints
(``read_repair``, ``write_repair``; hours from minutes).
"""

from __future__ import annotations

import math
import operator
import sqlite3
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import groupby, islice
from typing import Any, Final

import orjson

from . import rollup_vals
from .base import MetricQuery
from .rollup import (
    DOCS,
    HOUR,
    MINUTE,
    RAW,
    TEN_MINUTES,
    TIERS,
    Bucket,
    Filters,
    Partial,
    RawPoint,
    RollupData,
    RollupRequest,
    Segment,
    SeriesKey,
    Sketch,
    SketchColumns,
    StreamRow,
    leaves,
    stream_columns,
)

__all__ = [
    "DENSE_TIERS",
    "KEPT_TIERS",
    "MIGRATION",
    "MIGRATION_DENSE",
    "MIGRATION_DIRTY",
    "MIGRATION_PENDING",
    "MIGRATION_TEN_MINUTES",
    "SKETCH_TIERS",
    "DocBuckets",
    "Folder",
    "Repair",
    "SeriesIds",
    "Sql",
    "Touch",
    "claim_dirty",
    "doc_buckets",
    "mark_dirty",
    "prune",
    "raw_hours",
    "read",
    "read_repair",
    "repair_due",
    "watermark",
    "write_repair",
]

_TIER_TABLE: Final = """CREATE TABLE roll_{tier} (
    series INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    sum NOT NULL, min NOT NULL, max NOT NULL,
    fts REAL NOT NULL, fv NOT NULL, lts REAL NOT NULL, lv NOT NULL,
    inc NOT NULL,
    sketch BLOB,
    PRIMARY KEY (series, bucket)
) WITHOUT ROWID"""

#: Schema migration 3 of ``sqlite.py``: the tiers. Without ROWID, keyed by
#: (series, bucket): a query reads its few series' ranges of buckets.
MIGRATION: Final = (
    """CREATE TABLE roll_series (
        id INTEGER PRIMARY KEY,
        session TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        host TEXT,
        tags TEXT NOT NULL,
        path TEXT NOT NULL
    )""",
    # The lookup of a stream's series (host may be NULL, so no UNIQUE).
    "CREATE INDEX roll_series_key ON roll_series (session, name, path)",
    *(_TIER_TABLE.format(tier=tier) for tier in TIERS),
    "CREATE TABLE roll_state (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    # Buckets an API update or delete touched while its document was not
    # folded yet: the checkpoint that folds it rebuilds them.
    """CREATE TABLE roll_dirty (
        session TEXT, kind TEXT, name TEXT, host TEXT, tags TEXT, path TEXT,
        tier INTEGER, bucket INTEGER
    )""",
    "INSERT INTO roll_state (key, value) VALUES ('watermark', 0)",
)

#: A later schema migration: the per-series marks of a checkpoint under way.
MIGRATION_PENDING: Final = (
    "CREATE TABLE roll_pending (series INTEGER PRIMARY KEY, mark INTEGER NOT NULL)",
    # API edits that touched the tiers, counted: a checkpoint step merges in
    # a read snapshot and writes in a (short) write transaction after it.
    "INSERT INTO roll_state (key, value) VALUES ('edits', 0)",
)

#: A later schema migration: every API update or delete marks its buckets
#: dirty (``mark_dirty``) and every read of the tiers looks them up.
MIGRATION_DIRTY: Final = ("CREATE INDEX roll_dirty_bucket ON roll_dirty (path, tier, bucket)",)


@dataclass(frozen=True, slots=True)
class Sql:
    """The store's SQL builders this module uses (sqlite.py hands them in;
    importing that module would make an import cycle)."""

    #: WHERE terms and parameters of a MetricQuery's filters, on docs columns
    filters: Callable[[MetricQuery], tuple[list[str], list[Any]]]
    #: a dotted data path as a JSON path
    json_path: Callable[[str], str]


#: The tiers this store keeps, coarsest first: ``TIERS`` and ten minutes
#: (built from the minutes by the folder, ``_coarse``).
KEPT_TIERS: Final = (HOUR, TEN_MINUTES, MINUTE)
#: Tiers whose sketches are stored dense (``rollup.DENSE``, schema 11): those a
#: percentile in buckets reads by the thousand. Packed elsewhere: a minute's
#: ~60 values are few for the keys they spread over, an hour's sketch is read
#: for whole-history percentiles (~2,800 at 10M samples, ~25 ms).
DENSE_TIERS: Final = frozenset({TEN_MINUTES})
#: Tiers whose buckets carry a sketch here: all (a minute's is ~130 bytes
#: packed for 60 values), so that a percentile over a window with minute
#: edges ("the last 30 minutes") reads buckets, not ~10^5 raw rows of JSON.
SKETCH_TIERS: Final = KEPT_TIERS

_BUCKET_COLUMNS: Final = "n, sum, min, max, fts, fv, lts, lv, inc"
_SERIES_COLUMNS: Final = "session, kind, name, host, tags"
#: Series ids by key, per database file; grows with the series (thousands).
_SERIES_CACHE_MAX: Final = 200_000
#: The comparisons a ``RollupRequest.raw_filter`` may make (spliced into SQL).
_RAW_OPS: Final = frozenset({">", ">=", "<", "<="})


def _within(f: Filters, lo: float | None, hi: float | None) -> MetricQuery:
    """``f``'s filters over ``[lo, hi)``."""
    return MetricQuery(f.session, f.name, f.kind, f.host, f.tags, ts_from=lo, ts_to=hi)


def _sketched(tier: int, path: str) -> bool:
    """Whether ``tier``'s buckets of ``path`` keep a sketch (an hour always)."""
    return tier == HOUR or (tier in SKETCH_TIERS and path != DOCS)


def watermark(conn: sqlite3.Connection) -> int:
    (w,) = conn.execute("SELECT value FROM roll_state WHERE key = 'watermark'").fetchone()
    return int(w)


# -- reading ------------------------------------------------------------------


def _bound(clauses: list[str], params: list[Any], clause: str, value: Any) -> None:
    """AND ``clause`` (one placeholder) with ``value``, unless there is no bound."""
    if value is not None:
        clauses.append(clause)
        params.append(value)


def _value_sql(sql: Sql, path: str, params: list[Any], clauses: list[str]) -> str:
    """The SQL of a row's value at ``path`` (numbers only, see ``leaves``)."""
    if path == DOCS:
        return "1"
    if path == "value":
        clauses.append("value IS NOT NULL")
        return "value"
    json_path = sql.json_path(path)
    clauses.append("json_type(data, ?) IN ('integer', 'real')")
    params.append(json_path)
    return "json_extract(data, ?)"


class _SeriesKeys(dict[tuple[Any, ...], SeriesKey]):
    """SeriesKey by the docs columns (session, kind, name, host, tags), made once each."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def __missing__(self, key: tuple[Any, ...]) -> SeriesKey:
        session, kind, name, host, tags = key
        self[key] = series = SeriesKey(
            session, kind, name, host, tuple(orjson.loads(tags)), self.path
        )
        return series


def _raw_sql(
    sql: Sql, q: MetricQuery, path: str, ids: tuple[int | None, int | None],
    raw_filter: tuple[str, float] | None,
) -> tuple[str, list[Any]]:  # fmt: skip
    """``SELECT <series columns>, ts, id, <value> AS v FROM docs WHERE ...`` of
    the rows ``q`` matches with an id in ``ids`` (above, up to: None for no
    bound) and a number at ``path`` (passing ``raw_filter``), and its parameters."""
    above, upto = ids
    # The tail is a short range of ids: read it by rowid. Left to itself the
    # planner takes the ts index, and reads the whole (long) window there.
    table_hint = " NOT INDEXED" if above is not None else ""
    clauses, params = sql.filters(q)
    _bound(clauses, params, "id > ?", above)
    _bound(clauses, params, "id <= ?", upto)
    value_params: list[Any] = []
    value_clauses: list[str] = []
    value_sql = _value_sql(sql, path, value_params, value_clauses)
    # value_sql's placeholder comes first in the SQL, its clause's last.
    trailing = [*value_params]
    if raw_filter is not None and raw_filter[0] in _RAW_OPS and path != DOCS:
        value_clauses.append(f"{value_sql} {raw_filter[0]} ?")
        trailing += [*value_params, float(raw_filter[1])]
    query = (
        f"SELECT {_SERIES_COLUMNS}, ts, id, {value_sql} AS v FROM docs{table_hint}"
        f" WHERE {' AND '.join(clauses + value_clauses) or '1'}"
    )
    return query, [*value_params, *params, *trailing]


def _raw_points(
    conn: sqlite3.Connection,
    sql: Sql,
    where: Filters,
    path: str,
    lo: float | None,
    hi: float | None,
    above: int | None,
    upto: int | None = None,
    raw_filter: tuple[str, float] | None = None,
) -> list[RawPoint]:
    query, args = _raw_sql(sql, _within(where, lo, hi), path, (above, upto), raw_filter)
    tail = above is not None
    keys = _SeriesKeys(path)
    return [
        RawPoint(keys[session, kind, name, host, tags], ts, doc_id, value, tail)
        for session, kind, name, host, tags, ts, doc_id, value in conn.execute(query, args)
    ]


def _raw_sums(
    conn: sqlite3.Connection, sql: Sql, req: RollupRequest, lo: float, hi: float | None, upto: int
) -> list[Bucket]:
    """The raw rows up to id ``upto`` summed per series and ``req.raw_buckets``
    seconds (``lo >= 0``), in SQL: a threshold over noisy data passes ~10^5
    rows, and a point each cost as much as reading them."""
    width = int(req.raw_buckets or 0)
    q = _within(req.where, lo, hi)
    inner, args = _raw_sql(sql, q, req.path, (None, upto), req.raw_filter)
    query = (
        f"SELECT {_SERIES_COLUMNS}, CAST(ts / {width} AS INTEGER) * {width} AS b,"
        " count(*), total(v), min(v), max(v), min(ts), max(ts)"
        f" FROM ({inner}) GROUP BY {_SERIES_COLUMNS}, b"
    )
    keys = _SeriesKeys(req.path)
    # (first and last values and the increase are not kept: no rate here)
    return [
        Bucket(keys[row[:5]], RAW, row[5], Partial(n, total, low, high, fts, low, lts, high, None))
        for row in conn.execute(query, args)
        for n, total, low, high, fts, lts in (row[6:],)
    ]


def _slice_sql(column: str, span: float, params: list[Any]) -> str:
    """GROUP BY terms: a series' rows of one ``span`` slice (0: all of them)."""
    if not span:
        return ""
    params.append(span)
    return f", floor({column} / ?)"


def _merged_part(n: int, total: float, low: float, high: float, fts: float, lts: float) -> Partial:
    """A merged slice's Partial (``RollupRequest.merge_span``): no first or
    last value, no counter increase."""
    return Partial(n, total, low, high, fts, math.nan, lts, math.nan, None)


def _tier_merge(sum_fn: str = "SUM") -> str:
    """The merged columns of tier buckets ``b`` (``_merged_buckets``);
    ``sum_fn`` total where a sum of integers may pass 64 bits."""
    return (
        f"MIN(b.bucket), SUM(b.n), {sum_fn}(b.sum), MIN(b.min), MAX(b.max), MIN(b.fts), MAX(b.lts)"
    )


def _merged_buckets(
    conn: sqlite3.Connection, path: str, tier: int, columns: str, rest: str, params: list[Any]
) -> list[Bucket]:
    """One Bucket per row of ``SELECT series columns, columns rest``, where
    ``columns`` are start, n, sum, min, max, first and last time (merge_span):
    the one reading of merged slices, raw or tier."""
    keys = _SeriesKeys(path)
    return [
        Bucket(keys[row[:5]], tier, row[5], _merged_part(*row[6:]))
        for row in conn.execute(f"SELECT {_SERIES_COLUMNS}, {columns} {rest}", params)
    ]


def _raw_merged(
    conn: sqlite3.Connection, sql: Sql, req: RollupRequest, span: float, seg: Segment
) -> list[Bucket]:
    """The raw rows of ``seg``, one Bucket per series and slice (merge_span)."""
    inner, args = _raw_sql(sql, _within(req.where, seg.lo, seg.hi), req.path, (None, None),
                           req.raw_filter)  # fmt: skip
    group = _slice_sql("ts", span, args)
    return _merged_buckets(
        conn,
        req.path,
        RAW,
        "MIN(ts), COUNT(*), SUM(v), MIN(v), MAX(v), MIN(ts), MAX(ts)",
        f"FROM ({inner}) GROUP BY {_SERIES_COLUMNS}{group}",
        args,
    )


#: Tier buckets of a counter in time order, each with the step from the one
#: before (``rollup.step``: a drop is a reset) and whether it overlaps it, then
#: summed per series (``sid``) and slice (``sl``). One window, of lag/lead only:
#: with sorted pieces, "starts before the previous one ends" is the overlap
#: ``Partial.merge`` checks (a running max(lts) and last_value over the whole
#: frame cost ~10x, their frames recomputed per row), and partitions by
#: integers, not the five text columns of a stream (~2x).
_INCREASE_SQL: Final = """
WITH w AS (
    SELECT *, lag(lv) OVER win AS plv, lag(lts) OVER win AS plts, lead(lv) OVER win AS nlv
    FROM ({pieces})
    WINDOW win AS (PARTITION BY sid, sl ORDER BY fts)
), g AS (
    SELECT sid, min(start) AS start, sum(n) AS n, sum(s) AS s, min(lo) AS lo, max(hi) AS hi,
        min(fts) AS fts, max(CASE WHEN plv IS NULL THEN fv END) AS fv, max(lts) AS lts,
        max(CASE WHEN nlv IS NULL THEN lv END) AS lv,
        CASE WHEN max(fts < plts) THEN NULL ELSE sum(inc + CASE WHEN plv IS NULL THEN 0
            WHEN fv >= plv THEN fv - plv ELSE fv END) END AS inc
    FROM w GROUP BY sid, sl
)
SELECT docs.session, docs.kind, docs.name, docs.host, docs.tags, g.start, g.n, g.s,
    g.lo, g.hi, g.fts, g.fv, g.lts, g.lv, g.inc
FROM g JOIN roll_series AS docs ON docs.id = g.sid
"""


def _increase_merged(
    conn: sqlite3.Connection, sql: Sql, req: RollupRequest, span: float
) -> list[Bucket]:
    """Every segment of ``req``: per series and slice (increase_span), one
    Bucket of its tier buckets (merged in SQL) and one per raw segment (its
    rows, in Python: ~10^4 rows through a SQL window cost ~3x more). The
    engine merges these few in time order."""
    pieces: list[str] = []
    args: list[Any] = []
    out: list[Bucket] = []
    for seg in req.segments:
        if seg.tier == RAW:
            out += _raw_increase(conn, sql, req, seg, span)
            continue
        where, more = _tier_where(sql, req, seg.tier, seg.lo, seg.hi)
        pieces.append(f"SELECT b.series AS sid, {_slice_col('b.bucket', span)},"
                      " b.bucket AS start, b.n AS n, b.sum AS s, b.min AS lo, b.max AS hi,"
                      f" b.fts AS fts, b.fv AS fv, b.lts AS lts, b.lv AS lv, b.inc AS inc {where}")  # fmt: skip
        args += more
    if pieces:
        keys = _SeriesKeys(req.path)
        out += [
            Bucket(keys[row[:5]], RAW, row[5], Partial(*row[6:]))
            for row in conn.execute(_INCREASE_SQL.format(pieces=" UNION ALL ".join(pieces)), args)
        ]
    return out


def _raw_increase(
    conn: sqlite3.Connection, sql: Sql, req: RollupRequest, seg: Segment, span: float
) -> list[Bucket]:
    """The raw rows of ``seg``, one Bucket per series and slice (``Partial.of``)."""
    query, args = _raw_sql(sql, _within(req.where, seg.lo, seg.hi), req.path, (None, None), None)
    cells: dict[tuple[Any, ...], list[tuple[float, int, float]]] = defaultdict(list)
    for session, kind, name, host, tags, ts, doc_id, v in conn.execute(query, args):
        cells[session, kind, name, host, tags, math.floor(ts / span) if span else 0].append(
            (ts, doc_id, v)
        )
    keys = _SeriesKeys(req.path)
    out = []
    for key, rows in cells.items():
        rows.sort()  # (ts, id): mostly in that order already (the ts index)
        part = Partial.of([r[0] for r in rows], [r[2] for r in rows])
        out.append(Bucket(keys[key[:5]], RAW, rows[0][0], part))
    return out


def _slice_col(column: str, span: float) -> str:
    """The slice of ``span`` seconds ``column`` falls in, as column ``sl``."""
    return f"floor({column} / {float(span)!r}) AS sl" if span else "0 AS sl"


def read(conn: sqlite3.Connection, sql: Sql, req: RollupRequest) -> RollupData:
    """Buckets and raw points for ``req``; call inside one read snapshot."""
    try:
        if req.increase_span is not None and not req.sketches and not _any_dirty(conn, req.path):
            return _read_increase(conn, sql, req, req.increase_span)
        return _read(conn, sql, req, None if req.sketches else req.merge_span)
    except sqlite3.OperationalError as e:
        if "integer overflow" not in str(e):  # SUM() of integers past 2**63
            raise
        return _read(conn, sql, req, None)  # Python's sums do not overflow


def _any_dirty(conn: sqlite3.Connection, path: str) -> bool:
    """Whether an API edit left buckets of ``path`` to rebuild (roll_dirty):
    then a rate takes the general path, which reads such buckets right."""
    return (
        conn.execute("SELECT 1 FROM roll_dirty WHERE path = ? LIMIT 1", (path,)).fetchone()
        is not None
    )


def _read_increase(
    conn: sqlite3.Connection, sql: Sql, req: RollupRequest, span: float
) -> RollupData:
    """``req`` with ``increase_span``: every segment merged in one query, and the tail."""
    mark = watermark(conn)
    buckets = _increase_merged(conn, sql, req, span)
    tiers = [seg for seg in req.segments if seg.tier != RAW]
    if not tiers:
        return RollupData(buckets, [])
    lows, highs = [seg.lo for seg in tiers], [seg.hi for seg in tiers]
    lo = None if None in lows else min(x for x in lows if x is not None)
    hi = None if None in highs else max(x for x in highs if x is not None)
    tail = _raw_points(conn, sql, req.where, req.path, lo, hi, mark)
    pending = _pending_marks(conn, req.path) if tail else {}
    if pending:  # a checkpoint is under way: some series are folded further
        tail = [p for p in tail if p.order > pending.get(p.series, mark)]
    return RollupData(buckets, tail)


def _read(conn: sqlite3.Connection, sql: Sql, req: RollupRequest, span: float | None) -> RollupData:
    mark = watermark(conn)
    buckets: list[Bucket] = []
    points: list[RawPoint] = []
    sketched: list[SketchColumns] = []
    tier_lo: float | None = None
    tier_hi: float | None = None
    tiered = False
    dirty: list[tuple[Stream, int, int]] = []  # (stream, tier, start): read raw instead
    for seg in req.segments:
        if seg.tier == RAW and span is not None:
            buckets += _raw_merged(conn, sql, req, span, seg)
            continue
        if seg.tier == RAW:
            if (
                req.raw_buckets
                and req.raw_filter is not None
                and req.raw_filter[0] in _RAW_OPS
                and req.path != DOCS
                and seg.lo is not None
                and seg.lo >= 0
            ):  # summed in SQL (what the tiers hold), and rows above the mark one by one
                buckets += _raw_sums(conn, sql, req, seg.lo, seg.hi, mark)
                above: int | None = mark
            else:
                above = None
            points += _raw_points(
                conn, sql, req.where, req.path, seg.lo, seg.hi, above, raw_filter=req.raw_filter
            )
            continue
        found = _dirty_in(conn, sql, req, seg.tier, seg.lo, seg.hi)
        dirty += found
        if req.sketches and req.raw_filter is None:  # a percentile: columns
            sketched.append(_sketch_columns(conn, sql, req, seg.tier, seg.lo, seg.hi, bool(found)))
        else:
            buckets += _buckets(conn, sql, req, seg.tier, seg.lo, seg.hi, span, bool(found))
        if not tiered:
            tier_lo, tier_hi, tiered = seg.lo, seg.hi, True
        else:  # tier segments are contiguous: widen the span
            tier_lo = None if tier_lo is None or seg.lo is None else min(tier_lo, seg.lo)
            tier_hi = None if tier_hi is None or seg.hi is None else max(tier_hi, seg.hi)
    if tiered:
        tail = _raw_points(
            conn, sql, req.where, req.path, tier_lo, tier_hi, mark, raw_filter=req.raw_filter
        )
        pending = _pending_marks(conn, req.path) if tail or dirty else {}
        if pending:  # a checkpoint is under way: some series are folded further
            tail = [p for p in tail if p.order > pending.get(p.series, mark)]
        points += tail
        if dirty:
            points += _dirty_points(conn, sql, req, dirty, mark, pending)
    return RollupData(buckets, points, sketched)


def _dirty_in(
    conn: sqlite3.Connection, sql: Sql, req: RollupRequest, tier: int, lo: float | None,
    hi: float | None,
) -> list[tuple[Stream, int, int]]:  # fmt: skip
    """The dirty buckets (``mark_dirty``) of ``tier`` in ``[lo, hi)`` that
    ``req``'s filters match: (stream, tier, start)."""
    # roll_dirty aliased as docs: the filters are the same columns.
    clauses, params = sql.filters(_within(req.where, None, None))
    clauses += ["path = ?", "tier = ?"]
    params += [req.path, tier]
    _bound(clauses, params, "bucket >= ?", lo)
    _bound(clauses, params, "bucket < ?", hi)
    return [
        (row[:5], tier, row[5])
        for row in conn.execute(
            f"SELECT DISTINCT {_SERIES_COLUMNS}, bucket FROM roll_dirty AS docs"
            f" WHERE {' AND '.join(clauses)}",
            params,
        )
    ]


def _dirty_points(
    conn: sqlite3.Connection,
    sql: Sql,
    req: RollupRequest,
    dirty: list[tuple[Stream, int, int]],
    mark: int,
    pending: dict[SeriesKey, int],
) -> list[RawPoint]:
    """The raw rows of the dirty buckets up to what the tiers hold (the
    watermark, or the series' mark mid-checkpoint): the tail has the rest."""
    out: list[RawPoint] = []
    for (session, kind, name, host, tags), tier, start in dirty:
        where = MetricQuery(session=session, name=name, kind=kind, host=host)
        raw = _raw_points(
            conn, sql, where, req.path, start, start + tier, None, raw_filter=req.raw_filter
        )
        out += [
            p
            for p in raw
            if p.order <= pending.get(p.series, mark)
            and p.series.host == host
            and orjson.dumps(list(p.series.tags)).decode() == tags
        ]
    return out


#: A WHERE term on a bucket ``b`` of series ``docs``: no edit made it dirty.
#: (The index roll_dirty_bucket makes it one lookup per bucket.)
_NOT_DIRTY: Final = (
    "NOT EXISTS (SELECT 1 FROM roll_dirty AS d WHERE d.path = docs.path AND d.tier = {tier}"
    " AND d.bucket = b.bucket AND d.session = docs.session AND d.kind = docs.kind"
    " AND d.name = docs.name AND d.host IS docs.host AND d.tags = docs.tags)"
)


def _pending_marks(conn: sqlite3.Connection, path: str) -> dict[SeriesKey, int]:
    """The series at ``path`` that a checkpoint under way folded past the watermark."""
    return {
        SeriesKey(session, kind, name, host, tuple(orjson.loads(tags)), path): mark
        for session, kind, name, host, tags, mark in conn.execute(
            f"SELECT {_SERIES_COLUMNS}, p.mark FROM roll_pending AS p"
            " JOIN roll_series AS s ON s.id = p.series WHERE s.path = ?",
            (path,),
        )
    }


def _tier_where(
    sql: Sql, req: RollupRequest, tier: int, lo: float | None, hi: float | None,
    skip_dirty: bool = False,
) -> tuple[str, list[Any]]:  # fmt: skip
    """``FROM ... WHERE ...`` of ``tier``'s buckets in ``[lo, hi)`` of the
    series ``req`` asks for (``docs``: the series, ``b``: the buckets), and
    its parameters; ``skip_dirty``: without the dirty ones."""
    # The series table is aliased as docs: the filters are the same columns.
    clauses, params = sql.filters(_within(req.where, None, None))
    # (Its columns and the bucket table's have no name in common.)
    clauses.append("docs.path = ?")
    params.append(req.path)
    if skip_dirty:  # some are dirty: the caller reads those raw
        clauses.append(_NOT_DIRTY.format(tier=int(tier)))
    _bound(clauses, params, "b.bucket >= ?", lo)
    _bound(clauses, params, "b.bucket < ?", hi)
    return (
        f"FROM roll_series AS docs JOIN roll_{tier} AS b ON b.series = docs.id"
        f" WHERE {' AND '.join(clauses)}",
        params,
    )


def _buckets(
    conn: sqlite3.Connection,
    sql: Sql,
    req: RollupRequest,
    tier: int,
    lo: float | None,
    hi: float | None,
    span: float | None = None,
    skip_dirty: bool = False,
) -> list[Bucket]:
    where, params = _tier_where(sql, req, tier, lo, hi, skip_dirty)
    passing = _passing_buckets(conn, req, tier, where, params)  # a threshold's
    if passing is not None:
        return passing
    if span is not None:  # merged in SQL (RollupRequest.merge_span)
        group = _slice_sql("b.bucket", span, params)
        rest = f"{where} GROUP BY docs.id{group}"
        return _merged_buckets(conn, req.path, tier, _tier_merge(), rest, params)
    sketch_sql = "b.sketch" if req.sketches else "NULL"
    vals_sql, vals_params = rollup_vals.cut_sql(req, tier)
    # Each series' five text columns read once, not once per bucket: at 10M
    # samples "p99 every 10 minutes" reads ~12,000 buckets, and making their
    # strings took two thirds of the read.
    series = _series_by_id(conn, sql, req)
    query = f"SELECT b.series, b.bucket, {_BUCKET_COLUMNS}, {sketch_sql}, {vals_sql} {where}"
    # (the sketch as stored: the engine's SketchSum merges it packed)
    return [
        Bucket(series[row[0]], tier, row[1], Partial(*row[2:11]), row[11], row[12])
        for row in conn.execute(query, vals_params + params)
    ]


def _sketch_columns(
    conn: sqlite3.Connection, sql: Sql, req: RollupRequest, tier: int, lo: float | None,
    hi: float | None, skip_dirty: bool,
) -> SketchColumns:  # fmt: skip
    """A percentile's buckets (no raw filter): counts and sketches only, as columns."""
    where, params = _tier_where(sql, req, tier, lo, hi, skip_dirty)
    rows = conn.execute(f"SELECT b.series, b.bucket, b.n, b.sketch {where}", params).fetchall()
    if not rows:
        return SketchColumns(tier, (), (), (), ())
    ids, starts, counts, sketches = zip(*rows, strict=True)
    series = _series_by_id(conn, sql, req)
    return SketchColumns(tier, list(map(series.__getitem__, ids)), starts, counts, sketches)


def _series_by_id(conn: sqlite3.Connection, sql: Sql, req: RollupRequest) -> dict[int, SeriesKey]:
    """The series ``req`` asks for, by id (``roll_series`` aliased as docs:
    the filters are the same columns)."""
    clauses, params = sql.filters(_within(req.where, None, None))
    clauses.append("docs.path = ?")
    params.append(req.path)
    keys = _SeriesKeys(req.path)
    return {
        row[0]: keys[row[1:]]
        for row in conn.execute(
            f"SELECT id, {_SERIES_COLUMNS} FROM roll_series AS docs WHERE {' AND '.join(clauses)}",
            params,
        )
    }


# -- folding ------------------------------------------------------------------

#: (session, kind, name, host, tags JSON text): the stream of a docs row.
Stream = tuple[str, str, str, "str | None", str]


class SeriesIds:
    """Series ids by (stream, path), remembered across transactions once
    committed (``committed``); new ids stay pending until then."""

    def __init__(self) -> None:
        self._known: dict[tuple[Stream, str], int] = {}
        self._pending: dict[tuple[Stream, str], int] = {}

    def find(self, conn: sqlite3.Connection, stream: Stream, path: str) -> int | None:
        """The series' id, None if it has none yet (no write)."""
        key = (stream, path)
        sid = self._known.get(key) or self._pending.get(key)
        if sid is not None:
            return sid
        session, kind, name, host, tags = stream
        row = conn.execute(
            "SELECT id FROM roll_series WHERE session = ? AND name = ? AND path = ?"
            " AND kind = ? AND host IS ? AND tags = ?",
            (session, name, path, kind, host, tags),
        ).fetchone()
        if row is None:
            return None
        self._pending[key] = sid = int(row[0])
        return sid

    def get(self, conn: sqlite3.Connection, stream: Stream, path: str) -> int:
        """The series' id, created if it has none (in a write transaction)."""
        sid = self.find(conn, stream, path)
        if sid is None:
            cur = conn.execute(
                f"INSERT INTO roll_series ({_SERIES_COLUMNS}, path) VALUES (?, ?, ?, ?, ?, ?)",
                (*stream, path),
            )
            self._pending[stream, path] = sid = int(cur.lastrowid or 0)
            _session, kind, name, _host, _tags = stream
            if kind in ("sample", "event") and path not in (DOCS, "value"):
                # Every path of every sample, not only a session's first:
                # the /query vocabulary (catalog.py) learns it with its series.
                conn.execute("INSERT OR IGNORE INTO paths (name, path) VALUES (?, ?)", (name, path))
        return sid

    def committed(self) -> None:
        if len(self._known) + len(self._pending) > _SERIES_CACHE_MAX:
            self._known.clear()
        self._known.update(self._pending)
        self._pending.clear()

    def rolled_back(self) -> None:
        self._pending.clear()


def _stream_rows(
    rows: Sequence[tuple[Any, ...]],
) -> dict[Stream, list[StreamRow]]:
    """docs rows (id, session, kind, name, host, tags, ts, value, data) by stream,
    each row's data parsed (one orjson call per stream)."""
    raw: dict[Stream, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        raw[row[1:6]].append(row)
    out: dict[Stream, list[StreamRow]] = {}
    for stream, srows in raw.items():
        datas = orjson.loads("[" + ",".join([r[8] or "null" for r in srows]) + "]")
        out[stream] = [
            (r[6], r[0], r[7], d if type(d) is dict else None)
            for r, d in zip(srows, datas, strict=True)
        ]
    return out


#: (stream, path, tier, bucket start) of one bucket in a Folder's memory.
BucketKey = tuple[Stream, str, int, int]


class Folder:
    """Folds documents above the watermark into the tiers in two steps.

    ``absorb`` reads committed documents after the last absorbed one and adds
    them to partial buckets in memory (no write, no transaction: cheap to do
    a slice at a time). ``checkpoint_step`` writes those buckets, merged with
    the stored ones, a few series per call (one short write transaction each,
    see the module docstring), and the last call moves the watermark: writing
    each bucket once per checkpoint instead of once per slice is what keeps
    folding cheap. Memory is only ever ahead of what is stored, so losing it
    (a crash, a failed transaction) loses nothing: the documents are folded
    again from the raw rows, and a checkpoint left half done is finished first.
    One folder per database at a time (the store holds a file lock for it).
    """

    def __init__(self) -> None:
        self.base = -1  # the watermark the memory starts at (-1: empty)
        self.through = -1  # the last document id absorbed
        self.docs = 0
        #: The values absorbed, by minute bucket: the (ts, value) columns of
        #: each slice, appended as they come (cheap), and turned into
        #: buckets once per checkpoint by ``prepare`` (per-bucket work done
        #: once, not once per slice). Packed as arrays (``_packed``).
        self.columns: dict[BucketKey, list[Column]] = defaultdict(list)
        self.parts: dict[BucketKey, Partial] = {}
        self.sketches: dict[BucketKey, Sketch] = {}
        #: each minute bucket's absorbed values, for roll_vals (rollup_vals.py)
        self.vals: dict[BucketKey, Sequence[float]] = {}
        #: Resuming a half-done checkpoint: its mark (absorb stops there) and
        #: the series it already wrote (skipped); None otherwise.
        self.limit: int | None = None
        self.done: set[int] = set()
        #: Series still to write in the checkpoint under way (None: none begun).
        self._queue: list[tuple[Stream, str, list[BucketKey]]] | None = None

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def _start(self, conn: sqlite3.Connection, mark: int) -> None:
        self.clear()
        self.base = self.through = mark
        pending = conn.execute("SELECT series, mark FROM roll_pending").fetchall()
        if pending:
            self.limit = max(m for _, m in pending)
            self.done = {sid for sid, _ in pending}

    @property
    def full(self) -> bool:
        """A resumed checkpoint has absorbed all it must before writing."""
        return self.limit is not None and self.through >= self.limit

    def absorb(
        self,
        conn: sqlite3.Connection,
        max_docs: int,
        reading: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> int:
        """Add up to ``max_docs`` documents to memory; how many. ``reading``
        is entered while the database is read (not while the rows are added)."""
        with reading():
            mark = watermark(conn)
            if self.base != mark or self.through < mark:
                # First use, or memory was dropped: start over at the watermark.
                self._start(conn, mark)
            if self._queue is not None or self.full:
                return 0  # a checkpoint is under way: finish it first
            upto = "" if self.limit is None else f" AND id <= {int(self.limit)}"
            rows = conn.execute(
                "SELECT id, session, kind, name, host, tags, ts, value, data FROM docs"
                f" WHERE id > ?{upto} ORDER BY id LIMIT ?",
                (self.through, max_docs),
            ).fetchall()
        if self.limit is not None and len(rows) < max_docs:
            self.through = self.limit  # (later ids up to the limit were deleted)
        if not rows:
            return 0
        columns = self.columns
        for stream, srows in _stream_rows(rows).items():
            times: dict[int, array[float]] = {}  # a bucket's ts list, shared by its paths
            for (path, start), (tss, vals) in stream_columns(srows, MINUTE).items():
                packed_tss = times.get(id(tss))
                if packed_tss is None:
                    packed_tss = times[id(tss)] = array("d", tss)
                columns[stream, path, MINUTE, start].append((packed_tss, _packed(vals)))
        self.through = max(self.through, rows[-1][0])
        self.docs += len(rows)
        return len(rows)

    def prepare(self) -> None:
        """Turn the absorbed columns into minute and hour buckets (CPU only:
        call it before the write transactions; ``checkpoint_step`` does if not)."""
        parts, sketches = self.parts, self.sketches
        # minutes -> ten minutes -> hours, each from the finer one's buckets
        coarser: dict[BucketKey, list[tuple[Partial, Sketch | None]]] = defaultdict(list)
        # In time order, so that merges append (see Partial.merge).
        for key in sorted(self.columns, key=_by_start):
            tss, vals = _joined(self.columns[key])
            stream, path, _, start = key
            parts[key] = part = Partial.of(tss, vals)
            minute = None
            if path != DOCS:
                self.vals[key] = vals
                sketches[key] = minute = Sketch()
                minute.add_values(vals)
            coarser[stream, path, TEN_MINUTES, start // TEN_MINUTES * TEN_MINUTES].append(
                (part, minute)
            )
        for tier in (TEN_MINUTES, HOUR):
            for key in [k for k in coarser if k[2] == tier]:
                built = _coarse(coarser.pop(key), key[1], tier)
                assert built is not None  # disjoint pieces, each with its sketch
                parts[key], sketch = built
                if sketch is not None:
                    sketches[key] = sketch
                if tier != HOUR:
                    stream, path, _, start = key
                    coarser[stream, path, HOUR, start // HOUR * HOUR].append(built)
        self.columns.clear()

    def read_step(
        self, conn: sqlite3.Connection, sql: Sql, ids: SeriesIds, max_series: int
    ) -> Step | None:
        """The next ``max_series`` series of the checkpoint, merged with their
        stored buckets: all the work, done in a read snapshot so that the write
        transaction (``write_step``) only writes rows. None once every series
        is written (then ``finish``)."""
        if self._queue is None:
            self.prepare()
            by_series: dict[tuple[Stream, str], list[BucketKey]] = defaultdict(list)
            for key in self.parts:
                by_series[key[0], key[1]].append(key)
            self._queue = [(stream, path, keys) for (stream, path), keys in by_series.items()]
        if not self._queue:
            return None
        step = Step(_edits(conn), self._queue[-max_series:])
        del self._queue[-max_series:]
        for stream, path, keys in step.series:
            sid = ids.find(conn, stream, path)
            if sid is not None and sid in self.done:
                continue  # written by the checkpoint this one resumes
            stored = _stored(conn, sid, keys)
            for key in keys:
                _, _, tier, start = key
                part = self.parts[key]
                merged = None if part.inc is None else _merged(stored.get((tier, start)), part,
                                                                self.sketches.get(key), tier)  # fmt: skip
                if merged is None:  # rebuilt here, in the snapshot, not in the write
                    step.redo.append((key, *_recomputed(conn, sql, key, self.through)))
                else:
                    step.rows[tier].append((stream, path, start, *merged))
                    if key in self.vals:
                        blob = rollup_vals.merged(conn, sid, start, self.vals[key])
                        if blob is not None:
                            step.vals.append((stream, path, start, blob))
        return step

    def write_step(self, conn: sqlite3.Connection, sql: Sql, ids: SeriesIds, step: Step) -> bool:
        """Write ``step`` in the caller's write transaction; False (nothing
        written) if the checkpoint was dropped: someone moved the watermark.
        If the caller's transaction fails it must clear memory: the next
        absorb resumes from what was committed."""
        if self.base < 0 or watermark(conn) != self.base:
            return False
        if _edits(conn) != step.edits:  # an API edit in between: merge again, in here
            fresh = self.read_step_again(conn, sql, ids, step)
            step = fresh
        for tier, rows in step.rows.items():
            _insert_buckets(conn, tier, [(ids.get(conn, r[0], r[1]), *r[2:]) for r in rows])
        rollup_vals.write_many(conn, [(ids.get(conn, r[0], r[1]), *r[2:]) for r in step.vals])
        rollup_vals.hours_changed(
            conn, [(ids.get(conn, r[0], r[1]), r[2]) for r in step.rows[HOUR] if r[1] != DOCS]
        )
        for key, built, values in step.redo:
            _write_recomputed(conn, ids, key, built, values)
        # A dirty bucket stays dirty (read raw) whatever is written to it:
        # the repair rebuilds it once the checkpoint is done (``read_repair``).
        marks = []
        for stream, path, _keys in step.series:
            sid = ids.get(conn, stream, path)
            if sid in self.done:
                continue
            marks.append((sid, self.through))
        conn.executemany("INSERT OR REPLACE INTO roll_pending (series, mark) VALUES (?, ?)", marks)
        return True

    def read_step_again(
        self, conn: sqlite3.Connection, sql: Sql, ids: SeriesIds, step: Step
    ) -> Step:
        self._queue = [*(self._queue or []), *step.series]
        again = self.read_step(conn, sql, ids, len(step.series))
        assert again is not None
        return again

    def finish(self, conn: sqlite3.Connection, sql: Sql, ids: SeriesIds) -> None:
        """Move the watermark: the checkpoint is complete (the caller clears memory)."""
        if self.base < 0 or watermark(conn) != self.base:
            return
        conn.execute("UPDATE roll_state SET value = ? WHERE key = 'watermark'", (self.through,))
        conn.execute("DELETE FROM roll_pending")


@dataclass(slots=True)
class Step:
    """One write transaction of a checkpoint: its series and their merged
    bucket rows, read when ``roll_state.edits`` was ``edits``."""

    edits: int
    series: list[tuple[Stream, str, list[BucketKey]]]
    #: per tier: (stream, path, bucket start, then the bucket's columns and sketch)
    rows: dict[int, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    #: buckets the new rows overlap in time, rebuilt from the raw rows
    #: (``_recomputed``): in the read snapshot, not the write transaction,
    #: where an hour of an API stream written flat out (~50,000 rows) held
    #: the write lock 1.4 s
    redo: list[tuple[BucketKey, Rebuilt, list[float]]] = field(default_factory=list)
    #: (stream, path, minute start, rollup_vals.merged's blob)
    vals: list[tuple[Stream, str, int, bytes]] = field(default_factory=list)


def _edits(conn: sqlite3.Connection) -> int:
    """How many repairs rewrote buckets so far (``write_repair`` counts them)."""
    row = conn.execute("SELECT value FROM roll_state WHERE key = 'edits'").fetchone()
    return 0 if row is None else int(row[0])


def _by_start(key: BucketKey) -> int:
    return key[3]


#: One slice's (ts, value) column of a bucket, as the folder keeps it.
Column = tuple["array[float]", Sequence[float]]

_FLOATS: Final = {float}
_INTS: Final = {int}


def _packed(vals: list[float]) -> Sequence[float]:
    """``vals`` as an array where that keeps every value and its type (ints
    stay ints: sums and roll_vals keep them exact): a list holds a pointer
    and an object per number, ~5x the memory, and the folder holds up to
    ``_CHECKPOINT_DOCS`` documents' values. Mixed or huge numbers stay a list."""
    kinds = set(map(type, vals))
    if kinds == _FLOATS:
        return array("d", vals)
    if kinds == _INTS:
        try:
            return array("q", vals)
        except OverflowError:  # past 64 bits
            return vals
    return vals


def _joined(chunks: list[Column]) -> tuple[Sequence[float], Sequence[float]]:
    """One (ts, value) column of a bucket from its slices' (each in (ts, id)
    order, ids rising from one slice to the next), in (ts, id) order."""
    if len(chunks) == 1:
        return chunks[0]
    tss = array("d")
    for c in chunks:
        tss += c[0]
    vals: Sequence[float]
    arrays = [c[1] for c in chunks if isinstance(c[1], array)]
    if len(arrays) == len(chunks) and len({a.typecode for a in arrays}) == 1:
        vals = joined = array(arrays[0].typecode)
        for a in arrays:
            joined += a
    else:
        vals = [v for c in chunks for v in c[1]]
    if not all(map(operator.le, tss, islice(tss, 1, None))):  # a late document
        order = sorted(range(len(tss)), key=tss.__getitem__)  # stable: id order kept
        return [tss[i] for i in order], [vals[i] for i in order]
    return tss, vals


def _stored(
    conn: sqlite3.Connection, sid: int | None, keys: list[BucketKey]
) -> dict[tuple[int, int], tuple[Any, ...]]:
    """Series ``sid``'s stored buckets of ``keys`` (and maybe others between
    them), by (tier, start): one query for all its tiers (a query per bucket
    was ~a fifth of a checkpoint's CPU)."""
    if sid is None:
        return {}
    spans: dict[int, tuple[int, int]] = {}
    for _, _, tier, start in keys:
        lo, hi = spans.get(tier, (start, start))
        spans[tier] = (min(lo, start), max(hi, start))
    selects = [
        f"SELECT {int(tier)}, bucket, {_BUCKET_COLUMNS}, sketch FROM roll_{int(tier)}"
        " WHERE series = ? AND bucket >= ? AND bucket <= ?"
        for tier in spans
    ]
    args = [x for lo, hi in spans.values() for x in (sid, lo, hi)]
    return {(r[0], r[1]): r[2:] for r in conn.execute(" UNION ALL ".join(selects), args)}


def _merged(
    row: tuple[Any, ...] | None, part: Partial, sketch: Sketch | None, tier: int
) -> tuple[Any, ...] | None:
    """The stored bucket ``row`` (its columns and sketch; None: none yet)
    with ``part`` (rows with larger ids than the bucket's) added; None when
    they overlap in time (the bucket needs a recompute)."""
    if row is not None:
        old = Partial(*row[:9])
        old.merge(part)
        if old.inc is None:
            return None
        part = old
        if sketch is not None and row[9] is None:
            sketch = None  # a bucket folded before its tier had sketches: none now either
        elif sketch is not None:
            merged = Sketch.from_bytes(row[9])
            merged.merge(sketch)
            sketch = merged
    return _bucket_row(part, sketch, tier)


#: SQLite's INTEGER is 64-bit: one value always fits (the protocol's limit),
#: a bucket's sum or increase of many may not, and binding it would raise
#: OverflowError in the folder at every retry. Such a total is kept as a REAL
#: (exact to 53 bits) rather than stopping the folder.
_SQL_INT_MIN: Final = -(2**63)
_SQL_INT_MAX: Final = 2**63 - 1


def _sql_number(x: Any) -> Any:
    if type(x) is int and not _SQL_INT_MIN <= x <= _SQL_INT_MAX:
        return float(x)
    return x


def _bucket_row(p: Partial, sketch: Sketch | None, tier: int) -> tuple[Any, ...]:
    """A bucket's columns after (series, bucket) in roll_{tier}."""
    return (p.n, _sql_number(p.sum), p.min, p.max, p.fts, p.fv, p.lts, p.lv, _sql_number(p.inc),
            None if sketch is None else sketch.to_bytes(dense=tier in DENSE_TIERS))  # fmt: skip


def _write_bucket(
    conn: sqlite3.Connection, tier: int, sid: int, start: int, p: Partial, sketch: Sketch | None
) -> None:
    _insert_buckets(conn, tier, [(sid, start, *_bucket_row(p, sketch, tier))])


#: A bucket rebuilt from its raw rows: its Partial and sketch (None: no rows).
Rebuilt = tuple[Partial, Sketch | None] | None


def _recomputed(
    conn: sqlite3.Connection, sql: Sql, key: BucketKey, upto: int
) -> tuple[Rebuilt, list[float]]:
    """One bucket from the raw rows with ``id <= upto`` (no write), and a
    minute's values (for roll_vals)."""
    stream, path, tier, start = key
    values: list[float] = []
    return _rebuilt(conn, sql, stream, path, tier, start, upto, values), values


def _write_recomputed(
    conn: sqlite3.Connection, ids: SeriesIds, key: BucketKey, built: Rebuilt, values: list[float]
) -> None:
    """Write a bucket ``_recomputed`` gave (delete it if it has no rows)."""
    stream, path, tier, start = key
    sid = ids.get(conn, stream, path)
    if tier == MINUTE:
        rollup_vals.write(conn, sid, start, values)
    elif tier == HOUR and path != DOCS:
        rollup_vals.hours_changed(conn, [(sid, start)])
    if built is None:
        conn.execute(f"DELETE FROM roll_{tier} WHERE series = ? AND bucket = ?", (sid, start))
        return
    _write_bucket(conn, tier, sid, start, *built)


def _rebuilt(
    conn: sqlite3.Connection, sql: Sql, stream: Stream, path: str, tier: int, start: int,
    upto: int, values: list[float] | None = None,
) -> tuple[Partial, Sketch | None] | None:  # fmt: skip
    """One bucket computed from the raw rows with ``id <= upto`` (no write);
    its values added to ``values`` if given (a minute's, for roll_vals)."""
    session, kind, name, host, tags = stream
    where = MetricQuery(session=session, name=name, kind=kind)
    points = [
        p
        for p in _raw_points(conn, sql, where, path, start, start + tier, None, upto)
        if p.series.host == host and orjson.dumps(list(p.series.tags)).decode() == tags
    ]
    if not points:
        return None
    points.sort(key=lambda p: (p.ts, p.order))
    vals = [p.value for p in points]
    if values is not None:
        values += vals
    part = Partial.of([p.ts for p in points], vals)
    sketch = None
    if _sketched(tier, path):
        sketch = Sketch()
        sketch.add_values(vals)
    return part, sketch


#: The minute buckets one stored document puts a value into, as
#: ``stream_columns`` folds it: (stream, path, MINUTE, start) for ``DOCS``,
#: ``value`` if a number, and each numeric leaf of its data. Only these keys,
#: never the values: all ``mark_dirty`` needs (building the value lists that
#: ``stream_columns`` builds was ~12% of an API update's CPU in the edit writer).
DocBuckets = list[BucketKey]


def doc_buckets(stream: Stream, ts: float, value: Any, data: Any) -> DocBuckets:
    """The ``DocBuckets`` of a document of ``stream`` (``data`` parsed; a
    non-dict has no leaves): its paths are ``rollup.leaves``', the one rule
    of which leaves a dotted path reaches (a test checks the keys against
    ``stream_columns`` for all documents)."""
    start = int(ts // MINUTE) * MINUTE
    out: DocBuckets = [(stream, DOCS, MINUTE, start)]
    if type(value) is int or type(value) is float:  # booleans are not numbers
        out.append((stream, "value", MINUTE, start))
    if type(data) is dict:
        out += [(stream, path, MINUTE, start) for path, _ in leaves(data)]
    return out


@dataclass(frozen=True, slots=True)
class Touch:
    """One API update or delete of document ``doc_id``: its buckets before and
    after (none once deleted), for ``mark_dirty``."""

    doc_id: int
    before: DocBuckets
    after: DocBuckets


def mark_dirty(conn: sqlite3.Connection, touches: Sequence[Touch]) -> None:
    """After API updates and deletes (``touches``), in the caller's write
    transaction: mark every minute and hour bucket they touch dirty, folded
    or not. Readers read a dirty bucket's raw rows instead of it (``read``),
    so answers are exact the moment the edit commits; the folder rebuilds
    it later (``read_repair``), off the request: rebuilding the buckets in
    the edit's transaction was ~half of an API write's cost, and the write
    lock (which the ingest writer waits on) was held meanwhile."""
    # The minute buckets first, each once (in C): a group's edits mostly
    # share their minutes, and an update mostly keeps its document's buckets.
    minutes: dict[BucketKey, None] = {}
    for t in touches:
        minutes.update(dict.fromkeys(t.before))
        if t.after != t.before:
            minutes.update(dict.fromkeys(t.after))
    keys: dict[tuple[Any, ...], None] = {}
    for stream, path, tier, start in minutes:
        keys[(*stream, path, tier, start)] = None
        for coarse in (TEN_MINUTES, HOUR):
            keys[(*stream, path, coarse, start // coarse * coarse)] = None
    if keys:
        # A bucket marked already, by a mark the repair under way (if any)
        # has not claimed, is not marked again (``claim_dirty``).
        claimed = _claimed(conn)
        conn.executemany(_MARK, [(*key, claimed) for key in keys])


#: A dirty mark, unless its bucket has one past the claimed top (?9). One
#: row per bucket, not one per edit: marked once per edit, the table grew by
#: ~24,000 rows a second under a flat-out PUT load, and the repair that
#: scanned and deleted them (~86,000 every 2 s) held the write lock ~100 ms.
_MARK: Final = (
    "INSERT INTO roll_dirty (session, kind, name, host, tags, path, tier, bucket)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE NOT EXISTS (SELECT 1 FROM roll_dirty"
    " WHERE path = ?6 AND tier = ?7 AND bucket = ?8 AND session = ?1 AND kind = ?2"
    " AND name = ?3 AND host IS ?4 AND tags = ?5 AND rowid > ?9)"
)


def _claimed(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM roll_state WHERE key = 'dirty_top'").fetchone()
    return 0 if row is None else int(row[0])


def claim_dirty(conn: sqlite3.Connection) -> int | None:
    """In a write transaction of its own, before a repair's read snapshot:
    the marks made so far (roll_dirty rowids up to the top returned; None if
    there are none) are the repair's, which ``write_repair`` deletes once
    their buckets are rebuilt, and ``mark_dirty`` marks a bucket again until
    it has a mark past them. Why that is enough: a mark past the claimed top
    is made after the claim, so a later repair claims it, and reads (in a
    snapshot after its claim) every edit that found it there."""
    (top,) = conn.execute("SELECT max(rowid) FROM roll_dirty").fetchone()
    if top is None:
        return None
    conn.execute("INSERT OR REPLACE INTO roll_state (key, value) VALUES ('dirty_top', ?)", (top,))
    return int(top)


def repair_due(conn: sqlite3.Connection) -> bool:
    """Whether a repair has anything to do: marks, and no checkpoint under way."""
    return (
        conn.execute("SELECT 1 FROM roll_pending LIMIT 1").fetchone() is None
        and conn.execute("SELECT 1 FROM roll_dirty LIMIT 1").fetchone() is not None
    )


#: Hours (with their minutes) one repair rebuilds: bounds its write
#: transaction after a mass edit; the next repair takes the next ones.
_REPAIR_HOURS: Final = 200


@dataclass(slots=True)
class Repair:
    """Dirty buckets rebuilt in a read snapshot (``read_repair``) at
    watermark ``mark``, to write with ``write_repair``."""

    mark: int
    #: the last roll_dirty rowid read: marks made after it stay
    top: int
    #: the dirty keys rebuilt, and every bucket written (None: deleted)
    keys: list[BucketKey] = field(default_factory=list)
    rows: list[tuple[BucketKey, tuple[Partial, Sketch | None] | None]] = field(default_factory=list)
    #: (stream, path, minute start, the minute's packed values or rollup_vals.DROP)
    vals: list[tuple[Stream, str, int, bytes]] = field(default_factory=list)


def read_repair(
    conn: sqlite3.Connection, sql: Sql, ids: SeriesIds, top: int, minute_keep_s: float = 0.0
) -> Repair | None:
    """Rebuild up to ``_REPAIR_HOURS`` hours of the buckets dirty by marks
    up to ``top`` (``claim_dirty``), in a read snapshot: minutes from their
    raw rows, each hour from its minutes (the raw rows where minutes may be
    pruned, ``minute_keep_s``, or lack a sketch). Only while the tiers hold
    exactly the documents up to the watermark: no checkpoint under way, and
    the caller (the folder) holds nothing absorbed. None if there is
    nothing to do."""
    if conn.execute("SELECT 1 FROM roll_pending LIMIT 1").fetchone() is not None:
        return None
    rep = Repair(watermark(conn), top)
    hours: dict[tuple[Stream, str, int], list[tuple[int, int]]] = defaultdict(list)
    for row in conn.execute(
        "SELECT DISTINCT session, kind, name, host, tags, path, tier, bucket FROM roll_dirty"
        " WHERE rowid <= ?",
        (top,),
    ):
        hours[row[:5], row[5], row[7] // HOUR * HOUR].append((row[6], row[7]))
    for (stream, path, hour), keys in islice(hours.items(), _REPAIR_HOURS):
        minutes: dict[int, tuple[Partial, Sketch | None] | None] = {}
        for tier, start in sorted(keys):  # minutes first: the others are built from them
            rep.keys.append((stream, path, tier, start))
            if tier == MINUTE:
                values: list[float] = []
                minutes[start] = built = _rebuilt(
                    conn, sql, stream, path, MINUTE, start, rep.mark, values
                )
                rep.rows.append(((stream, path, MINUTE, start), built))
                rep.vals.append((stream, path, start, rollup_vals.pack(values) or rollup_vals.DROP))
            elif tier != HOUR:
                key = (stream, path, tier, start)
                built = _coarse_built(conn, sql, ids, key, minutes, rep.mark, minute_keep_s)
                rep.rows.append((key, built))
        key = (stream, path, HOUR, hour)
        built = _coarse_built(conn, sql, ids, key, minutes, rep.mark, minute_keep_s)
        rep.rows.append((key, built))
    return rep


def _coarse_built(
    conn: sqlite3.Connection,
    sql: Sql,
    ids: SeriesIds,
    key: BucketKey,
    fresh: dict[int, tuple[Partial, Sketch | None] | None],
    upto: int,
    minute_keep_s: float,
) -> tuple[Partial, Sketch | None] | None:
    """A ``tier`` bucket (ten minutes, an hour) from its minutes (the stored
    ones, ``fresh`` ones instead where rebuilt): an hour of raw rows is
    thousands, a repair of many hours read that way held up the folder for
    seconds. From the raw rows where the minutes cannot be trusted to add up."""
    stream, path, tier, start = key
    end = start + tier
    if minute_keep_s > 0 and start < time.time() - minute_keep_s + tier:
        return _rebuilt(conn, sql, stream, path, tier, start, upto)  # minutes may be pruned
    sid = ids.find(conn, stream, path)
    minutes: dict[int, tuple[Partial, Sketch | None] | None] = {}
    if sid is not None:
        for row in conn.execute(
            f"SELECT bucket, {_BUCKET_COLUMNS}, sketch FROM roll_{MINUTE}"
            " WHERE series = ? AND bucket >= ? AND bucket < ?",
            (sid, start, end),
        ):
            minutes[row[0]] = (
                Partial(*row[1:10]),
                None if row[10] is None else Sketch.from_bytes(row[10]),
            )
    minutes.update((m, built) for m, built in fresh.items() if start <= m < end)
    pieces = [built for _, built in sorted(minutes.items()) if built is not None]
    if not pieces:
        return None
    # (None: a minute folded before minutes had sketches, or overlaps)
    return _coarse(pieces, path, tier) or _rebuilt(conn, sql, stream, path, tier, start, upto)


def _coarse(
    pieces: Iterable[tuple[Partial, Sketch | None]], path: str, tier: int, strict: bool = True
) -> tuple[Partial, Sketch | None] | None:
    """A ``tier`` bucket merged from its finer buckets (in time order, at
    least one). None where they cannot make it exactly: the increase lost to
    an overlap, or (``strict``) a piece without the sketch ``tier`` keeps;
    not ``strict``: then the bucket has no sketch either (readers take a
    finer tier for percentiles, as for buckets folded before sketches)."""
    total: Partial | None = None
    sketch = Sketch() if _sketched(tier, path) else None
    for part, finer in pieces:
        if sketch is None:
            pass
        elif finer is not None:
            sketch.merge(finer)
        elif path == DOCS:  # a minute of documents keeps no sketch: its values are all 1
            sketch.add_values([1] * part.n)
        elif strict:
            return None
        else:
            sketch = None
        if total is None:
            total = part.copy()
        else:
            total.merge(part)  # disjoint in time, in time order: inc stays exact
    if total is None or total.inc is None:
        return None
    return total, sketch


def _densify_ten_minutes(conn: sqlite3.Connection) -> None:
    """Rewrite the ten-minute sketches in the dense form (schema migration,
    in its transaction): ~12 s for the ~330,000 of 10M samples, where a
    reload would take ~40 min."""
    conn.create_function("dw_dense", 1, _dense_again, deterministic=True)
    conn.execute(
        f"UPDATE roll_{TEN_MINUTES} SET sketch = dw_dense(sketch) WHERE sketch IS NOT NULL"
    )


def _dense_again(stored: bytes | str) -> bytes:
    return Sketch.from_bytes(stored).to_bytes(dense=True)


#: A later schema migration: the ten-minute sketches dense (``DENSE_TIERS``).
MIGRATION_DENSE: Final = (_densify_ten_minutes,)

#: Ten-minute buckets the migration holds in memory between two writes.
_BUILD_BATCH: Final = 2_000


def _build_ten_minutes(conn: sqlite3.Connection) -> None:
    """Fill ``roll_600`` from the stored minutes (schema migration, in its
    transaction): a store folded before this tier needs no fold again.
    ~10 s for the ~10^6 minutes of 10M samples. A ten-minute bucket with a
    minute that has no sketch gets none (see ``_coarse``)."""
    rows = conn.execute(
        f"SELECT b.series, s.path, b.bucket, {', '.join('b.' + c for c in _BUCKET_COLUMNS.split(', '))},"
        f" b.sketch FROM roll_{MINUTE} AS b JOIN roll_series AS s ON s.id = b.series"
        " ORDER BY b.series, b.bucket"
    )
    out: list[tuple[Any, ...]] = []
    lost: list[tuple[int, int]] = []
    for (sid, path, start), group in groupby(rows, _ten_of):
        pieces = [
            (Partial(*r[3:12]), None if r[12] is None else Sketch.from_bytes(r[12])) for r in group
        ]
        built = _coarse(pieces, path, TEN_MINUTES, strict=False)
        if built is None:  # (minutes never overlap: kept exact all the same)
            lost.append((sid, start))
            continue
        out.append((sid, start, *_bucket_row(*built, TEN_MINUTES)))
        if len(out) >= _BUILD_BATCH:
            _insert_buckets(conn, TEN_MINUTES, out)
            out.clear()
    _insert_buckets(conn, TEN_MINUTES, out)
    conn.executemany(  # read raw until a repair rebuilds them
        "INSERT INTO roll_dirty (session, kind, name, host, tags, path, tier, bucket)"
        f" SELECT {_SERIES_COLUMNS}, path, {TEN_MINUTES}, ? FROM roll_series WHERE id = ?",
        [(start, sid) for sid, start in lost],
    )


def _ten_of(row: tuple[Any, ...]) -> tuple[int, str, int]:
    return row[0], row[1], row[2] // TEN_MINUTES * TEN_MINUTES


def _insert_buckets(conn: sqlite3.Connection, tier: int, rows: list[tuple[Any, ...]]) -> None:
    """Write ``(series, bucket, *_bucket_row(...))`` rows into ``roll_{tier}``."""
    conn.executemany(
        f"INSERT OR REPLACE INTO roll_{tier} (series, bucket, {_BUCKET_COLUMNS}, sketch)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


#: A later schema migration: the ten-minute tier, built from the minutes, and
#: dirty marks for it wherever a minute is marked.
MIGRATION_TEN_MINUTES: Final = (
    _TIER_TABLE.format(tier=TEN_MINUTES),
    "INSERT INTO roll_dirty (session, kind, name, host, tags, path, tier, bucket)"
    f" SELECT DISTINCT session, kind, name, host, tags, path, {TEN_MINUTES},"
    f" bucket / {TEN_MINUTES} * {TEN_MINUTES} FROM roll_dirty WHERE tier = {MINUTE}",
    _build_ten_minutes,
)


def write_repair(conn: sqlite3.Connection, ids: SeriesIds, rep: Repair) -> bool:
    """Write ``rep`` in the caller's write transaction and clear the dirty
    marks it covers; False (nothing written) if the tiers moved since it was
    read. A bucket an edit marked again meanwhile stays dirty: still read
    raw, rebuilt by the next repair. The claim ends either way."""
    conn.execute("DELETE FROM roll_state WHERE key = 'dirty_top'")
    if watermark(conn) != rep.mark:
        return False
    if conn.execute("SELECT 1 FROM roll_pending LIMIT 1").fetchone() is not None:
        return False
    for (stream, path, tier, start), built in rep.rows:
        if built is None:
            sid = ids.find(conn, stream, path)
            if sid is not None:
                conn.execute(
                    f"DELETE FROM roll_{tier} WHERE series = ? AND bucket = ?", (sid, start)
                )
        else:
            _write_bucket(conn, tier, ids.get(conn, stream, path), start, *built)
        if tier == HOUR and path != DOCS and (sid := ids.find(conn, stream, path)) is not None:
            rollup_vals.hours_changed(conn, [(sid, start)])
    rollup_vals.write_many(conn, [(ids.get(conn, *v[:2]), *v[2:]) for v in rep.vals])
    conn.executemany(
        "DELETE FROM roll_dirty WHERE path = ? AND tier = ? AND bucket = ? AND session = ?"
        " AND kind = ? AND name = ? AND host IS ? AND tags = ? AND rowid <= ?",
        [(path, tier, start, *stream, rep.top) for stream, path, tier, start in rep.keys],
    )
    # A checkpoint step merged in a read snapshot must merge again.
    conn.execute("UPDATE roll_state SET value = value + 1 WHERE key = 'edits'")
    return True


def raw_hours(conn: sqlite3.Connection) -> Callable[[int, int], list[float] | None]:
    """``rollup_vals.read_hours``' ``raw``: the values of a (series, hour)
    in the raw rows the tiers hold (up to the watermark), each stream's hour
    read and parsed once for all its paths."""
    mark = watermark(conn)
    memo: dict[tuple[Any, ...], dict[str, list[float]]] = {}

    def raw(series: int, start: int) -> list[float] | None:
        row = conn.execute(
            f"SELECT {_SERIES_COLUMNS}, path FROM roll_series WHERE id = ?", (series,)
        ).fetchone()
        if row is None:
            return None
        key = (*row[:5], start)
        if key not in memo:
            memo.clear()  # one stream's hour at a time
            memo[key] = _hour_columns(conn, row[:5], start, mark)
        return memo[key].get(row[5])

    return raw


def _hour_columns(
    conn: sqlite3.Connection, stream: Stream, start: int, mark: int
) -> dict[str, list[float]]:
    session, kind, name, host, tags = stream
    rows = conn.execute(
        "SELECT id, session, kind, name, host, tags, ts, value, data FROM docs WHERE session = ?"
        " AND ts >= ? AND ts < ? AND id <= ? AND kind = ? AND name = ? AND host IS ? AND tags = ?",
        (session, start, start + HOUR, mark, kind, name, host, tags),
    ).fetchall()
    out: dict[str, list[float]] = defaultdict(list)
    for srows in _stream_rows(rows).values():
        for (path, _minute), (_tss, vals) in stream_columns(srows, MINUTE).items():
            out[path] += vals
    return out


#: Tables keyed by (series, bucket) of a tier beside its own (rollup_vals.py).
_BESIDE: Final = {MINUTE: ("roll_vals",), HOUR: ("roll_hvals", "roll_hbuild")}


def prune(
    conn: sqlite3.Connection, retention_s: dict[int, float], now: float | None = None
) -> None:
    """Drop tier buckets older than their tier's retention (0: keep forever)."""
    now = time.time() if now is None else now
    series = [sid for (sid,) in conn.execute("SELECT id FROM roll_series")]
    # Ten minutes live as long as minutes: a window's edges read both.
    retention_s = {TEN_MINUTES: retention_s.get(MINUTE, 0.0), **retention_s}
    for tier, keep in retention_s.items():
        if keep > 0:
            cutoff = now - keep
            tables = [f"roll_{tier}", *_BESIDE.get(tier, ())]
            for table in tables:
                conn.executemany(
                    f"DELETE FROM {table} WHERE series = ? AND bucket < ?",
                    [(sid, cutoff) for sid in series],
                )


# -- thresholds ---------------------------------------------------------------
# "hosts with cpu over 90 in the last hour" at 1M noisy samples cuts ~6,000
# minute buckets. Handed to the engine one by one (a Bucket, a Partial, a
# bisection and an accumulation each) they took ~0.5-1 s of Python at load;
# here the buckets wholly passing are merged in SQL, the wholly failing ones
# are never read, and each cut minute's passing values (rollup_vals.py) are
# added up in one tight loop per series and slice
# (``RollupRequest.passing_span``).


def _passing_buckets(
    conn: sqlite3.Connection, req: RollupRequest, tier: int, where: str, params: list[Any]
) -> list[Bucket] | None:
    """``roll_{tier}``'s buckets (``b``) of ``where`` (``_tier_where``) reduced to what
    passes ``req.raw_filter``: a bucket (no first/last values, no increase)
    per series and ``passing_span`` slice, plus the cut buckets
    whose values are not stored, one by one at ``tier``. None where ``req``
    does not ask for it (the caller reads as usual)."""
    f, span = req.raw_filter, req.passing_span
    if span is None or f is None or f[0] not in _RAW_OPS or req.path == DOCS or req.sketches:
        return None
    op, number = f[0], float(f[1])
    keys = _SeriesKeys(req.path)
    # Wholly passing: merged in SQL (total(): a sum of integers may pass 64 bits).
    whole = [*params, number, number]
    group = _slice_sql("b.bucket", span, whole)
    rest = f"{where} AND b.min {op} ? AND b.max {op} ? GROUP BY docs.id{group}"
    out = _merged_buckets(conn, req.path, tier, _tier_merge("total"), rest, whole)
    # Cut: each minute's (or hour's: its one chunk where the threshold
    # falls) passing values, summed per series and slice here.
    vals_sql, vals_params = "NULL", []
    if tier == MINUTE and req.vals:
        vals_sql = (
            "(SELECT v.vals FROM roll_vals AS v WHERE v.series = b.series AND v.bucket = b.bucket)"
        )
    elif tier == HOUR and req.vals:
        vals_sql, vals_params = rollup_vals.hour_sql(op), [number]
    sums: dict[tuple[int, float], list[Any]] = {}
    whole_series: dict[int, tuple[Any, ...]] = {}  # id -> its docs columns, when needed
    totals, hour_totals = rollup_vals.totals, rollup_vals.hour_totals
    # (the series' id, not its five text columns: ~6,000 rows at 1M samples)
    for row in conn.execute(
        f"SELECT docs.id, b.bucket, {_BUCKET_COLUMNS}, {vals_sql} {where}"
        f" AND (b.min {op} ?) != (b.max {op} ?)",
        [*vals_params, *params, number, number],
    ):
        if row[11] is None:
            got = None
        elif tier == MINUTE:
            got = totals(row[11], op, number)
        else:
            got = hour_totals(row[11], op, number, row[2], row[4], row[5])
        if got is None:  # values not stored: the engine reads its raw rows
            out.append(Bucket(keys[_series_columns(conn, whole_series, row[0])], tier, row[1],
                              Partial(*row[2:11])))  # fmt: skip
            continue
        n, total, low, high = got
        key = (row[0], row[1] // span if span else 0)
        acc = sums.get(key)
        if acc is None:  # start, n, sum, min, max, first ts, last ts
            sums[key] = [row[1], n, total, low, high, row[6], row[8]]
            continue
        acc[1] += n
        acc[2] += total
        if low < acc[3]:
            acc[3] = low
        if high > acc[4]:
            acc[4] = high
        if row[1] < acc[0]:
            acc[0], acc[5] = row[1], row[6]
        if row[8] > acc[6]:
            acc[6] = row[8]
    for (sid, _), (start, n, total, low, high, fts, lts) in sums.items():
        series = keys[_series_columns(conn, whole_series, sid)]
        out.append(Bucket(series, tier, start, _merged_part(n, total, low, high, fts, lts)))
    return out


def _series_columns(
    conn: sqlite3.Connection, known: dict[int, tuple[Any, ...]], sid: int
) -> tuple[Any, ...]:
    """Series ``sid``'s (session, kind, name, host, tags), read once."""
    cols = known.get(sid)
    if cols is None:
        known[sid] = cols = conn.execute(
            f"SELECT {_SERIES_COLUMNS} FROM roll_series WHERE id = ?", (sid,)
        ).fetchone()
    return cols
