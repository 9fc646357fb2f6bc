"""Rollup tiers: the store-neutral part (types, folding documents into buckets).

Every stored document feeds per-series buckets of fixed width (a *tier*:
1 minute and 1 hour; SQLite also keeps 10 minutes). A series is one numeric leaf of one stream:
(session, kind, name, host, tags, path), where ``path`` is ``"value"`` (the
document's value), a dotted path into ``data`` (``cpu.percent``), or
``DOCS`` (the documents themselves, for ``count`` without a field). A bucket
holds count, sum, min, max, first and last (time and value) and ``inc``, the
counter increase over consecutive values inside it (a drop is a reset: the
new value counts whole, as Prometheus' ``rate`` does). The hour tier also
keeps a DDSketch of its values (1% relative error); a store may keep one at
the minute tier too (``rollup_sketch_tiers``; SQLite does, packed to ~2 bytes
a bin: percentiles over windows with minute edges then read no raw rows).

Stores fold documents into the tiers in write transactions, behind a
watermark: every document with an id up to the watermark is in the tiers,
every one above it is not yet (the *tail*). A reader takes tiers and tail in
one snapshot, so answers are exact whenever the fold runs. The planner
(``deltawire.collector.aggregate``) asks a store for tier buckets and raw
points through ``RollupRequest`` / ``RollupData``.
"""

from __future__ import annotations

import math
import operator
import struct
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, compress, islice, repeat
from operator import itemgetter
from typing import Any, Final, Protocol

import numpy as np
import orjson
from ddsketch.mapping import LogarithmicMapping

__all__ = [
    "DENSE",
    "DENSE_HEAD",
    "DOCS",
    "HOUR",
    "MINUTE",
    "RAW",
    "RELATIVE_ACCURACY",
    "SKETCH_TIERS",
    "TEN_MINUTES",
    "TIERS",
    "Bucket",
    "Filters",
    "Partial",
    "RawPoint",
    "RollupData",
    "RollupRequest",
    "Segment",
    "SeriesKey",
    "Sketch",
    "SketchColumns",
    "increase",
    "leaves",
    "step",
    "stream_columns",
]

MINUTE: Final = 60
#: A tier between the two that a store may keep (SQLite does, built from its
#: minutes): "p99 every 10 minutes" over a day at 10M samples merged ~124,000
#: minute sketches (~1.4 s); ten-minute ones are a tenth of that.
TEN_MINUTES: Final = 600
HOUR: Final = 3600
#: Tier widths in seconds every store keeps, coarsest first. ``RAW`` (0)
#: stands for the raw rows.
TIERS: Final = (HOUR, MINUTE)
RAW: Final = 0
#: Tiers whose buckets carry a quantile sketch in every store (each store
#: names its own in ``rollup_sketch_tiers``, these or more).
SKETCH_TIERS: Final = (HOUR,)
#: The sketch's relative error bound on every quantile.
RELATIVE_ACCURACY: Final = 0.01
#: The series path of "the documents themselves" (count without a field).
DOCS: Final = ""

_MAPPING: Final = LogarithmicMapping(RELATIVE_ACCURACY)
# ddsketch's key(): ceil(log2(v) * multiplier) + offset, restated for map().
_MULTIPLIER: Final = _MAPPING._multiplier
_OFFSET: Final = int(_MAPPING._offset)
_MIN_POSITIVE: Final = _MAPPING.min_possible


@dataclass(frozen=True, slots=True)
class SeriesKey:
    session: str
    kind: str
    name: str
    host: str | None
    tags: tuple[str, ...]
    path: str
    # Hashed once: a threshold or a grouping looks keys up once per raw
    # point (10^5-10^6 of them), and hashing six fields each time was a
    # tenth of such a query's time.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.session, self.kind, self.name, self.host, self.tags, self.path)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class Segment:
    """A time range ``[lo, hi)`` (None: unbounded) read from ``tier`` (RAW: raw rows)."""

    tier: int
    lo: float | None
    hi: float | None


