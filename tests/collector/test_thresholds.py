"""Thresholds answered from the tiers ("count where duration_ms > 200") equal a raw
scan of the documents that pass, whatever the data, the fold state and the query."""

from __future__ import annotations

import pathlib
import sqlite3
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.collector.aggregate import (
    AggregateError,
    AggregateQuery,
    Threshold,
    parse_where,
    run_aggregate,
)
from deltawire.collector.aggregate.query import THRESHOLD_FNS
from deltawire.collector.stores import MetricQuery, open_store, rollup_vals
from deltawire.collector.stores.rollup import RAW, RollupRequest
from deltawire.protocol import Document
from tests.strategies import examples

from .test_rollups import (
    _SUPPRESS,
    BASE,
    FIELDS,
    _all_docs,
    _value,
    actions,
    apply,
    assert_same,
    numbers,
    queries,
    reference,
)


@st.composite
def threshold_queries(draw: st.DrawFn) -> AggregateQuery:
    q = draw(queries().filter(lambda q: q.fn in THRESHOLD_FNS))
    path = q.field or draw(st.sampled_from(FIELDS))
    op = draw(st.sampled_from((">", ">=", "<", "<=")))
    return replace(q, threshold=Threshold(path, op, draw(numbers)))


def passing(docs: list[dict[str, Any]], th: Threshold) -> list[dict[str, Any]]:
    out = []
    for d in docs:
        v = _value(d, th.field)
        if type(v) in (int, float) and th.passes(v):
            out.append(d)
    return out


def forget_values(store: Any) -> None:
    """The minute and hour buckets' stored values gone, as in a database
    folded before ``roll_vals`` existed (its buckets have none): thresholds
    read raw rows."""
    with sqlite3.connect(store.path) as conn:
        conn.execute("DELETE FROM roll_vals")
        conn.execute("DELETE FROM roll_hvals")


