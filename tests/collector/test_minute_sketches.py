"""Minute-tier sketches (SQLite): a percentile over a window with minute edges
is answered from buckets alone, within the sketch's 1%; sketches pack and
unpack exactly; minutes folded before they had sketches still answer right."""

from __future__ import annotations

import math
import pathlib
import sqlite3
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.aggregate import AggregateQuery, run_aggregate
from deltawire.collector.aggregate.sketches import SketchSum
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.collector.stores.rollup import MINUTE, Sketch
from deltawire.protocol import Document

from .test_rollups import BASE
from .test_thresholds import _Counting

#: Raw rows of the window's edges when these are not on minutes.
EDGE = 30


@given(
    st.lists(st.floats(-1e12, 1e12, allow_nan=False), max_size=400),
    st.lists(st.integers(1, 2**40), max_size=3),
)
def test_packed_sketches_unpack_to_the_same_bins(values: list[float], big: list[int]) -> None:
    sketch = Sketch()
    sketch.add_values(values)
    for i, n in enumerate(big):  # counts wider than the values give (merged hours)
        sketch.pos[i * 300] = n
    assert Sketch.from_bytes(sketch.to_bytes()) == sketch
    legacy = orjson.dumps(
        {"p": sketch.pos, "n": sketch.neg, "z": sketch.zero}, option=orjson.OPT_NON_STR_KEYS
    )
    assert Sketch.from_bytes(legacy) == sketch  # as stored before the packed form


@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(-1e12, 1e12, allow_nan=False), max_size=80),
            st.sampled_from(["packed", "dict", "json"]),
        ),
        max_size=12,
    ),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=20),
    st.lists(st.integers(1, 2**40), max_size=2),
)
def test_sketch_sum_answers_as_the_merged_sketch(
    parts: list[tuple[list[float], str]], raw: list[float], big: list[int]
) -> None:
    """SketchSum (numpy, sketches added packed) gives every quantile exactly
    as merging the decoded sketches one by one does."""
    merged, summed = Sketch(), SketchSum()
    for i, (values, form) in enumerate(parts):
        sketch = Sketch()
        sketch.add_values(values)
        for j, n in enumerate(big if i == 0 else []):  # wide counts, far keys
            sketch.pos[j * 700 - 350] = n
        merged.merge(Sketch.from_bytes(sketch.to_bytes()))
        if form == "packed":
            summed.add(sketch.to_bytes())
        elif form == "dict":
            summed.add(sketch)
        else:  # as stored before the packed form
            summed.add(orjson.dumps({"p": sketch.pos, "n": sketch.neg, "z": sketch.zero},
                                    option=orjson.OPT_NON_STR_KEYS))  # fmt: skip
    merged.add_values(raw)
    summed.add_values(raw)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert summed.quantile(q) == merged.quantile(q), q


@given(
    st.lists(
        st.lists(st.lists(st.floats(-1e9, 1e9, allow_nan=False), max_size=60), max_size=4),
        min_size=1,
        max_size=5,
    )
)
def test_sketch_sums_unpacked_together_answer_as_each_alone(
    cells: list[list[list[float]]],
) -> None:
    """``SketchSum.unpack_all`` (a query's answer buckets at once) gives each
    the quantiles it gives alone: no bin goes to another."""
    alone, together = [], []
    for sketches in cells:
        one, other = SketchSum(), SketchSum()
        for values in sketches:
            sketch = Sketch()
            sketch.add_values(values)
            one.add(sketch.to_bytes())
            other.add(sketch.to_bytes())
        alone.append(one)
        together.append(other)
    SketchSum.unpack_all(together)
    for one, other in zip(alone, together, strict=True):
        for q in (0.0, 0.5, 0.99, 1.0):
            assert other.quantile(q) == one.quantile(q)


def _load(path: pathlib.Path) -> tuple[Any, list[float]]:
    """Three hours of one noisy value a second, folded."""
    store = open_store(f"sqlite:///{path}")
    store.open()
    values = [float((i * 7919) % 1000) / 10 + 1 for i in range(3 * 3600)]
    store.write_batch(
        [
            Document("s", i, "sample", "p", BASE + i, "h", (), {"cpu": v})
            for i, v in enumerate(values)
        ]
    )
    store.fold_rollups()
    return store, values


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def test_a_percentile_over_minute_edges_reads_no_raw_rows(tmp_path: pathlib.Path) -> None:
    store, values = _load(tmp_path / "p.db")
    try:
        counting = _Counting(store)
        # 1 h 37 min starting 23 minutes in: hours and minutes, no raw edge
        lo, hi = 23 * 60, 23 * 60 + 97 * 60
        where = MetricQuery(ts_from=BASE + lo, ts_to=BASE + hi)
        for fn, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            [row] = run_aggregate(counting, AggregateQuery(fn, "cpu", where))  # type: ignore[arg-type]
            want = _exact(values[lo:hi], q)
            assert row.count == hi - lo
            assert row.value is not None and abs(row.value - want) <= 0.01 * want
        assert counting.raw == 0
        # ragged edges: only their raw rows (less than a minute each)
        where = MetricQuery(ts_from=BASE + lo - EDGE, ts_to=BASE + hi + EDGE)
        [row] = run_aggregate(counting, AggregateQuery("p95", "cpu", where))
        want = _exact(values[lo - EDGE : hi + EDGE], 0.95)
        assert row.value is not None and abs(row.value - want) <= 0.01 * want
        assert counting.raw == 2 * EDGE
    finally:
        store.close()


def test_minutes_folded_without_sketches_still_answer(tmp_path: pathlib.Path) -> None:
    """A store whose minutes were folded before they had sketches: the
    planner falls back to the hours and raw rows, and a minute that takes
    more rows does not get a sketch of only those."""
    path = tmp_path / "old.db"
    store, values = _load(path)
    try:
        with sqlite3.connect(path) as conn:
            conn.execute(f"UPDATE roll_{MINUTE} SET sketch = NULL")
        late = 3 * 3600 - 0.5  # into the last minute (folded already), after its rows
        store.write_batch([Document("s", 10**6, "sample", "p", BASE + late, "h", (), {"cpu": 5.0})])
        store.fold_rollups()
        values.append(5.0)
        with sqlite3.connect(path) as conn:
            assert conn.execute(f"SELECT count(*) FROM roll_{MINUTE} WHERE sketch IS NOT NULL"
                                ).fetchone() == (0,)  # fmt: skip
        lo, hi = 23 * 60, 3 * 3600
        where = MetricQuery(ts_from=BASE + lo, ts_to=BASE + hi)
        [row] = run_aggregate(store, AggregateQuery("p95", "cpu", where))
        want = _exact(values[lo:], 0.95)
        assert row.count == len(values) - lo
        assert row.value is not None and abs(row.value - want) <= 0.01 * want
    finally:
        store.close()
