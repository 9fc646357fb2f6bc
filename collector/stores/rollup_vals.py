"""The exact values of a minute bucket, sorted and packed: thresholds without JSON.

A threshold ("cpu over 90") keeps the tier buckets wholly above it and drops
those wholly below (min and max say which); a bucket it cuts needs its
values. On noisy data nearly every minute bucket is cut, and reading them
back as raw rows means ``json_extract`` of every document: 3.6 s for 1.08M
rows here, where the goal is p95 < 100 ms. So the SQLite store keeps a copy
of each minute bucket's values (``roll_vals``, one row per bucket, written
with the bucket in the same transaction), sorted: the values that pass are
one slice found by bisection, and their count, sum, min and max follow
without parsing anything.

Packed as a tag byte and an array: integers (all of them int, within 64 bits)
as offsets from the smallest, in the narrowest unsigned width that holds the
largest (a counter's minute is 2-4 bytes a value); anything else as float64.
A bucket whose values are all equal (min == max: a threshold never cuts it)
and the document counts (``DOCS``, all 1) have no row. Where a bucket with
min < max has no row (folded before this table existed, or by the MongoDB
store) a threshold reads its raw rows, as before.
"""

from __future__ import annotations

import math
import sqlite3
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from .rollup import DOCS, HOUR, MINUTE, RollupRequest

__all__ = [
    "BUILD_AFTER_S",
    "BUILD_HOURS",
    "DROP",
    "HOUR_CHUNK",
    "MAX_VALUES",
    "MIGRATION",
    "MIGRATION_HOURS",
    "BuiltHour",
    "Passing",
    "cut_sql",
    "delete",
    "hour_chunks",
    "hour_sql",
    "hour_totals",
    "hours_changed",
    "merged",
    "pack",
    "passing",
    "read_hours",
    "totals",
    "values",
    "write",
    "write_hours",
    "write_many",
]

#: Schema migration of ``sqlite.py``: one row per minute bucket of ``roll_60``
#: that a threshold may cut. A table of its own, not a column: the blobs
#: (hundreds of bytes) would spread every other read of the minute tier over
#: several times the pages.
MIGRATION: Final = (
    """CREATE TABLE roll_vals (
        series INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        vals BLOB NOT NULL,
        PRIMARY KEY (series, bucket)
    ) WITHOUT ROWID""",
)

#: Most values one minute bucket keeps. The folder rewrites a bucket's values
#: at every checkpoint that adds to it (every ~2 s): a minute of a 1 Hz
#: stream is ~60 values, but one of a 1,000 Hz stream would be re-sorted and
#: re-packed whole hundreds of times. Past this a minute keeps none, and a
#: threshold that cuts it reads its raw rows.
MAX_VALUES: Final = 1024

_FLOATS: Final = b"d"
_INTS: Final = b"i"
#: after _INTS: the smallest value and the offsets' array typecode
_INT_HEAD: Final = struct.Struct("<cqc")
_WIDTHS: Final = (("B", 0xFF), ("H", 0xFFFF), ("I", 0xFFFF_FFFF), ("Q", 2**64 - 1))
_INT64: Final = (-(2**63), 2**63 - 1)
#: Integers a float64 holds exactly (beside floats, ints are kept as float64).
_EXACT: Final = 2**53
_SWAP: Final = sys.byteorder != "little"


def pack(values: Sequence[float]) -> bytes | None:
    """``values`` sorted and packed; None where no row is needed (no two
    values differ) or kept (more than ``MAX_VALUES``; an integer past 64 bits)."""
    if not values or len(values) > MAX_VALUES:
        return None
    ordered = sorted(values)
    if ordered[0] == ordered[-1]:
        return None
    return _packed(ordered)