@settings(max_examples=examples(60), deadline=None, suppress_health_check=_SUPPRESS)
@given(
    acts=actions,
    qs=st.lists(threshold_queries(), min_size=1, max_size=6),
    forget_at=st.one_of(st.none(), st.integers(0, 10)),
    chunk=st.sampled_from((1, 3, rollup_vals.HOUR_CHUNK)),
)
def test_thresholds_from_the_tiers_equal_a_raw_scan(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    acts: list[tuple[Any, ...]],
    qs: list[AggregateQuery],
    forget_at: int | None,
    chunk: int,
) -> None:
    """Cut hours answered from their sorted chunks (``rollup_vals``: of any
    size), cut minutes from their stored values, from their raw rows where a
    database upgraded part way has none, or a mix."""
    monkeypatch.setattr(rollup_vals, "HOUR_CHUNK", chunk)
    store = open_store(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    store.open()
    try:
        if forget_at is None:
            apply(store, acts, can_fold=True)
        else:
            apply(store, acts[:forget_at], can_fold=True)
            forget_values(store)
            apply(store, acts[forget_at:], can_fold=True)
        docs = _all_docs(store)
        for _ in range(2):  # with a tail not folded yet, then all folded
            for q in qs:
                assert q.threshold is not None
                assert_same(run_aggregate(store, q), reference(passing(docs, q.threshold), q), q)
            store.fold_rollups()
    finally:
        store.close()


class _Counting:
    """A store that counts the raw rows it reads."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.rollup_tiers = store.rollup_tiers
        self.rollup_sketch_tiers = store.rollup_sketch_tiers
        self.raw = 0

    def rollup_read(self, req: RollupRequest) -> Any:
        data = self.store.rollup_read(req)
        # raw rows: one by one, or summed by the store (tier RAW buckets)
        self.raw += len(data.points) + sum(b.part.n for b in data.buckets if b.tier == RAW)
        return data


@pytest.mark.parametrize("stored_values", [True, False])
def test_only_the_buckets_the_threshold_cuts_are_read_raw(
    tmp_path: pathlib.Path, stored_values: bool
) -> None:
    """Four hours of one value a second, 0..59 each minute, except one minute
    of the third hour that reaches 100: "over 80" reads that minute only:
    its stored values, or (a database folded before they were) its raw rows."""
    store = open_store(f"sqlite:///{tmp_path / 'th.db'}")
    store.open()
    try:
        docs = [
            Document("s", i, "sample", "p", BASE + i, "h", (), {"ms": i % 60 + (41 if 9000 <= i < 9060 else 0)})
            for i in range(4 * 3600)
        ]  # fmt: skip
        store.write_batch(docs)
        store.fold_rollups()
        if not stored_values:
            forget_values(store)
        counting = _Counting(store)
        where = MetricQuery(ts_from=BASE, ts_to=BASE + 4 * 3600)
        q = AggregateQuery("count", where=where, threshold=parse_where("ms > 80"))
        [row] = run_aggregate(counting, q)
        assert row.value == sum(1 for i in range(9000, 9060) if i % 60 + 41 > 80)
        # the rows of the one cut minute that pass (the store filters in SQL), nothing
        # else; none at all where its values are stored
        assert counting.raw == (0 if stored_values else 20)
        q = replace(q, threshold=parse_where("ms >= 0"))  # every bucket wholly inside
        counting.raw = 0
        assert run_aggregate(counting, q)[0].value == 4 * 3600
        assert counting.raw == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"fn": "rate", "field": "ms", "threshold": Threshold("ms", ">", 1)}, "rate"),
        ({"fn": "avg", "field": "ms", "threshold": Threshold("cpu", ">", 1)}, "on the field"),
    ],
)
def test_thresholds_the_engine_refuses(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(AggregateError, match=needle) as e:
        AggregateQuery(**kwargs)
    assert e.value.parameter == "where"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("duration_ms > 200", Threshold("duration_ms", ">", 200)),
        ("value<=1.5", Threshold("value", "<=", 1.5)),
        (" cpu.percent >= -3e2 ", Threshold("cpu.percent", ">=", -300)),
    ],
)
def test_where_text(text: str, want: Threshold) -> None:
    assert parse_where(text) == want
    assert parse_where(want.text()) == want


@pytest.mark.parametrize(
    "text", ["", "ms", "ms > ", "ms = 3", "ms > abc", "> 3", "a b > 1", "ms > inf"]
)
def test_bad_where_text(text: str) -> None:
    with pytest.raises(AggregateError) as e:
        parse_where(text)
    assert e.value.parameter == "where"


def test_a_threshold_that_would_read_too_many_raw_rows_is_refused_before_reading(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noisy data: every bucket's range straddles the threshold, so each
    would be read raw; past the cap the engine refuses before that read."""
    from deltawire.collector.aggregate import QueryTooHeavy, threshold

    store = open_store(f"sqlite:///{tmp_path / 'noisy.db'}")
    store.open()
    try:
        store.write_batch(
            [
                Document("s", i, "sample", "p", BASE + i, "h", (), {"ms": i % 60})
                for i in range(7200)
            ]
        )
        store.fold_rollups()
        counting = _Counting(store)
        q = AggregateQuery("count", where=MetricQuery(), threshold=parse_where("ms > 30"))
        monkeypatch.setattr(threshold, "MAX_RAW_ROWS", 7199)
        # every minute is cut, and answered from its stored values: no raw read
        [row] = run_aggregate(counting, q)
        assert row.value == 7200 * 29 // 60
        assert counting.raw == 0
        forget_values(store)  # as folded before roll_vals: every minute read raw
        with pytest.raises(QueryTooHeavy, match="7,200 values"):
            run_aggregate(counting, q)
        assert counting.raw == 0  # refused before the raw read
        monkeypatch.setattr(threshold, "MAX_RAW_ROWS", 7200)
        assert run_aggregate(counting, q) == [row]
        assert counting.raw == row.value
    finally:
        store.close()
