"""Dense sketches (``rollup.DENSE``, SQLite's ten-minute tier): they decode
to the sketch they encode; summed all at once, mixed with packed and older
forms, every answer bucket gets the quantiles of its sketches merged one by
one; a database whose ten-minute sketches are packed (schema 10) has them
rewritten dense when it opens, with the same answers."""

from __future__ import annotations

import pathlib
import sqlite3

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.aggregate import AggregateQuery, run_aggregate, sketches
from deltawire.collector.aggregate.sketches import SketchSum
from deltawire.collector.stores import MetricQuery, open_store, sqlite_rollup
from deltawire.collector.stores.rollup import _PACKED, DENSE, TEN_MINUTES, Sketch
from deltawire.collector.stores.sqlite import _MIGRATIONS
from deltawire.protocol import Document

from .test_rollups import BASE

values = st.lists(
    st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False),
        st.floats(0.5, 2.0),  # close together: dense
        st.just(0.0),
    ),
    max_size=120,
)
#: counts wider than a byte (and than two) on a few keys: other widths
wide = st.lists(st.tuples(st.integers(-300, 300), st.integers(1, 2**33)), max_size=3)


def _sketch(vals: list[float], extra: list[tuple[int, int]]) -> Sketch:
    sketch = Sketch()
    sketch.add_values(vals)
    for key, n in extra:
        sketch.pos[key] = sketch.pos.get(key, 0) + n
    return sketch


@given(values, wide)
def test_dense_sketches_decode_to_what_they_encode(vals: list[float], extra: list) -> None:
    sketch = _sketch(vals, extra)
    raw = sketch.to_bytes(dense=True)
    assert raw[:1] in (DENSE, _PACKED)  # packed where the keys spread far
    assert Sketch.from_bytes(raw) == sketch
    close = _sketch([1.0 + i / 100 for i in range(len(vals))], [])
    assert close.to_bytes(dense=True)[:1] == DENSE


@pytest.mark.parametrize("cells", [sketches.DENSE_CELLS, 0])
@given(
    st.lists(
        st.tuples(
            values, wide, st.integers(0, 4), st.sampled_from(["dense", "packed", "json", "none"])
        ),
        max_size=14,
    )
)
def test_sketches_added_at_once_answer_as_merged_one_by_one(
    cells: int, parts: list[tuple[list[float], list, int, str]]
) -> None:
    """``SketchSum.add_packed``: dense sketches of several count widths,
    packed and JSON ones, and None (none), each to one of five sums; each
    sum's quantiles equal its sketches merged. ``cells`` 0: the sparse sum."""
    saved = sketches.DENSE_CELLS
    sketches.DENSE_CELLS = cells  # type: ignore[misc]
    try:
        merged = [Sketch() for _ in range(5)]
        stored: list[bytes | None] = []
        owner = []
        for vals, extra, i, form in parts:
            sketch = _sketch(vals, extra)
            owner.append(i)
            if form == "none":
                stored.append(None)
                continue
            merged[i].merge(sketch)
            if form == "json":  # as stored before the packed form
                stored.append(orjson.dumps({"p": sketch.pos, "n": sketch.neg, "z": sketch.zero},
                                           option=orjson.OPT_NON_STR_KEYS))  # fmt: skip
            else:
                stored.append(sketch.to_bytes(dense=form == "dense"))
        sums = [SketchSum() for _ in range(5)]
        SketchSum.add_packed(sums, np.array(owner, np.int64), stored)
        for want, got in zip(merged, sums, strict=True):
            for q in (0.0, 0.01, 0.5, 0.95, 0.99, 1.0):
                assert got.quantile(q) == want.quantile(q), q
    finally:
        sketches.DENSE_CELLS = saved  # type: ignore[misc]


def _tags(path: pathlib.Path) -> dict[bytes, int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            f"SELECT substr(sketch, 1, 1), count(*) FROM roll_{TEN_MINUTES}"
            " WHERE sketch IS NOT NULL GROUP BY 1"
        ).fetchall()
    return dict(rows)


def test_a_database_with_packed_ten_minutes_has_them_rewritten_dense(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "d.db"
    store = open_store(f"sqlite:///{path}")
    store.open()
    queries = [
        AggregateQuery(fn, "cpu", MetricQuery(ts_from=BASE + 600, ts_to=BASE + 6600), bucket=600.0)
        for fn in ("p50", "p99")
    ] + [AggregateQuery("p95", "cpu", MetricQuery(ts_from=BASE + 1200, ts_to=BASE + 4800))]
    try:
        store.write_batch(
            [
                Document(f"s{k}", i, "sample", "p", BASE + i * 3 + k, "h", (),
                         {"cpu": float((i * 7919 + k) % 1000) / 10 + 1, "far": 10.0 ** (i % 12)})
                for i in range(2400)
                for k in (0, 1)
            ]
        )  # fmt: skip
        store.fold_rollups()
        want = [run_aggregate(store, q) for q in queries]
    finally:
        store.close()
    tags = _tags(path)
    assert tags.get(DENSE) and tags.get(_PACKED)  # "far" spreads over 12 magnitudes: packed
    with sqlite3.connect(path) as conn:  # as schema 10 wrote them
        conn.create_function("packed", 1, lambda b: Sketch.from_bytes(b).to_bytes())
        conn.execute(
            f"UPDATE roll_{TEN_MINUTES} SET sketch = packed(sketch) WHERE sketch IS NOT NULL"
        )
        conn.execute(f"PRAGMA user_version = {_MIGRATIONS.index(sqlite_rollup.MIGRATION_DENSE)}")
    assert set(_tags(path)) == {_PACKED}
    store = open_store(f"sqlite:///{path}")
    store.open()
    try:
        assert _tags(path) == tags
        assert [run_aggregate(store, q) for q in queries] == want
    finally:
        store.close()