def _packed(ordered: Sequence[float]) -> bytes | None:
    """Sorted ``ordered`` (at least one) packed; None if an integer is past 64 bits."""
    low, high = ordered[0], ordered[-1]
    kinds = set(map(type, ordered))
    if kinds == {int}:
        if low < _INT64[0] or high > _INT64[1]:
            return None
        span = high - low
        code = next(c for c, most in _WIDTHS if span <= most)
        offsets = array(code, [v - low for v in ordered])
        if _SWAP:
            offsets.byteswap()
        return _INT_HEAD.pack(_INTS, low, code.encode()) + offsets.tobytes()
    if int in kinds and (low < -_EXACT or high > _EXACT):
        return None  # an int that a float64 would round
    floats = array("d", ordered)
    if _SWAP:
        floats.byteswap()
    return _FLOATS + floats.tobytes()


@dataclass(frozen=True, slots=True)
class Passing:
    """The values of a bucket that pass a threshold (at least one)."""

    n: int
    sum: float
    min: float
    max: float
    _sorted: Sequence[Any]
    _base: int

    def values(self) -> list[float]:
        """Each passing value, sorted (a percentile's sketch: made only then)."""
        return list(map(self._base.__add__, self._sorted)) if self._base else list(self._sorted)


def _unpack(blob: bytes) -> tuple[Sequence[Any], int | None]:
    """The sorted numbers (a view of ``blob``: no copy) and the number to add
    to each (None: the numbers are float64 values)."""
    if blob[:1] == _INTS:
        _, base, code = _INT_HEAD.unpack_from(blob)
        at, typecode = _INT_HEAD.size, code.decode()
    else:
        base, at, typecode = None, 1, "d"
    if not _SWAP:
        return memoryview(blob)[at:].cast(typecode), base
    arr = array(typecode, blob[at:])
    arr.byteswap()
    return arr, base


def values(blob: bytes) -> list[float]:
    """Every value, sorted."""
    arr, base = _unpack(blob)
    return list(arr) if base is None else list(map(base.__add__, arr))


def _slice(arr: Sequence[Any], base: int | None, op: str, x: float) -> Sequence[Any]:
    """The elements whose value (``base + element``) compares ``op`` with ``x``."""
    i = _cut_at(arr, base, op, x)
    return arr[i:] if op in _ABOVE else arr[:i]


#: The operators whose passing values are the top of a sorted array.
_ABOVE: Final = frozenset({">", ">="})


def _cut_at(arr: Sequence[Any], base: int | None, op: str, x: float) -> int:
    """Where the sorted ``arr`` divides into the values that pass ``op x`` and
    the rest: those pass from there on (> >=), or before it (< <=)."""
    low: float = x
    high: float = x
    if base is not None:
        # base + n is an int: > x is > floor(x), >= x is >= ceil(x) (exact:
        # Python's ints have no bound), so the offsets compare with ints
        low, high = math.floor(x) - base, math.ceil(x) - base
    if op in (">", "<="):
        return bisect_right(arr, low)
    if op in (">=", "<"):
        return bisect_left(arr, high)
    raise ValueError(f"not a threshold operator: {op!r}")


def passing(blob: bytes, op: str, number: float) -> Passing | None:
    """The values in ``blob`` that compare ``op`` (> >= < <=) with ``number``
    exactly as the raw values would (ints compared as ints); None if none."""
    arr, base = _unpack(blob)
    cut = _slice(arr, base, op, number)
    got = _totals(cut, base)
    return None if got is None else Passing(*got, cut, base or 0)


def totals(blob: bytes, op: str, number: float) -> tuple[int, float, float, float] | None:
    """``passing``'s count, sum, min and max only (a threshold's hot loop)."""
    arr, base = _unpack(blob)
    return _totals(_slice(arr, base, op, number), base)


def _totals(cut: Sequence[Any], base: int | None) -> tuple[int, float, float, float] | None:
    n = len(cut)
    if not n:
        return None
    if base is None:
        return n, sum(cut), cut[0], cut[-1]
    return n, sum(cut) + base * n, cut[0] + base, cut[-1] + base


# -- SQLite: roll_vals beside roll_60 ---------------------------------------------------

