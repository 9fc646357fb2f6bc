"""Thresholds from the tiers: "requests longer than 500 ms" without a raw scan.

A tier bucket knows the min and max of its values, so against a threshold it
is one of three things: wholly inside (min and max pass: all its values
count, its sums and sketch with them), wholly outside (neither passes:
nothing of it counts), or cut (the rest). Only cut buckets are looked at
more closely: an hour is read again as its minutes, and a minute by its
stored sorted values where the store keeps them (SQLite, ``rollup_vals.py``:
the passing ones are one slice, found by bisection), else as its raw rows;
only the values that pass are kept. The answer is exact, as a raw scan's
would be, and costs raw reads only where the threshold cuts a minute whose
values are not stored.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from deltawire.collector.stores import rollup_vals
from deltawire.collector.stores.rollup import (
    RAW,
    Bucket,
    Partial,
    RollupData,
    RollupRequest,
    Segment,
    SeriesKey,
    Sketch,
)

from .query import AggregateQuery, QueryTooHeavy, Threshold

__all__ = ["apply_threshold"]

#: Separate time ranges read again at most per step: cut buckets scattered
#: over a long window are read as one range (more rows, one query) past it.
_MAX_RANGES: Final = 64
#: Raw rows a threshold may read again for the buckets it cuts. SQLite reads
#: ~0.3-1M rows of JSON a second on this 2-core machine, so past this the
#: query deadline (10 s) would pass anyway; answering 503 query_timeout
#: before reading frees the heavy-query slot at once (an all-time threshold
#: on noisy data at 10M samples held one for ~58 s).
MAX_RAW_ROWS: Final = 3_000_000

#: (tier, bucket start) -> the series whose bucket there is cut
_Cut = dict[tuple[int, float], set[SeriesKey]]


class _Source(Protocol):
    def rollup_read(self, req: RollupRequest) -> RollupData: ...


def apply_threshold(
    store: _Source,
    query: AggregateQuery,
    req: RollupRequest,
    data: RollupData,
    planned: Sequence[int],
) -> RollupData:
    """``data`` (read for ``req``) reduced to what passes ``query.threshold``;
    ``planned``: the tiers the planner used (percentiles: those with sketches)."""
    th = query.threshold
    assert th is not None
    tiers = [t for t in planned if query.bucket is None or query.bucket % t == 0]
    # Rows not folded yet come with every read of tiers: keep them once.
    tail = {(p.series, p.order) for p in data.points if p.tail}
    points = [p for p in data.points if th.passes(p.value)]
    kept: list[Bucket] = []
    pending: Sequence[Bucket] = data.buckets
    while pending:
        cut_buckets: list[Bucket] = []
        cut = _classify(pending, th, kept, req.sketches, cut_buckets)
        if not cut:
            break
        segments = _finer(cut, tiers)
        rows = _raw_rows(segments, cut_buckets)
        if rows > MAX_RAW_ROWS:
            raise QueryTooHeavy(
                f"the threshold {th.text()} falls inside the value range of buckets holding"
                f" {rows:,} values, more than {MAX_RAW_ROWS:,} to read one by one; narrow"
                " the window or the filters"
            )
        # (passing_span: merged per cut bucket, so that _in_cut can tell)
        span = None if req.passing_span is None else max(tier for tier, _start in cut)
        more = store.rollup_read(replace(req, segments=segments, vals=True, passing_span=span))
        tiers_cut = {tier for tier, _start in cut}
        pending = [b for b in more.buckets if _in_cut(cut, tiers_cut, b.series, b.start)]
        points += [
            p
            for p in more.points
            if th.passes(p.value)
            and _in_cut(cut, tiers_cut, p.series, p.ts)
            and (p.series, p.order) not in tail
        ]
    return RollupData(kept, points)


def _classify(
    buckets: Iterable[Bucket],
    th: Threshold,
    kept: list[Bucket],
    sketches: bool,
    cut_buckets: list[Bucket],
) -> _Cut:
    """Keep the buckets wholly inside, and what passes of cut ones whose
    values came with them; return (and list in ``cut_buckets``) the other cut ones."""
    cut: _Cut = {}
    for b in buckets:
        low, high = th.passes(b.part.min), th.passes(b.part.max)
        if low and high:
            kept.append(b)
        elif b.tier == RAW:  # raw sums hold passing values only (RollupRequest.raw_buckets)
            raise ValueError("raw sums with values that fail the threshold")
        elif low or high:
            passed = None if b.vals is None else _passing(b, b.vals, th, sketches)
            if passed is not None:
                kept.append(passed)
            else:
                cut.setdefault((b.tier, b.start), set()).add(b.series)
                cut_buckets.append(b)
    return cut


def _passing(b: Bucket, vals: bytes, th: Threshold, sketches: bool) -> Bucket | None:
    """What of cut bucket ``b`` passes, from its sorted values: a tier RAW
    bucket as a store's raw sums are (no first/last values, no increase).
    None if nothing does, which its min and max deny: then its raw rows tell."""
    got = rollup_vals.passing(vals, th.op, th.number)
    if got is None:
        return None
    part = Partial(got.n, got.sum, got.min, got.max, b.part.fts, got.min, b.part.lts, got.max, None)
    sketch = None
    if sketches:
        sketch = Sketch()
        sketch.add_values(got.values())
    return Bucket(b.series, RAW, b.start, part, sketch)


def _raw_rows(segments: Sequence[Segment], buckets: Sequence[Bucket]) -> int:
    """The values of ``buckets`` inside the raw ``segments``: about the rows
    a read of those scans (before its filter)."""
    raw = sorted(
        (s.lo, s.hi) for s in segments if s.tier == RAW and s.lo is not None and s.hi is not None
    )
    if not raw:
        return 0
    los = [lo for lo, _hi in raw]
    total = 0
    for b in buckets:
        i = bisect_right(los, b.start) - 1
        if i >= 0 and b.start < raw[i][1]:
            total += b.part.n
    return total


def _in_cut(cut: _Cut, tiers: set[int], series: SeriesKey, ts: float) -> bool:
    for tier in tiers:
        hit = cut.get((tier, ts // tier * tier))
        if hit is not None and series in hit:
            return True
    return False


def _finer(cut: _Cut, tiers: Sequence[int]) -> tuple[Segment, ...]:
    """Segments that read the cut buckets' time again, one tier finer (or raw)."""
    runs: list[_Run] = []
    for tier, start in sorted(cut, key=lambda k: (k[1], k[0])):
        if runs and runs[-1].hi == start and runs[-1].tier == tier:
            runs[-1].hi = start + tier
        else:
            runs.append(_Run(start, start + tier, tier))
    if len(runs) > _MAX_RANGES:
        runs = [_Run(runs[0].lo, max(r.hi for r in runs), min(r.tier for r in runs))]
    out: list[Segment] = []
    for r in runs:
        # A cut bucket's edges are edges of every finer tier (60 divides 3600).
        finer = [t for t in tiers if t < r.tier and r.lo % t == 0 and r.hi % t == 0]
        out.append(Segment(max(finer) if finer else RAW, r.lo, r.hi))
    return tuple(out)


@dataclass(slots=True)
class _Run:
    """Cut buckets of one tier end to end: ``[lo, hi)``."""

    lo: float
    hi: float
    tier: int
