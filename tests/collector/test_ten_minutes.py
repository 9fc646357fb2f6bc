"""The SQLite store's ten-minute tier: folded like the others, and built from
the minutes when a database from before it opens (schema migration), with
answers still equal to a raw scan. (The property tests of test_rollups.py
cover it too: their 10 min and hour buckets and windows read it.)"""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

from deltawire.collector.aggregate import AggregateQuery, run_aggregate
from deltawire.collector.stores import MetricQuery, open_store, sqlite_rollup
from deltawire.collector.stores.rollup import TEN_MINUTES
from deltawire.collector.stores.sqlite import _MIGRATIONS
from deltawire.protocol import Document

from .test_rollups import _all_docs, assert_same, reference

BASE = 1_795_003_200.0  # a whole hour


def _docs(start: int, count: int) -> list[Document]:
    # two series, ~2 h, counters with resets, a late document
    return [
        Document(f"s{k}", start + i, "sample", "p", BASE + (start + i) * 7 + k, f"h{k}", (),
                 {"n": (start + i) % 97 + k, "c": ((start + i) * 13) % 500})
        for i in range(count)
        for k in (0, 1)
    ]  # fmt: skip


def _tens(path: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return {
            (s, p, b): rest
            for s, p, b, *rest in conn.execute(
                "SELECT s.session, s.path, b.bucket, b.n, b.sum, b.min, b.max, b.fts, b.fv,"
                " b.lts, b.lv, b.inc, b.sketch FROM roll_600 AS b"
                " JOIN roll_series AS s ON s.id = b.series"
            )
        }


QUERIES = [
    AggregateQuery("p95", "n", MetricQuery(ts_from=BASE + 600, ts_to=BASE + 4800), bucket=600.0),
    AggregateQuery("rate", "c", MetricQuery(ts_from=BASE + 613, ts_to=BASE + 5000), by="host"),
    AggregateQuery("avg", "n", MetricQuery(ts_from=BASE + 61, ts_to=BASE + 6000), bucket=600.0),
    AggregateQuery("count", None, MetricQuery(ts_from=BASE + 1200, ts_to=BASE + 4200)),
    AggregateQuery("max", "c", MetricQuery(ts_from=BASE + 599, ts_to=BASE + 7201), by="session"),
]


def test_a_database_from_before_ten_minutes_builds_them_from_its_minutes(
    tmp_path: pathlib.Path,
) -> None:
    old, fresh = str(tmp_path / "old.db"), str(tmp_path / "fresh.db")
    for path in (old, fresh):
        store = open_store(f"sqlite:///{path}")
        store.open()
        try:
            store.write_batch(_docs(0, 900))
            store.fold_rollups()
            store.write_batch(_docs(900, 100))  # a tail, not folded
            assert store.delete(_all_docs(store)[5]["id"])  # a dirty minute, ten and hour
        finally:
            store.close()
    with sqlite3.connect(old) as conn:  # as written by the build before the tier
        conn.execute("DROP TABLE roll_600")
        conn.execute(f"DELETE FROM roll_dirty WHERE tier = {TEN_MINUTES}")
        conn.execute(
            f"PRAGMA user_version = {_MIGRATIONS.index(sqlite_rollup.MIGRATION_TEN_MINUTES)}"
        )
    built = open_store(f"sqlite:///{old}")
    built.open()
    try:
        assert _tens(old) == _tens(fresh)  # the same buckets as folding made
        with sqlite3.connect(old) as conn:
            marks = conn.execute(
                "SELECT tier, count(*) FROM roll_dirty GROUP BY tier ORDER BY tier"
            ).fetchall()
        assert marks == [(60, 3), (600, 3), (3600, 3)]  # the documents, n and c
        docs = _all_docs(built)
        for q in QUERIES:
            assert_same(run_aggregate(built, q), reference(docs, q), q)
        built.fold_rollups()  # the tail folded, the dirty buckets repaired
        with sqlite3.connect(old) as conn:
            assert conn.execute("SELECT count(*) FROM roll_dirty").fetchone() == (0,)
        for q in QUERIES:
            assert_same(run_aggregate(built, q), reference(docs, q), q)
    finally:
        built.close()


def test_ten_minute_buckets_are_their_minutes_merged(tmp_path: pathlib.Path) -> None:
    """After folds in several checkpoints, a late document and a repair, each
    ten-minute bucket holds what its minutes hold."""
    path = str(tmp_path / "t.db")
    store = open_store(f"sqlite:///{path}")
    store.open()
    try:
        store.write_batch(_docs(0, 400))
        store.fold_rollups()
        store.write_batch(_docs(400, 300))
        late = Document("s0", 10_000, "sample", "p", BASE + 65, "h0", (), {"n": 5, "c": 1})
        store.write_batch([late])
        store.fold_rollups()
        assert store.delete(_all_docs(store)[40]["id"])
        store.fold_rollups()
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM roll_dirty").fetchone() == (0,)
        want = dict(
            conn.execute(
                f"SELECT series || ':' || (bucket / {TEN_MINUTES}), sum(n) || ':' || total(sum)"
                " || ':' || min(min) || ':' || max(max) FROM roll_60 GROUP BY 1"
            ).fetchall()
        )
        got = dict(
            conn.execute(
                f"SELECT series || ':' || (bucket / {TEN_MINUTES}), n || ':' || total(sum)"
                " || ':' || min || ':' || max FROM roll_600 GROUP BY 1"
            ).fetchall()
        )
    assert got == want