#: The comparisons spliced into ``cut_sql``'s SQL.
_OPS: Final = frozenset({">", ">=", "<", "<="})


def cut_sql(req: RollupRequest, tier: int) -> tuple[str, list[float]]:
    """The select-list term of a ``roll_{tier} AS b`` read for ``req`` that
    brings a bucket's packed values where ``req.vals`` asks and its
    ``raw_filter`` cuts it (else NULL), and its parameters. The values of
    buckets wholly in or out are never read (nor their pages)."""
    f = req.raw_filter
    if not req.vals or tier != MINUTE or f is None or f[0] not in _OPS or req.path == DOCS:
        return "NULL", []
    op, number = f[0], float(f[1])
    return (
        f"CASE WHEN (b.min {op} ?) != (b.max {op} ?) THEN (SELECT v.vals FROM roll_vals AS v"
        " WHERE v.series = b.series AND v.bucket = b.bucket) END",
        [number, number],
    )


def write(conn: sqlite3.Connection, series: int, bucket: int, vals: Sequence[float]) -> None:
    """Store (or drop) the values of minute bucket ``bucket`` of ``series``,
    rebuilt from all its values; in the transaction that writes the bucket."""
    blob = pack(vals)
    if blob is None:
        delete(conn, series, bucket)
    else:
        conn.execute(
            "INSERT OR REPLACE INTO roll_vals (series, bucket, vals) VALUES (?, ?, ?)",
            (series, bucket, blob),
        )


def delete(conn: sqlite3.Connection, series: int, bucket: int) -> None:
    conn.execute("DELETE FROM roll_vals WHERE series = ? AND bucket = ?", (series, bucket))


#: ``merged``'s answer where the stored row must go (see ``write_many``).
DROP: Final = b""


def merged(
    conn: sqlite3.Connection, series: int | None, bucket: int, new: Sequence[float]
) -> bytes | None:
    """The packed values of a stored minute bucket with ``new`` (values of
    later documents) added; None where there is no row to write (none is
    needed, or the stored bucket's values are not known: no row although its
    min < max), ``DROP`` where the stored row must go."""
    if series is not None:
        row = conn.execute(
            "SELECT b.n, b.min, b.max, v.vals FROM roll_60 AS b LEFT JOIN roll_vals AS v"
            " ON v.series = b.series AND v.bucket = b.bucket"
            " WHERE b.series = ? AND b.bucket = ?",
            (series, bucket),
        ).fetchone()
        if row is not None:
            n, low, high, blob = row
            if n + len(new) > MAX_VALUES:
                return None if blob is None else DROP
            if blob is not None:
                out = _pack_more(blob, new)
                return DROP if out is None else out
            if low != high:
                return None  # folded before roll_vals: unknown (raw reads)
            return pack([*([low] * n), *new])
    return pack(new)


def _pack_more(blob: bytes, new: Sequence[float]) -> bytes | None:
    """``pack([*values(blob), *new])``: the same bytes, sorted and packed by
    numpy where the stored values and ``new`` (the folder's array) are of
    one kind, all float64 or all int64: the folder merges every minute it
    adds to at every checkpoint, and one Python number per value was a
    sixth of its CPU."""
    if isinstance(new, array) and blob[:1] == new.typecode.encode() == _FLOATS:
        both = np.concatenate((np.frombuffer(blob, "<f8", offset=1), np.frombuffer(new, "=f8")))
        both.sort(kind="stable")  # (as sorted() orders equal floats, -0.0 and 0.0)
        if both[0] == both[-1]:
            return None
        return _FLOATS + both.astype("<f8", copy=False).tobytes()
    if isinstance(new, array) and new.typecode == "q" and blob[:1] == _INTS:
        _, base, code = _INT_HEAD.unpack_from(blob)
        stored = np.frombuffer(
            blob, np.dtype(code.decode()).newbyteorder("<"), offset=_INT_HEAD.size
        )
        # int64 arithmetic wraps: every value and difference is exact modulo
        # 2**64, and each value fits int64, each offset uint64 (as packed).
        ints = np.concatenate(
            (stored.astype(np.int64) + np.int64(base), np.frombuffer(new, np.int64))
        )
        ints.sort(kind="stable")
        low, high = int(ints[0]), int(ints[-1])
        if low == high:
            return None
        width = next(c for c, most in _WIDTHS if high - low <= most)
        offsets = (ints - np.int64(low)).view(np.uint64)
        packed = offsets.astype(np.dtype(width).newbyteorder("<"), copy=False)
        return _INT_HEAD.pack(_INTS, low, width.encode()) + packed.tobytes()
    return pack([*values(blob), *new])