class Filters(Protocol):
    """The filters of ``GET /metrics`` (a ``base.MetricQuery``; not imported:
    base imports this module for the Store protocol)."""

    @property
    def session(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def kind(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def ts_from(self) -> float | None: ...
    @property
    def ts_to(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class RollupRequest:
    """What the planner asks a store: the buckets and raw points of the series
    matching ``where`` (its time bounds are ignored: ``segments`` say the time)
    at ``path`` (``"value"``, a data path, or ``DOCS``)."""

    where: Filters
    path: str
    segments: tuple[Segment, ...]
    #: percentiles: tier buckets must bring their sketch; without
    #: ``raw_filter`` a store may leave their Partial at n alone (sum 0,
    #: min, max and values NaN, times the start, inc None)
    sketches: bool = False
    #: (op, number): raw points whose value fails it may be left out (a
    #: threshold; the caller filters again, so a store may ignore it)
    raw_filter: tuple[str, float] | None = None
    #: With ``raw_filter``: the raw rows of RAW segments may come back summed
    #: per series and this many seconds, as buckets of tier RAW (count, sum,
    #: min, max; no first/last values nor increase), all passing the filter,
    #: except rows above the watermark (points, as always). Only for functions
    #: that need no single value; a store may ignore it.
    raw_buckets: int | None = None
    #: Set when only count, sum, min and max are needed (count, sum, avg,
    #: min, max): a store may hand back, per series and segment, one Bucket
    #: per ``merge_span``-second slice of time (epoch aligned; 0: the whole
    #: segment) merging its buckets, or its raw rows (tier ``RAW``), with
    #: ``start`` its earliest start or ts, ``inc`` None and ``fv``/``lv``
    #: NaN. At 10M samples a window read ~15,000 buckets and rows one by one
    #: into Python (~0.3-0.5 s); merged in SQL it is a row per series.
    merge_span: float | None = None
    #: Set for ``rate`` (counters): a store may hand back, per series and
    #: ``increase_span``-second slice (epoch aligned; 0: all of it), one
    #: Bucket merging its tier buckets and raw rows of every segment in (ts,
    #: id) order, as ``Partial.merge`` would: ``inc`` counts the steps
    #: between them (a drop is a reset), None where they overlap in time;
    #: ``start`` its earliest start or ts. Rows above the watermark come
    #: back as points, as always. At 10M samples a ragged window read ~15,000
    #: pieces into Python and merged them one by one (~200 ms).
    increase_span: float | None = None
    #: With ``raw_filter``: minute buckets the filter cuts (min passes, max
    #: not, or the reverse) may bring their sorted values (``Bucket.vals``).
    vals: bool = False
    #: With ``raw_filter``, for count, sum, avg, min and max: a store may hand
    #: back tier buckets reduced to what passes it: per series and
    #: ``passing_span``-second slice (epoch aligned; 0: the whole segment),
    #: the buckets wholly passing and the passing values of cut ones it keeps
    #: the values of (``vals``), merged into one bucket of the tier as
    #: ``merge_span``'s (min and max pass); other cut buckets one by one; no
    #: failing ones.
    passing_span: float | None = None


@dataclass(slots=True)
class Sketch:
    """DDSketch bins (ddsketch's LogarithmicMapping keys): positive values,
    negative values (by magnitude) and zeros. Mergeable by adding counts."""

    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)
    zero: int = 0

    def add_values(self, values: Sequence[float]) -> None:
        if not values:
            return
        if isinstance(values, array) and len(values) >= _NUMPY_MIN:
            keyed = _as_floats(values)
            if keyed is not None:
                self._add_floats(keyed)
                return
        # Telemetry repeats itself (gauges, totals, idle counters): a key per
        # distinct value, counted in C, is much cheaper than one per value.
        if min(values) > _MIN_POSITIVE:  # the usual case: all positive
            # a key per value, counted by Counter's C loop (on any dict)
            Counter.update(self.pos, _keys(values))  # type: ignore[call-overload]
            return
        counts = Counter(values)
        for v, n in counts.items():
            if v > _MIN_POSITIVE:
                _add_counts(self.pos, _keys((v,)), (n,))
            elif v < -_MIN_POSITIVE:
                _add_counts(self.neg, _keys((-v,)), (n,))
            else:
                self.zero += n

    def _add_floats(self, values: np.ndarray[Any, np.dtype[np.float64]]) -> None:
        pos = values[values > _MIN_POSITIVE]
        neg = -values[values < -_MIN_POSITIVE]
        self.zero += len(values) - len(pos) - len(neg)
        for bins, side in ((self.pos, pos), (self.neg, neg)):
            if len(side):
                keys, counts = np.unique(_np_keys(side), return_counts=True)
                _add_counts(bins, keys.tolist(), counts.tolist())

    def merge(self, other: Sketch) -> None:
        _merge_into(self.pos, other.pos)
        _merge_into(self.neg, other.neg)
        self.zero += other.zero

    def quantile(self, q: float) -> float | None:
        """ddsketch's ``get_quantile_value``: the value of rank q * (n - 1)."""
        n_neg = sum(self.neg.values())
        total = n_neg + self.zero + sum(self.pos.values())
        if total == 0:
            return None
        rank = q * (total - 1)
        if rank < n_neg:
            seen = 0
            for key in sorted(self.neg, reverse=True):  # most negative first
                seen += self.neg[key]
                if seen > rank:
                    return -_MAPPING.value(key)
        if rank < n_neg + self.zero:
            return 0.0
        seen = n_neg + self.zero
        for key in sorted(self.pos):
            seen += self.pos[key]
            if seen > rank:
                return _MAPPING.value(key)
        return _MAPPING.value(max(self.pos))

    def to_bytes(self, dense: bool = False) -> bytes:
        """Packed (see ``_PACKED``): a minute bucket's sketch of ~60 values
        takes ~130 bytes where JSON took ~700, and unpacks in C. ``dense``:
        the dense form (``DENSE``) where its keys are close enough together."""
        if dense:
            packed = _dense_bytes(self)
            if packed is not None:
                return packed
        return b"".join((_HEAD.pack(_PACKED, self.zero), _pack_bins(self.pos),
                         _pack_bins(self.neg)))  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Sketch:
        if isinstance(raw, bytes) and raw[:1] == _PACKED:
            _, zero = _HEAD.unpack_from(raw)
            pos, at = _unpack_bins(raw, _HEAD.size)
            neg, _ = _unpack_bins(raw, at)
            return cls(pos, neg, zero)
        if isinstance(raw, bytes) and raw[:1] == DENSE:
            _, code, pos_n, zero, pos_first, neg_first, _ = DENSE_HEAD.unpack_from(raw)
            counts = array(code.decode())
            counts.frombytes(raw[DENSE_HEAD.size :])
            if _SWAP:
                counts.byteswap()
            return cls(
                _nonzero(pos_first, counts[:pos_n]), _nonzero(neg_first, counts[pos_n:]), zero
            )
        d = orjson.loads(raw)  # as written before the packed form (JSON)
        return cls(
            {int(k): v for k, v in d["p"].items()}, {int(k): v for k, v in d["n"].items()}, d["z"]
        )


#: The packed sketch: this tag byte and the zero count, then the positive and
#: the negative bins, each as (first key, bin count, key-gap width, count
#: width) and two arrays: the gaps between sorted keys, the counts. Widths are
#: array typecodes, the narrowest that holds every number (sorted keys of one
#: bucket are mostly 1..20 apart: a byte each). Little-endian.
_PACKED: Final = b"\x01"
_HEAD: Final = struct.Struct("<cQ")
_BINS: Final = struct.Struct("<iIcc")
_WIDTHS: Final = (("B", 0xFF), ("H", 0xFFFF), ("I", 0xFFFF_FFFF), ("Q", 2**64 - 1))
_SWAP: Final = sys.byteorder != "little"


#: The dense sketch (SQLite's ten-minute tier): this tag byte, the count
#: width (an array typecode), the positive side's key count, the zero count,
#: each side's lowest key, the negative side's key count; then the counts of
#: every key from the lowest to the highest, zeros too, the positive side's
#: then the negative's, all of that width. A reader of many sketches
#: (aggregate/sketches.py) reads the heads of all at once, drops them, and
#: has the counts of all in one array, keys implied: the packed form's
#: variable parts took ~35 ms to gather for "p99 every 10 minutes" over a day
#: at 10M samples (~12,000 sketches, ~1.4M bins), this ~10 ms.
DENSE: Final = b"\x02"
DENSE_HEAD: Final = struct.Struct("<ccxxIQiiIxxxx")
#: Dense where the keys between the lowest and highest, empty ones too, are
#: at most this many times the bins (plus a few): values of one bucket lie
#: close together (1% bins ~2% apart); a bucket that spans many magnitudes
#: stays packed.
_DENSE_SPREAD: Final = 4
_DENSE_SLACK: Final = 64


def _dense_bytes(sketch: Sketch) -> bytes | None:
    """``sketch`` in the dense form, or None where it would be too large."""
    bins = len(sketch.pos) + len(sketch.neg)
    sides = [_dense_side(sketch.pos), _dense_side(sketch.neg)]
    cells = sum(len(counts) for _, counts in sides)
    if cells > _DENSE_SPREAD * bins + _DENSE_SLACK:
        return None
    code = _narrowest([*sketch.pos.values(), *sketch.neg.values()])
    if code == "Q":  # (no 64-bit counts in ten minutes; packed all the same)
        return None
    arr = array(code, sides[0][1] + sides[1][1])
    if _SWAP:
        arr.byteswap()
    (pos_first, pos), (neg_first, _) = sides
    head = DENSE_HEAD.pack(
        DENSE, code.encode(), len(pos), sketch.zero, pos_first, neg_first, cells - len(pos)
    )
    return head + arr.tobytes()


def _dense_side(bins: dict[int, int]) -> tuple[int, list[int]]:
    """(the lowest key, the count of every key from it to the highest)."""
    if not bins:
        return 0, []
    low = min(bins)
    counts = [0] * (max(bins) - low + 1)
    for key, n in bins.items():
        counts[key - low] = n
    return low, counts


def _nonzero(first: int, counts: Sequence[int]) -> dict[int, int]:
    return {first + i: n for i, n in enumerate(counts) if n}


def _narrowest(numbers: Sequence[int]) -> str:
    top = max(numbers, default=0)
    return next(code for code, most in _WIDTHS if top <= most)


def _pack_bins(bins: dict[int, int]) -> bytes:
    if not bins:
        return _BINS.pack(0, 0, b"B", b"B")
    keys = sorted(bins)
    gaps = list(map(operator.sub, islice(keys, 1, None), keys))
    counts = list(map(bins.__getitem__, keys))
    gap_code, count_code = _narrowest(gaps), _narrowest(counts)
    gap_arr, count_arr = array(gap_code, gaps), array(count_code, counts)
    if _SWAP:
        gap_arr.byteswap()
        count_arr.byteswap()
    head = _BINS.pack(keys[0], len(keys), gap_code.encode(), count_code.encode())
    return head + gap_arr.tobytes() + count_arr.tobytes()


def _unpack_bins(raw: bytes, at: int) -> tuple[dict[int, int], int]:
    first, n, gap_code, count_code = _BINS.unpack_from(raw, at)
    at += _BINS.size
    if not n:
        return {}, at
    gaps, counts = array(gap_code.decode()), array(count_code.decode())
    end = at + (n - 1) * gaps.itemsize
    gaps.frombytes(raw[at:end])
    at, end = end, end + n * counts.itemsize
    counts.frombytes(raw[at:end])
    if _SWAP:
        gaps.byteswap()
        counts.byteswap()
    return dict(zip(accumulate(gaps, initial=first), counts, strict=True)), end


def _keys(values: Iterable[float]) -> Iterator[int]:
    # (log2 is one C call where log(v, 2) is two; ceil() gives an int already)
    return map(operator.add, map(math.ceil, map(operator.mul, map(math.log2, values), repeat(_MULTIPLIER))), repeat(_OFFSET))  # fmt: skip


#: Arrays of at least this many values (the folder's columns) are keyed by
#: numpy: a minute's values keyed one by one in Python were a tenth of the
#: folder's CPU. Fewer are cheaper in Python.
_NUMPY_MIN: Final = 16
#: Ints exactly representable as float64: beyond, Python keys them (exact).
_FLOAT_EXACT: Final = 2**53


def _as_floats(values: array[Any]) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    """A float64 view or copy of ``values`` (an ``array`` of float64 or
    int64); None where an int would round."""
    if values.typecode == "d":
        return np.frombuffer(values, np.float64)
    if values.typecode != "q":
        return None
    ints = np.frombuffer(values, np.int64)
    if ints.max() > _FLOAT_EXACT or ints.min() < -_FLOAT_EXACT:
        return None
    return ints.astype(np.float64)


def _np_keys(values: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``_keys`` of positive ``values``, the same keys: numpy's log2 may
    differ from math.log2 in the last bit, which moves a key only where
    log2(v) * multiplier is that close to an integer, so those few are
    keyed by ``_keys``."""
    scaled = np.log2(values) * _MULTIPLIER
    keys = np.ceil(scaled) + _OFFSET  # (small integers: exact as floats)
    near = np.abs(scaled - np.rint(scaled)) < 1e-6
    if near.any():
        keys[near] = list(_keys(values[near].tolist()))
    return keys.astype(np.int64)


def _add_counts(bins: dict[int, int], keys: Iterable[int], counts: Iterable[int]) -> None:
    get = bins.get
    for key, n in zip(keys, counts, strict=True):
        bins[key] = get(key, 0) + n


def _merge_into(bins: dict[int, int], other: Mapping[int, int]) -> None:
    get = bins.get
    for key, n in other.items():
        bins[key] = get(key, 0) + n


def step(prev: float, cur: float) -> float:
    """The counter increase from ``prev`` to ``cur``; a drop is a reset to 0."""
    return cur - prev if cur >= prev else cur


def increase(values: Sequence[float]) -> float:
    """The counter increase over consecutive ``values``."""
    if len(values) < 2:
        return 0
    # The sum of steps is last - first, plus the value before each drop (a
    # reset counts the new value whole): one pass in C instead of a call per step.
    before_drops = compress(values, map(operator.gt, values, islice(values, 1, None)))
    return values[-1] - values[0] + sum(before_drops)


@dataclass(slots=True)
class Partial:
    """The mergeable state of one series over one stretch of time."""

    n: int
    sum: float
    min: float
    max: float
    fts: float
    fv: float
    lts: float
    lv: float
    inc: float | None  # None: unknown (pieces overlapped in time; recompute)

    @classmethod
    def of(cls, ts: Sequence[float], values: Sequence[float]) -> Partial:
        """Of values in (ts, id) order."""
        return cls(
            len(values),
            sum(values),
            min(values),
            max(values),
            ts[0],
            values[0],
            ts[-1],
            values[-1],
            increase(values),
        )

    def copy(self) -> Partial:
        return Partial(
            self.n, self.sum, self.min, self.max, self.fts, self.fv, self.lts, self.lv, self.inc
        )

    def merge(self, other: Partial) -> None:
        """Fold ``other`` in; both in (ts, id) order, ``other``'s ids larger."""
        if self.inc is not None and other.inc is not None and other.fts >= self.lts:
            self.inc = self.inc + other.inc + step(self.lv, other.fv)
        elif self.inc is not None and other.inc is not None and other.lts < self.fts:
            self.inc = other.inc + self.inc + step(other.lv, self.fv)
        else:
            self.inc = None
        self.n += other.n
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.fts < self.fts:
            self.fts, self.fv = other.fts, other.fv
        if other.lts >= self.lts:
            self.lts, self.lv = other.lts, other.lv


@dataclass(slots=True)
class Bucket:
    """One stored tier bucket of one series, as a reader gets it."""

    series: SeriesKey
    tier: int
    start: float
    part: Partial
    #: Its quantile sketch, or that packed (``Sketch.to_bytes``: a store may
    #: hand the stored bytes over; the engine merges them undecoded, see
    #: ``aggregate/sketches.py``).
    sketch: Sketch | bytes | str | None = None
    #: The bucket's values, sorted and packed (rollup_vals.py), where asked
    #: (``RollupRequest.vals``) and stored; else None
    vals: bytes | None = None


@dataclass(frozen=True, slots=True)
class RawPoint:
    """One value of a raw row: ``order`` sorts rows of equal ts (insertion
    order); ``tail``: the row is above the watermark (not in the tiers yet)."""

    series: SeriesKey
    ts: float
    order: Any
    value: float
    tail: bool = False


@dataclass(frozen=True, slots=True)
class SketchColumns:
    """The buckets of one tier segment for a percentile, as columns (a store
    may answer ``RollupRequest.sketches`` without ``raw_filter`` so): a Bucket
    and a Partial each was two thirds of "p99 every 10 minutes" over a day at
    10M samples (~12,000 buckets). Row i is the bucket of ``series[i]`` that
    starts at ``starts[i]``, holds ``counts[i]`` values and ``sketches[i]``."""

    tier: int
    series: Sequence[SeriesKey]
    starts: Sequence[float]
    counts: Sequence[int]
    #: as stored (``Bucket.sketch``); None where the bucket has none
    sketches: Sequence[bytes | str | None]


@dataclass(slots=True)
class RollupData:
    buckets: list[Bucket]
    points: list[RawPoint]
    #: tier buckets of a percentile, where the store gives them as columns
    sketched: list[SketchColumns] = field(default_factory=list)


def leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted path, number) of every numeric leaf a dotted path can address:
    through objects only, keys non-empty and free of '.' and '"', no bools."""
    for key, value in data.items():
        kind = type(value)
        if kind is float or kind is int:
            if key and "." not in key and '"' not in key:
                yield prefix + key, value
        elif kind is dict and key and "." not in key and '"' not in key:
            yield from leaves(value, prefix + key + ".")


#: A stream's rows for ``fold_stream``: (ts, order, value or None, data or None).
StreamRow = tuple[float, Any, "float | None", "dict[str, Any] | None"]


Columns = dict[tuple[str, int], tuple[list[float], list[float]]]


def stream_columns(rows: Sequence[StreamRow], tier: int) -> Columns:
    """(ts list, value list) per (path, bucket start) of one stream's rows at
    ``tier`` seconds, each in (ts, order) order; ``DOCS`` counts every row
    (value 1). Rows in any order. Lists may be shared between columns."""
    rows = sorted(rows, key=_ts_order)
    cols: Columns = {}
    i = 0
    while i < len(rows):
        # A run of rows in one bucket (rows are in ts order).
        start = int(rows[i][0] // tier) * tier
        j = i + 1
        end = start + tier
        while j < len(rows) and rows[j][0] < end:
            j += 1
        run = rows[i:j]
        i = j
        tss = [r[0] for r in run]
        cols[(DOCS, start)] = (tss, [1] * len(tss))
        _column(cols, "value", start, tss, [r[2] for r in run])
        _flatten(cols, start, "", tss, [r[3] for r in run])
    return cols


_NUMBERS: Final = frozenset({int, float})
_DICT: Final = {dict}


def _column(cols: Columns, path: str, start: int, tss: list[float], col: list[Any]) -> None:
    """Add the numbers of ``col`` (aligned with ``tss``) as a column."""
    if set(map(type, col)) <= _NUMBERS:
        cols[(path, start)] = (tss, col)
        return
    pairs = [(t, v) for t, v in zip(tss, col, strict=True) if type(v) in _NUMBERS]
    if pairs:
        cols[(path, start)] = ([t for t, _ in pairs], [v for _, v in pairs])


def _flatten(cols: Columns, start: int, prefix: str, tss: list[float], items: list[Any]) -> None:
    """Columns of the numeric leaves under ``items`` (dicts, or anything else:
    skipped), one key at a time across all rows: the rows of a stream mostly
    share their shape, so this is a few list operations per leaf, not per value."""
    if set(map(type, items)) != _DICT:
        pairs = [(t, d) for t, d in zip(tss, items, strict=True) if type(d) is dict]
        if not pairs:
            return
        tss, items = [t for t, _ in pairs], [d for _, d in pairs]
    first = items[0].keys()
    # (map() keeps these loops in C: they run once per leaf of every row.)
    same_keys = all(map(first.__eq__, map(dict.keys, items)))
    keys: Iterable[str] = first if same_keys else dict.fromkeys(k for d in items for k in d)
    for key in keys:
        if not key or "." in key or '"' in key:
            continue  # no dotted path reaches it
        col = list(map(itemgetter(key), items)) if same_keys else [d.get(key) for d in items]
        types = set(map(type, col))
        if types <= _NUMBERS:
            cols[(prefix + key, start)] = (tss, col)
            continue
        if types & _NUMBERS:
            _column(cols, prefix + key, start, tss, col)
        if dict in types:
            _flatten(cols, start, prefix + key + ".", tss, col)


def _ts_order(row: StreamRow) -> tuple[float, Any]:
    return row[0], row[1]
