"""The sorted values of minute buckets (``roll_vals``, rollup_vals.py): what a
threshold reads instead of raw JSON. They must be exactly the bucket's raw
values whatever happened to the store (late documents, API edits and
deletes, a folder stopped half way), and what passes a threshold must be
what passes of the raw values."""

from __future__ import annotations

import math
import pathlib
import sqlite3
import uuid
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.collector.aggregate import AggregateQuery, parse_where, run_aggregate
from deltawire.collector.stores import MetricQuery, open_store, rollup_vals
from deltawire.collector.stores.rollup import DOCS
from deltawire.collector.stores.sqlite import _MIGRATIONS
from deltawire.protocol import Document
from tests.strategies import examples

from .test_rollups import (
    _SUPPRESS,
    BASE,
    NAMES,
    SESSIONS,
    _all_docs,
    _value,
    actions,
    apply,
    numbers,
)

OPS = (">", ">=", "<", "<=")

ints64 = st.integers(-(2**63), 2**63 - 1)
values = st.one_of(
    st.lists(numbers, min_size=1, max_size=80),
    st.lists(ints64, min_size=1, max_size=20),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20),
)


def _passes(v: float, op: str, x: float) -> bool:
    return {">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x}[op]


@settings(max_examples=examples(300), deadline=None)
@given(vals=values, op=st.sampled_from(OPS), x=st.one_of(numbers, ints64.map(float)))
def test_what_passes_equals_the_raw_values_that_pass(vals: list[Any], op: str, x: float) -> None:
    blob = rollup_vals.pack(vals)
    if blob is None:  # no row: all equal (a threshold never cuts them) or not exact
        big = any(type(v) is int for v in vals) and any(type(v) is float for v in vals)
        assert min(vals) == max(vals) or big
        return
    assert rollup_vals.values(blob) == sorted(vals)
    want = sorted(v for v in vals if _passes(v, op, x))
    got = rollup_vals.passing(blob, op, x)
    if not want:
        assert got is None
        return
    assert got is not None
    assert (got.n, got.min, got.max) == (len(want), want[0], want[-1])
    assert got.values() == want
    assert math.isclose(got.sum, sum(want), rel_tol=1e-9, abs_tol=1e-6)
    if all(type(v) is int for v in vals):
        assert got.sum == sum(want)  # integers: exact


def test_integers_pack_narrow() -> None:
    """A counter's minute: offsets from the smallest, in the narrowest width."""
    assert len(rollup_vals.pack([10**12 + i * 300 for i in range(60)]) or b"") == 10 + 60 * 2
    assert len(rollup_vals.pack([3, 4, 5, 4]) or b"") == 10 + 4
    assert len(rollup_vals.pack([0.5, 1.5]) or b"") == 1 + 16


def _stored(path: str) -> dict[tuple[Any, ...], tuple[int, float, float, list[float] | None]]:
    """(session, kind, name, host, tags, path, minute) -> (n, min, max, stored values)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT s.session, s.kind, s.name, s.host, s.tags, s.path, b.bucket, b.n, b.min,"
            " b.max, v.vals FROM roll_60 AS b JOIN roll_series AS s ON s.id = b.series"
            " LEFT JOIN roll_vals AS v ON v.series = b.series AND v.bucket = b.bucket"
        ).fetchall()
        orphans = conn.execute(
            "SELECT count(*) FROM roll_vals AS v WHERE NOT EXISTS"
            " (SELECT 1 FROM roll_60 AS b WHERE b.series = v.series AND b.bucket = v.bucket)"
        ).fetchone()[0]
    assert orphans == 0  # no values outlive their bucket
    return {
        (*r[:6], r[6]): (r[7], r[8], r[9], None if r[10] is None else rollup_vals.values(r[10]))
        for r in rows
    }


def _raw_minutes(docs: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[float]]:
    import orjson

    out: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for d in docs:
        tags = orjson.dumps(d["tags"]).decode()
        minute = int(d["ts"] // 60 * 60)
        stream = (d["session"], d["kind"], d["name"], d["host"], tags)
        for path in ("value", "cpu.p", "n", "deep.a.b"):
            v = _value(d, path)
            if type(v) in (int, float):
                out[(*stream, path, minute)].append(v)
    return out


# Documents in three minutes, so that minutes hold several values (test_rollups'
# spread over three hours, mostly one a minute, which needs no stored values),
# edited, deleted and folded in any order.
_near = st.builds(lambda s, ms: BASE + s + ms / 1000, st.integers(0, 179), st.integers(0, 999))
_small = st.one_of(st.integers(-5, 5), st.floats(-5, 5).map(lambda f: round(f, 1)), st.none())
_data = st.fixed_dictionaries({"cpu": st.fixed_dictionaries({"p": _small}), "n": _small})
_write = st.tuples(
    st.just("write"),
    st.lists(
        st.tuples(st.sampled_from(SESSIONS), st.sampled_from(NAMES), st.just("sample"),
                  st.lists(st.tuples(_near, _data), min_size=2, max_size=40), st.booleans()),
        min_size=1, max_size=2,
    ),
)  # fmt: skip
_point = st.fixed_dictionaries(
    {"name": st.sampled_from(NAMES), "value": _small.filter(lambda v: v is not None),
     "ts": _near, "tags": st.just([]), "data": _data}
)  # fmt: skip
clustered = st.builds(
    lambda first, rest: [first, *rest],
    _write,
    st.lists(
        st.one_of(
            _write,
            st.tuples(st.just("create"), _point),
            st.tuples(st.just("delete"), st.integers(0, 10**6)),
            st.tuples(st.just("replace"), st.integers(0, 10**6), _point),
            st.tuples(st.just("fold"), st.none()),
            st.tuples(st.just("halffold"), st.integers(1, 4)),
        ),
        max_size=12,
    ),
)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=_SUPPRESS)
@given(acts=st.one_of(clustered, clustered, actions))
def test_stored_values_are_the_raw_values_of_each_minute(
    tmp_path: pathlib.Path, acts: list[tuple[Any, ...]]
) -> None:
    """After any writes, edits, deletes and folds, each minute bucket's stored
    values are its raw values, sorted; no row where they are all equal or too many."""
    store = open_store(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    store.open()
    try:
        apply(store, acts, can_fold=True)
        store.fold_rollups()
        raw = _raw_minutes(_all_docs(store))
        for key, (n, low, high, stored) in _stored(store.path).items():
            if key[5] == DOCS:
                assert stored is None
                continue
            want = sorted(raw[key])
            assert (n, low, high) == (len(want), want[0], want[-1]), key
            keep = low != high and n <= rollup_vals.MAX_VALUES
            assert stored == (want if keep else None), key
    finally:
        store.close()


def test_a_database_folded_before_stored_values_opens_and_stays_exact(
    tmp_path: pathlib.Path,
) -> None:
    """The schema before roll_vals: it upgrades in place; its buckets have no
    values (thresholds read their raw rows), and a bucket that later documents
    add to gets none either (the old ones are unknown), while new ones do."""
    path = str(tmp_path / "old.db")
    store = open_store(f"sqlite:///{path}")
    store.open()
    docs = [
        Document("s", i, "sample", "p", BASE + i, "h", (), {"ms": i % 7})
        for i in range(90)  # a minute and a half
    ]
    store.write_batch(docs[:75])
    store.fold_rollups()
    store.close()
    with sqlite3.connect(path) as conn:  # as written by the build before roll_vals
        # (and the later migrations' tables)
        for table in ("roll_vals", "roll_600", "roll_hvals", "roll_hbuild"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute(f"PRAGMA user_version = {_MIGRATIONS.index(rollup_vals.MIGRATION)}")
    store = open_store(f"sqlite:///{path}")
    store.open()
    try:
        later = [Document("s", 90 + i, "sample", "p", BASE + 150 + i, "h", (), {"ms": 3.5 + i})
                 for i in range(2)]  # fmt: skip
        store.write_batch(docs[75:] + later)
        store.fold_rollups()
        stored = {k[6] - BASE: v[3] for k, v in _stored(path).items() if k[5] == "ms"}
        assert stored == {0: None, 60: None, 120: [3.5, 4.5]}
        q = AggregateQuery("sum", "ms", MetricQuery(), threshold=parse_where("ms > 4"))
        [row] = run_aggregate(store, q)
        want = [i % 7 for i in range(90) if i % 7 > 4] + [4.5]
        assert (row.value, row.count) == (sum(want), len(want))
    finally:
        store.close()


def test_edits_of_folded_documents_rebuild_their_minutes_values(tmp_path: pathlib.Path) -> None:
    """An API delete and an update of documents already folded: the folder's
    repair rebuilds their minute, values included."""
    store = open_store(f"sqlite:///{tmp_path / 'edits.db'}")
    store.open()
    try:
        store.write_batch(
            [Document("s", i, "sample", "p", BASE + i, "h", (), {"ms": i}) for i in range(10)]
        )
        store.fold_rollups()
        docs = {d["data"]["ms"]: d["id"] for d in _all_docs(store)}
        assert store.delete(docs[9])
        assert store.replace(docs[0], {"name": "p", "ts": BASE, "data": {"ms": 0.5}}) is not None
        store.fold_rollups()
        [(n, low, high, stored)] = [v for k, v in _stored(store.path).items() if k[5] == "ms"]
        assert (n, low, high, stored) == (9, 0.5, 8, [0.5, *range(1, 9)])
    finally:
        store.close()


def test_a_minute_of_too_many_values_keeps_none(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_VALUES a minute keeps no values (the folder would re-pack it
    at every checkpoint), folded at once or bit by bit; thresholds stay exact."""
    monkeypatch.setattr(rollup_vals, "MAX_VALUES", 25)
    store = open_store(f"sqlite:///{tmp_path / 'many.db'}")
    store.open()
    try:
        docs = [Document("s", i, "sample", "p", BASE + i, "h", (), {"ms": i}) for i in range(50)]
        store.write_batch(docs[:20])
        store.fold_rollups()
        assert [v[3] for k, v in _stored(store.path).items() if k[5] == "ms"] == [list(range(20))]
        store.write_batch(docs[20:])
        store.fold_rollups()
        stored = {k[6] - BASE: v[3] for k, v in _stored(store.path).items() if k[5] == "ms"}
        assert stored == {0: None}  # 50 values: none kept (the old row is gone)
        q = AggregateQuery("count", "ms", MetricQuery(), threshold=parse_where("ms > 9"))
        assert [r.value for r in run_aggregate(store, q)] == [40]
    finally:
        store.close()


# -- an hour's values in sorted chunks (roll_hvals) -----------------------------------


def _chunk_for(rows: list[tuple[Any, int, bytes]], op: str, x: float) -> bytes | None:
    """The chunk ``rollup_vals.hour_sql`` selects: the last by (first value,
    number) whose first value is <= x (> and <=) or < x (>= and <)."""
    fits = [r for r in rows if (r[0] <= x if op in (">", "<=") else r[0] < x)]
    return max(fits, key=lambda r: (r[0], r[1]))[2] if fits else None


@settings(max_examples=examples(300), deadline=None)
@given(
    vals=values,
    op=st.sampled_from(OPS),
    x=st.one_of(numbers, ints64.map(float)),
    size=st.integers(1, 9),
)
def test_an_hours_chunk_tells_what_passes_of_the_whole_hour(
    vals: list[Any], op: str, x: float, size: int
) -> None:
    """Of a cut hour, the one chunk where the threshold divides its sorted
    values gives the count, sum, min and max of all the values that pass."""
    rows = rollup_vals.hour_chunks(vals, size)
    if rows is None:  # all equal, or a number (or a sum) an int64 cannot hold
        big = any(abs(v) >= 2**53 for v in vals) or abs(sum(vals)) >= 2**63
        assert min(vals) == max(vals) or big
        return
    low, high = min(vals), max(vals)
    if _passes(low, op, x) == _passes(high, op, x):
        return  # not cut: the tiers answer from min and max
    blob = _chunk_for(rows, op, x)
    assert blob is not None  # a cut hour always has it
    got = rollup_vals.hour_totals(blob, op, x, len(vals), low, high)
    want = sorted(v for v in vals if _passes(v, op, x))
    assert got is not None
    n, total, least, most = got
    assert (n, least, most) == (len(want), want[0], want[-1])
    assert math.isclose(total, sum(want), rel_tol=1e-9, abs_tol=1e-6)
    if all(type(v) is int for v in vals):
        assert total == sum(want)  # integers: exact
    # any other chunk is not where x divides the values: it says so
    for r in rows:
        if r[2] != blob:
            assert rollup_vals.hour_totals(r[2], op, x, len(vals), low, high) is None


def _hours(path: str) -> tuple[int, int]:
    """(hours with chunks, hours marked to build) of the store at ``path``."""
    with sqlite3.connect(path) as conn:
        built = conn.execute("SELECT count(DISTINCT bucket) FROM roll_hvals").fetchone()[0]
        marked = conn.execute("SELECT count(*) FROM roll_hbuild").fetchone()[0]
    return built, marked


class _Reads:
    """A store that records the tiers of the segments each read asks for."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.rollup_tiers = store.rollup_tiers
        self.rollup_sketch_tiers = store.rollup_sketch_tiers
        self.tiers: list[set[int]] = []

    def rollup_read(self, req: Any) -> Any:
        self.tiers.append({s.tier for s in req.segments})
        return self.store.rollup_read(req)


def test_an_hour_written_again_is_read_from_its_minutes_until_built_again(
    tmp_path: pathlib.Path,
) -> None:
    """Noisy hours: a threshold reads each one's chunk, no minute; a late
    document makes one hour's chunks stale: until the folder builds it again
    it is read as its minutes (exact all along); a store upgraded with no
    minute values builds its hours from the raw rows."""
    store = open_store(f"sqlite:///{tmp_path / 'hours.db'}")
    store.open()
    try:
        ms = [(i * 37) % 101 for i in range(3 * 3600)]  # every minute spans 0..100
        store.write_batch(
            [
                Document("s", i, "sample", "p", BASE + i, "h", (), {"ms": v})
                for i, v in enumerate(ms)
            ]
        )
        store.fold_rollups()
        assert _hours(store.path) == (3, 0)
        q = AggregateQuery("sum", "ms", MetricQuery(), threshold=parse_where("ms > 80"))
        reads = _Reads(store)
        [row] = run_aggregate(reads, q)
        assert (row.value, row.count) == (sum(v for v in ms if v > 80), sum(v > 80 for v in ms))
        assert reads.tiers == [{3600}]  # one read: the hours; no minute read again
        # a late document in the second hour, folded: that hour is marked
        store.write_batch([Document("s", 10**5, "sample", "p", BASE + 4000.5, "h", (), {"ms": 99})])
        store._absorb(10**6)
        store._checkpoint()
        assert _hours(store.path) == (3, 1)
        reads.tiers.clear()
        [row] = run_aggregate(reads, q)
        assert (row.value, row.count) == (
            sum(v for v in ms if v > 80) + 99,
            sum(v > 80 for v in ms) + 1,
        )
        assert reads.tiers == [{3600}, {60}]  # its minutes, read again
        store.fold_rollups()  # builds it
        assert _hours(store.path) == (3, 0)
        reads.tiers.clear()
        assert run_aggregate(reads, q) == [row]
        assert reads.tiers == [{3600}]
        # as upgraded from a store whose minutes have no values: built from raw rows
        with sqlite3.connect(store.path) as conn:
            conn.execute("DELETE FROM roll_vals")
            conn.execute("DELETE FROM roll_hvals")
            conn.execute(rollup_vals.MIGRATION_HOURS[-1])
        assert _hours(store.path) == (0, 3)
        store.fold_rollups()
        assert _hours(store.path) == (3, 0)
        reads.tiers.clear()
        assert run_aggregate(reads, q) == [row]
        assert reads.tiers == [{3600}]
    finally:
        store.close()