def write_many(conn: sqlite3.Connection, rows: Sequence[tuple[int, int, bytes]]) -> None:
    """(series, bucket, ``merged``'s blob) rows, in the folder's write transaction."""
    conn.executemany(
        "INSERT OR REPLACE INTO roll_vals (series, bucket, vals) VALUES (?, ?, ?)",
        [r for r in rows if r[2] != DROP],
    )
    conn.executemany(
        "DELETE FROM roll_vals WHERE series = ? AND bucket = ?",
        [r[:2] for r in rows if r[2] == DROP],
    )


# -- SQLite: an hour's values in sorted chunks (roll_hvals) --------------------------------
# On noisy data a threshold cuts every minute ("cpu over 80" at 10M samples:
# ~167,000 minutes, every value read: past the 10 s deadline). An hour's values,
# sorted and cut into chunks of ``HOUR_CHUNK`` keyed by their first value, let
# the b-tree find the one chunk where the threshold divides them: a cut hour
# costs one index seek and one small page, whatever its size. Each chunk knows
# how many values and what sum come before and after it, so the count, sum, min
# and max of what passes follow from that chunk alone.
#
# Built by the folder from the stored minute values once an hour is over
# (``BUILD_AFTER_S``): rebuilding a live hour at every checkpoint would cost
# the folder an hour's sort every two seconds. Every write or delete of an
# hour bucket marks it to build again (``hours_changed``, ``roll_hbuild``), and
# readers ignore the chunks of a marked hour: stale chunks are never read.

#: Schema migration of ``sqlite.py``: the chunks, and the hours to build; the
#: hours of a store folded before are marked, so the folder builds them from
#: their minutes' values (no reload). Idempotent: a test that sets a store's
#: version back to replay an earlier migration replays this one too.
MIGRATION_HOURS: Final = (
    """CREATE TABLE IF NOT EXISTS roll_hvals (
        series INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        lo NOT NULL,
        chunk INTEGER NOT NULL,
        vals BLOB NOT NULL,
        PRIMARY KEY (series, bucket, lo, chunk)
    ) WITHOUT ROWID""",
    # (keyed by time first: the folder takes the oldest hours over, in order)
    """CREATE TABLE IF NOT EXISTS roll_hbuild (
        series INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        PRIMARY KEY (bucket, series)
    ) WITHOUT ROWID""",
    f"""INSERT OR IGNORE INTO roll_hbuild (series, bucket)
        SELECT b.series, b.bucket FROM roll_{HOUR} AS b JOIN roll_series AS s ON s.id = b.series
        WHERE s.path != '' AND b.min < b.max""",
)

#: Values per chunk: 64 float64 (~550 bytes with its header) stay inside one
#: b-tree page of a WITHOUT ROWID table (SQLite moves a row past ~1,000 bytes
#: of a 4 KiB page to overflow pages), so a cut hour reads one page.
HOUR_CHUNK: Final = 64
#: Hours built per write transaction: ~1-3 ms each (an hour of 1 Hz values
#: sorted and packed), so the transaction stays short beside the writer's.
BUILD_HOURS: Final = 16
#: An hour is built this long after its end: late documents of a live stream
#: mostly come before, and each one after marks it to build again.
BUILD_AFTER_S: Final = 120

