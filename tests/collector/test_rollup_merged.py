"""count/sum/avg/min/max merged in SQL (``RollupRequest.merge_span``): each
series' buckets and raw edge rows of one answer slice come back as one row,
and the answers still equal a raw scan, on every grouping, bucket and window."""

from __future__ import annotations

import itertools
import math
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from deltawire.collector.aggregate import AggregateQuery, run_aggregate
from deltawire.collector.aggregate.engine import plan_segments
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.collector.stores.rollup import RAW, RollupRequest
from deltawire.protocol import Document

from .test_rollups import _all_docs, assert_same, reference

BASE = 1_795_003_200.0  # a whole hour
#: (session, host): three series over ~3 hours, a sample every 7 s each
SERIES = (("s1", "h1"), ("s2", "h1"), ("s3", "h2"))
STEP = 7
COUNT = 1500


def _value(session: int, i: int) -> float:
    # ints and floats, negative ones too, no two minutes alike
    x = (i * 7919 + session * 104729) % 1000 - 300
    return x if i % 3 else x / 7


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path: pathlib.Path = tmp_path_factory.mktemp("merged") / "m.db"
    s = open_store(f"sqlite:///{path}")
    s.open()
    docs = [
        Document(name, i, "sample", "process", BASE + i * STEP + k, host, (), {"v": _value(k, i)})
        for i in range(COUNT)
        for k, (name, host) in enumerate(SERIES)
    ]
    s.write_batch(docs[: len(docs) * 3 // 4])
    s.fold_rollups()
    s.write_batch(docs[len(docs) * 3 // 4 :])  # a tail not folded yet
    try:
        yield s
    finally:
        s.close()


def _reference(q: AggregateQuery) -> dict[tuple[Any, Any], tuple[float, int]]:
    cells: dict[tuple[Any, Any], list[float]] = {}
    for i, (k, (session, host)) in itertools.product(range(COUNT), enumerate(SERIES)):
        ts = BASE + i * STEP + k
        w = q.where
        if (w.ts_from is not None and ts < w.ts_from) or (w.ts_to is not None and ts >= w.ts_to):
            continue
        group = {"host": host, "session": session, None: None}[q.by]
        bucket = None if q.bucket is None else math.floor(ts / q.bucket) * q.bucket
        cells.setdefault((group, bucket), []).append(_value(k, i))
    fns = {"count": len, "sum": sum, "min": min, "max": max, "avg": lambda v: sum(v) / len(v)}
    return {key: (fns[q.fn](vals), len(vals)) for key, vals in cells.items()}


WINDOWS = (
    (None, None),
    (BASE + 1234.5, BASE + 9876.25),  # ragged: hour, minute and raw edges
    (BASE + 3600, BASE + 7200),  # whole hours
    (BASE + 30, BASE + 50),  # inside one minute: raw rows only
)


@pytest.mark.parametrize("fn", ["count", "sum", "avg", "min", "max"])
def test_merged_answers_equal_a_raw_scan(store: Any, fn: str) -> None:
    for (lo, hi), by, bucket in itertools.product(
        WINDOWS, (None, "host", "session"), (None, 60.0, 90.0, 600.0, 3600.0)
    ):
        q = AggregateQuery(
            fn=fn, field="v", by=by, bucket=bucket, where=MetricQuery(ts_from=lo, ts_to=hi)
        )
        got = {(r.group, r.bucket): (r.value, r.count) for r in run_aggregate(store, q)}
        ref = _reference(q)
        assert got.keys() == ref.keys(), q
        for key, (value, n) in ref.items():
            assert got[key][1] == n, (q, key)
            assert math.isclose(got[key][0], value, rel_tol=1e-9, abs_tol=1e-9), (q, key)


def test_merged_reads_a_row_per_series_and_slice(store: Any) -> None:
    lo, hi = WINDOWS[1]
    segments = plan_segments(lo, hi, store.rollup_tiers, 3600.0)
    req = RollupRequest(MetricQuery(), "v", segments)
    whole = store.rollup_read(req)
    merged = store.rollup_read(RollupRequest(MetricQuery(), "v", segments, merge_span=3600.0))
    assert merged.points == [p for p in whole.points if p.tail]  # the tail stays raw rows
    assert merged.points  # (there is a tail)
    # a bucket per series, per hour and per segment it starts in (3 series)
    slices = {(b.series, b.tier, math.floor(b.start / 3600)) for b in merged.buckets}
    assert len(merged.buckets) == len(slices)
    assert len(merged.buckets) < len(whole.buckets) / 2  # (ten-minute and minute edges)
    assert any(b.tier == RAW for b in merged.buckets)  # the raw edges, merged too
    n = sum(b.part.n for b in whole.buckets) + sum(1 for p in whole.points if not p.tail)
    assert sum(b.part.n for b in merged.buckets) == n


@pytest.mark.parametrize("by", [None, "host", "session"])
def test_rate_merged_in_sql_equals_a_raw_scan(store: Any, by: str | None) -> None:
    """rate (``RollupRequest.increase_span``): each series' pieces stepped in
    SQL, resets (the noisy values drop often) counted as Partial.merge does."""
    docs = _all_docs(store)
    for (lo, hi), bucket in itertools.product(WINDOWS, (None, 60.0, 90.0, 600.0, 3600.0)):
        q = AggregateQuery(
            fn="rate", field="v", by=by, bucket=bucket, where=MetricQuery(ts_from=lo, ts_to=hi)
        )
        assert_same(run_aggregate(store, q), reference(docs, q), q)


def test_rate_reads_a_row_per_series_and_slice(store: Any) -> None:
    lo, hi = WINDOWS[1]
    segments = plan_segments(lo, hi, store.rollup_tiers, None)
    whole = store.rollup_read(RollupRequest(MetricQuery(), "v", segments))
    merged = store.rollup_read(RollupRequest(MetricQuery(), "v", segments, increase_span=0))
    assert merged.points == [p for p in whole.points if p.tail]  # the tail stays raw rows
    # per series: its tier buckets merged, and one per raw segment (the edges)
    raw_segments = sum(1 for seg in segments if seg.tier == RAW)
    assert raw_segments == 2
    assert len(merged.buckets) == len(SERIES) * (1 + raw_segments)
    assert all(b.part.inc is not None for b in merged.buckets)
    n = sum(b.part.n for b in whole.buckets) + sum(1 for p in whole.points if not p.tail)
    assert sum(b.part.n for b in merged.buckets) == n


def test_sums_past_sqlite_integers_fall_back_to_python(tmp_path: pathlib.Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'big.db'}")
    s.open()
    try:
        big = 2**61  # one an hour: each bucket's sum fits in SQLite, 6 of them do not
        s.write_batch([Document("s", i, "sample", "p", BASE + i * 3600, None, (), {"v": big})
                       for i in range(6)])  # fmt: skip
        s.fold_rollups()
        for lo in (None, BASE + 0.5):
            q = AggregateQuery(fn="sum", field="v", where=MetricQuery(ts_from=lo))
            [row] = run_aggregate(s, q)
            assert row.value == (6 if lo is None else 5) * big
    finally:
        s.close()


def test_a_bucket_sum_past_sqlite_integers_is_folded(tmp_path: pathlib.Path) -> None:
    """Two int64-limit values in one minute: their sum does not fit SQLite's
    INTEGER. Folding must not stop on it (it would fail at every retry)."""
    s = open_store(f"sqlite:///{tmp_path / 'huge.db'}")
    s.open()
    try:
        top = 2**63 - 1
        s.write_batch([Document("s", i, "sample", "p", BASE + i, None, (), {"v": top})
                       for i in range(2)])  # fmt: skip
        s.fold_rollups()
        [row] = run_aggregate(s, AggregateQuery(fn="sum", field="v", where=MetricQuery()))
        assert row.value == pytest.approx(2 * top, rel=1e-12)
        [row] = run_aggregate(s, AggregateQuery(fn="max", field="v", where=MetricQuery()))
        assert row.value == top
    finally:
        s.close()
