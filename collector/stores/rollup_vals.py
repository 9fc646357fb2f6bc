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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .rollup import DOCS, MINUTE, RollupRequest

__all__ = [
    "DROP",
    "MAX_VALUES",
    "MIGRATION",
    "Passing",
    "cut_sql",
    "delete",
    "merged",
    "pack",
    "passing",
    "totals",
    "values",
    "write",
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
    low, high = ordered[0], ordered[-1]
    if low == high:
        return None
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
    low: float = x
    high: float = x
    if base is not None:
        # base + n is an int: > x is > floor(x), >= x is >= ceil(x) (exact:
        # Python's ints have no bound), so the offsets compare with ints
        low, high = math.floor(x) - base, math.ceil(x) - base
    if op == ">":
        return arr[bisect_right(arr, low) :]
    if op == ">=":
        return arr[bisect_left(arr, high) :]
    if op == "<":
        return arr[: bisect_left(arr, high)]
    if op == "<=":
        return arr[: bisect_right(arr, low)]
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
                out = pack([*values(blob), *new])
                return DROP if out is None else out
            if low != high:
                return None  # folded before roll_vals: unknown (raw reads)
            return pack([*([low] * n), *new])
    return pack(new)


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