#: A chunk's header: the values before it, then (tagged numbers) the first
#: value after it, the sum of the values before it and of those after it.
_RANK: Final = struct.Struct("<q")
_TAGGED_INT: Final = struct.Struct("<cq")
_TAGGED_FLOAT: Final = struct.Struct("<cd")
_NONE: Final = b"n" + bytes(8)


def _tagged(x: float | None) -> bytes | None:
    if x is None:
        return _NONE
    if type(x) is int:
        return _TAGGED_INT.pack(b"q", x) if _INT64[0] <= x <= _INT64[1] else None
    return _TAGGED_FLOAT.pack(b"d", x)


def _untagged(blob: bytes, at: int) -> float | None:
    tag = blob[at : at + 1]
    if tag == b"q":
        return int(_TAGGED_INT.unpack_from(blob, at)[1])
    if tag == b"d":
        return float(_TAGGED_FLOAT.unpack_from(blob, at)[1])
    return None


_HEAD: Final = _RANK.size + 3 * _TAGGED_INT.size


def hour_chunks(
    values: Sequence[float], size: int | None = None
) -> list[tuple[float, int, bytes]] | None:
    """An hour's ``values`` as (first value, chunk number, blob) rows of
    ``roll_hvals``, ``size`` values a chunk (default ``HOUR_CHUNK``); None
    where none are kept (fewer than two distinct values, a number past 64 bits)."""
    size = size or HOUR_CHUNK
    ordered = sorted(values)
    if not ordered or ordered[0] == ordered[-1]:
        return None
    pieces = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    sums = [sum(p) for p in pieces]
    # (each side summed from its own end: what passes is never a difference)
    below: list[float] = [0]
    for s in sums[:-1]:
        below.append(below[-1] + s)
    above: list[float] = [0]
    for s in reversed(sums[1:]):
        above.append(above[-1] + s)
    above.reverse()
    out = []
    for k, piece in enumerate(pieces):
        nxt = pieces[k + 1][0] if k + 1 < len(pieces) else None
        head = [_tagged(nxt), _tagged(below[k]), _tagged(above[k]), _packed(piece)]
        if None in head:
            return None
        out.append((piece[0], k, _RANK.pack(k * size) + b"".join(h for h in head if h)))
    return out


def hour_sql(op: str) -> str:
    """The select-list term of a ``roll_3600 AS b`` read: the chunk of ``b``'s
    values where ``op`` with the threshold (its one parameter) divides them;
    NULL if none is built (or ``b`` is marked to build again)."""
    if op not in _OPS:
        raise ValueError(f"not a threshold operator: {op!r}")
    # > and <=: the last chunk starting at or below x; >= and <: below it
    cmp = "<=" if op in (">", "<=") else "<"
    return (
        "(SELECT c.vals FROM roll_hvals AS c WHERE c.series = b.series AND c.bucket = b.bucket"
        f" AND c.lo {cmp} ? AND NOT EXISTS (SELECT 1 FROM roll_hbuild AS p"
        " WHERE p.series = b.series AND p.bucket = b.bucket)"
        " ORDER BY c.lo DESC, c.chunk DESC LIMIT 1)"
    )


def hour_totals(
    blob: bytes, op: str, x: float, n: int, low: float, high: float
) -> tuple[int, float, float, float] | None:
    """The count, sum, min and max of the values of an hour (``n`` values from
    ``low`` to ``high``) that pass ``op x``, from the chunk ``hour_sql``
    found; None if nothing passes or the chunk is not where ``x`` divides."""
    (rank,) = _RANK.unpack_from(blob)
    nxt = _untagged(blob, _RANK.size)
    arr, base = _unpack(blob[_HEAD:])
    # (SQL compared the chunk's first value; checked again here, exactly)
    first = arr[0] + (base or 0)
    above = op in _ABOVE
    if op in (">", "<="):
        if not (first <= x and (nxt is None or nxt > x)):
            return None
    elif not (first < x and (nxt is None or nxt >= x)):
        return None
    i = _cut_at(arr, base, op, x)
    m = len(arr)
    add = base or 0
    if above:
        k = m - i
        count = n - rank - i
        if not count:
            return None
        rest = _untagged(blob, _RANK.size + 2 * _TAGGED_INT.size) or 0
        total = rest + sum(arr[i:]) + add * k
        least = arr[i] + add if i < m else nxt
        return count, total, least, high  # type: ignore[return-value]
    count = rank + i
    if not count or not i:
        return None
    before = _untagged(blob, _RANK.size + _TAGGED_INT.size) or 0
    return count, before + sum(arr[:i]) + add * i, low, arr[i - 1] + add


def hours_changed(conn: sqlite3.Connection, keys: Sequence[tuple[int, int]]) -> None:
    """(series, hour) buckets written or deleted: their chunks are stale until built again."""
    conn.executemany("INSERT OR IGNORE INTO roll_hbuild (series, bucket) VALUES (?, ?)", keys)


#: (series, hour, its chunk rows or None: none to keep)
BuiltHour = tuple[int, int, "list[tuple[float, int, bytes]] | None"]


def read_hours(
    conn: sqlite3.Connection,
    before: float,
    limit: int,
    raw: Callable[[int, int], Sequence[float] | None],
) -> list[BuiltHour]:
    """Up to ``limit`` marked hours that start before ``before``, built from
    their minutes' stored values, or where a minute has none (folded before
    ``roll_vals``, or too many) from ``raw(series, hour)``: the raw values the
    hour holds. In a read snapshot (no write); none while a checkpoint is
    under way (some series hold more than the watermark says)."""
    if conn.execute("SELECT 1 FROM roll_pending LIMIT 1").fetchone() is not None:
        return []
    return [
        (series, bucket, _hour_values(conn, series, bucket, raw))
        # (in time order: a stream's paths come together, its raw rows read once)
        for series, bucket in conn.execute(
            "SELECT series, bucket FROM roll_hbuild WHERE bucket < ? ORDER BY bucket, series"
            " LIMIT ?",
            (before, limit),
        ).fetchall()
    ]


def _hour_values(
    conn: sqlite3.Connection,
    series: int,
    bucket: int,
    raw: Callable[[int, int], Sequence[float] | None],
) -> list[tuple[float, int, bytes]] | None:
    hour = conn.execute(
        f"SELECT n, min, max FROM roll_{HOUR} WHERE series = ? AND bucket = ?", (series, bucket)
    ).fetchone()
    if hour is None or hour[1] == hour[2]:
        return None
    got: Sequence[float] | None = []
    for n, low, high, blob in conn.execute(
        f"SELECT b.n, b.min, b.max, v.vals FROM roll_{MINUTE} AS b LEFT JOIN roll_vals AS v"
        " ON v.series = b.series AND v.bucket = b.bucket"
        " WHERE b.series = ? AND b.bucket >= ? AND b.bucket < ?",
        (series, bucket, bucket + HOUR),
    ):
        if blob is not None:
            got += values(blob)  # type: ignore[operator]
        elif low == high:
            got += [low] * n  # type: ignore[operator]
        else:
            got = raw(series, bucket)
            break
    # (an hour whose minutes are pruned, or an edit not repaired yet: none)
    return hour_chunks(got) if got is not None and len(got) == hour[0] else None


def write_hours(conn: sqlite3.Connection, built: Sequence[BuiltHour]) -> None:
    """``read_hours``' answer, in a write transaction of the folder (which
    alone writes hour buckets: nothing changed them since it read)."""
    keys = [(series, bucket) for series, bucket, _rows in built]
    conn.executemany("DELETE FROM roll_hvals WHERE series = ? AND bucket = ?", keys)
    conn.executemany(
        "INSERT INTO roll_hvals (series, bucket, lo, chunk, vals) VALUES (?, ?, ?, ?, ?)",
        [(series, bucket, *row) for series, bucket, rows in built for row in rows or ()],
    )
    conn.executemany("DELETE FROM roll_hbuild WHERE series = ? AND bucket = ?", keys)
