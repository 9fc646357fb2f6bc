"""API writes on the SQLite store next to other writing processes: the shared
write lock (sqlite_lock.py), the dirty marks an update or delete leaves on the
buckets it touches and the folder's repair of them (sqlite_rollup.mark_dirty,
read_repair: hours rebuilt from minutes)."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltawire.collector.aggregate import AggregateQuery, run_aggregate
from deltawire.collector.stores import open_store
from deltawire.collector.stores import sqlite_rollup as sr
from deltawire.collector.stores.base import Change, Create, Delete, Edit, MetricQuery, Replace
from deltawire.collector.stores.rollup import HOUR, MINUTE, Sketch, stream_columns
from deltawire.collector.stores.sqlite import _ROLLUP_SQL
from tests.strategies import examples

from .test_rollups import _all_docs, actions, api_point, apply, assert_same, queries, reference

# A process that opens the store, holds a write transaction until told to
# let go, then exits.
_HOLDER = """
import sys
from deltawire.collector.stores import open_store
store = open_store(sys.argv[1])
store.open()
with store._transaction("hold"):
    print("held", flush=True)
    sys.stdin.readline()
store.close()
"""


def test_a_write_waits_for_another_process_instead_of_failing_busy(
    tmp_path: pathlib.Path,
) -> None:
    # busy_timeout_ms=50: SQLite's own busy handler alone would give up (503)
    # long before the other process lets go.
    uri = f"sqlite:///{tmp_path / 'w.db'}?busy_timeout_ms=50"
    store = open_store(uri)
    store.open()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, uri],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        done = threading.Event()
        result: list[Any] = []

        def create() -> None:
            try:
                result.append(store.create({"name": "p", "value": 1.0}))
            except Exception as exc:  # reported by the assertion below
                result.append(exc)
            done.set()

        worker = threading.Thread(target=create)
        worker.start()
        # Well past busy_timeout: the write is still waiting, not failed.
        assert not done.wait(0.5), result
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert done.wait(10), "the write never got the lock"
        worker.join()
        assert isinstance(result[0], dict) and result[0]["name"] == "p", result
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(10)
        store.close()


_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _hours(conn: sqlite3.Connection) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT s.session, s.kind, s.name, s.host, s.tags, s.path, b.bucket,"
        " b.n, b.sum, b.min, b.max, b.fts, b.fv, b.lts, b.lv, b.inc, b.sketch"
        f" FROM roll_{HOUR} AS b JOIN roll_series AS s ON s.id = b.series"
    ).fetchall()
    return {row[:7]: row[7:] for row in rows}


@settings(max_examples=examples(40), deadline=None, suppress_health_check=_SUPPRESS)
@given(acts=actions)
def test_hour_buckets_after_edits_equal_a_rebuild_from_raw(
    tmp_path: pathlib.Path, acts: list[tuple[Any, ...]]
) -> None:
    """Edits mark buckets dirty; the folder's repair rebuilds hours from their
    minutes (sketches merged); rebuilding every hour from the raw rows must
    give the same."""
    db = tmp_path / f"{uuid.uuid4().hex}.db"
    # Tiers kept forever: the minute-based rebuild applies whatever the date.
    store = open_store(f"sqlite:///{db}", rollup_retention_days=(0, 0))
    store.open()
    try:
        apply(store, [acts[0], ("fold", None), *acts[1:]], can_fold=True)
        store.fold_rollups()
    finally:
        store.close()
    _assert_hours_match_raw(tmp_path, db)


def _assert_hours_match_raw(tmp_path: pathlib.Path, db: pathlib.Path) -> None:
    """Every hour bucket of ``db`` equals a rebuild from the raw rows (on a copy)."""
    copy = tmp_path / f"{uuid.uuid4().hex}.db"
    shutil.copyfile(db, copy)
    got_conn = sqlite3.connect(db)
    want_conn = sqlite3.connect(copy, isolation_level=None)
    try:
        got = _hours(got_conn)
        # every hour that has minutes has a row, and no other
        minutes = {
            (sid, bucket // HOUR * HOUR)
            for sid, bucket in got_conn.execute("SELECT series, bucket FROM roll_60")
        }
        hours = set(got_conn.execute(f"SELECT series, bucket FROM roll_{HOUR}").fetchall())
        assert hours == minutes
        mark = sr.watermark(want_conn)
        ids = sr.SeriesIds()
        want_conn.execute("BEGIN")
        for key in got:
            stream, path, start = key[:5], key[5], key[6]
            key = (stream, path, HOUR, start)
            sr._write_recomputed(
                want_conn, ids, key, *sr._recomputed(want_conn, _ROLLUP_SQL, key, mark)
            )
        want_conn.execute("COMMIT")
        want = _hours(want_conn)
    finally:
        got_conn.close()
        want_conn.close()
    assert got.keys() == want.keys()
    for key, g in got.items():
        w = want[key]
        n, total, lo, hi, fts, fv, lts, lv, inc, sketch = g
        assert (n, lo, hi, fts, fv, lts, lv) == (w[0], w[2], w[3], w[4], w[5], w[6], w[7]), key
        assert abs(total - w[1]) <= 1e-9 * max(1.0, abs(w[1])), key
        assert abs(inc - w[8]) <= 1e-9 * max(1.0, abs(w[8])), key
        assert Sketch.from_bytes(sketch) == Sketch.from_bytes(w[9]), key


_edits = st.lists(
    st.one_of(
        st.tuples(st.just("replace"), st.integers(0, 10**6), api_point),
        st.tuples(st.just("delete"), st.integers(0, 10**6)),
        st.tuples(st.just("create"), api_point),
        # PUT/PATCH (fields) and DELETE (None) as the API sends them: runs of
        # these go in together (SqliteStore._changes_in).
        st.tuples(st.just("change"), st.integers(0, 10**6), st.one_of(st.none(), api_point)),
    ),
    min_size=1,
    max_size=8,
)


def _ops(edits: list[tuple[Any, ...]], docs: list[dict[str, Any]]) -> list[Edit]:
    """The drawn edits as store edits: the k-th document of ``docs``."""
    ops: list[Edit] = []
    for act in edits:
        if act[0] == "create":
            ops.append(Create(act[1]))
        elif docs:
            doc_id = docs[act[1] % len(docs)]["id"]
            if act[0] == "change":
                ops.append(Change(doc_id, lambda old, fields=act[2]: fields))
            else:
                ops.append(Replace(doc_id, act[2]) if act[0] == "replace" else Delete(doc_id))
    return ops


def _tiers(db: pathlib.Path) -> tuple[Any, ...]:
    conn = sqlite3.connect(db)
    try:
        minutes = conn.execute(
            "SELECT s.session, s.kind, s.name, s.host, s.tags, s.path, b.*"
            " FROM roll_60 AS b JOIN roll_series AS s ON s.id = b.series ORDER BY 1, 2, 3, 4, 5, 6, 8"
        ).fetchall()
        # repr: a NULL host sorts beside a named one (None < str would raise).
        dirty = sorted(set(conn.execute("SELECT * FROM roll_dirty").fetchall()), key=repr)
        return [m[:6] + m[7:] for m in minutes], _hours(conn), dirty
    finally:
        conn.close()


@settings(max_examples=examples(25), deadline=None, suppress_health_check=_SUPPRESS)
@given(acts=actions, edits=_edits, fold_first=st.booleans())
def test_edits_in_one_transaction_leave_the_tiers_serial_edits_leave(
    tmp_path: pathlib.Path, acts: list[tuple[Any, ...]], edits: list[tuple[Any, ...]],
    fold_first: bool,
) -> None:  # fmt: skip
    """The group commit's apply_edits marks each touched bucket dirty; the
    tiers (minutes, hours, buckets left dirty) must be what one edit per
    transaction leaves, folded or not yet; after the folder's repair the
    hours equal a rebuild from the raw rows."""
    db = tmp_path / f"{uuid.uuid4().hex}.db"
    uri = "sqlite:///{}"
    store = open_store(uri.format(db), rollup_retention_days=(0, 0))
    store.open()
    try:
        apply(store, [acts[0], ("fold", None), *acts[1:]], can_fold=True)
        if fold_first:
            store.fold_rollups()
        docs = _all_docs(store)
    finally:
        store.close()
    ops = _ops(edits, docs)
    serial_db = tmp_path / f"{uuid.uuid4().hex}.db"
    shutil.copyfile(db, serial_db)
    batched = open_store(uri.format(db), rollup_retention_days=(0, 0))
    serial = open_store(uri.format(serial_db), rollup_retention_days=(0, 0))
    batched.open()
    serial.open()
    try:
        got = batched.apply_edits(ops)
        want = [serial.apply_edits([op])[0] for op in ops]
        assert got == want
        assert _all_docs(batched) == _all_docs(serial)
    finally:
        batched.close()
        serial.close()
    g, w = _tiers(db), _tiers(serial_db)
    assert g[0] == w[0] and g[2] == w[2]
    assert g[1].keys() == w[1].keys()
    for key, hour in g[1].items():
        other = w[1][key]
        assert hour[0] == other[0] and hour[2:8] == other[2:8], key
        assert abs(hour[1] - other[1]) <= 1e-9 * max(1.0, abs(other[1])), key
        assert abs(hour[8] - other[8]) <= 1e-9 * max(1.0, abs(other[8])), key
        assert Sketch.from_bytes(hour[9]) == Sketch.from_bytes(other[9]), key
    # The folder's repair rebuilds every bucket the edits marked dirty: then
    # the hours are exact and nothing is dirty any more.
    batched = open_store(uri.format(db), rollup_retention_days=(0, 0))
    batched.open()
    try:
        batched.fold_rollups()
    finally:
        batched.close()
    _assert_hours_match_raw(tmp_path, db)
    assert _tiers(db)[2] == []


@settings(max_examples=examples(25), deadline=None, suppress_health_check=_SUPPRESS)
@given(acts=actions, edits=_edits, qs=st.lists(queries(), min_size=1, max_size=4))
def test_an_aggregate_right_after_a_group_commit_equals_a_raw_scan(
    tmp_path: pathlib.Path, acts: list[tuple[Any, ...]], edits: list[tuple[Any, ...]],
    qs: list[AggregateQuery],
) -> None:  # fmt: skip
    """An API write's answer goes out before the folder rebuilds the buckets
    it touched: an aggregate read right after it (dirty buckets read raw)
    equals a scan of the raw rows; so does one after the repair."""
    store = open_store(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    store.open()
    try:
        apply(store, [acts[0], ("fold", None), *acts[1:]], can_fold=True)
        store.fold_rollups()  # every document in the tiers: the edits hit buckets
        docs = _all_docs(store)
        store.apply_edits(_ops(edits, docs))
        docs = _all_docs(store)
        for q in qs:
            assert_same(run_aggregate(store, q), reference(docs, q), q)
        store.fold_rollups()
        for q in qs:
            assert_same(run_aggregate(store, q), reference(docs, q), q)
    finally:
        store.close()


_dotted_keys = st.sampled_from(["", "a", "b", "a.b", 'q"', "value"]) | st.text(max_size=4)
_leaves = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=3)
    | st.none(),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_dotted_keys, kids, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=examples(200), deadline=None)
@given(
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(0, 4_000_000_000),
    value=st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False),
    data=st.none() | _leaves,
)
def test_the_buckets_a_dirty_mark_names_are_those_the_fold_puts_values_in(
    ts: float, value: Any, data: Any
) -> None:
    # mark_dirty names a document's buckets by keys alone (doc_buckets); the
    # folder puts its values where stream_columns says: the two must agree,
    # or an edit would leave a bucket it changed unmarked (a stale answer).
    stream = ("s", "metric", "n", None, "[]")
    folded = stream_columns([(ts, 1, value, data if type(data) is dict else None)], MINUTE)
    expected = {(stream, path, MINUTE, start) for path, start in folded}
    got = sr.doc_buckets(stream, ts, value, data)
    assert set(got) == expected
    assert len(got) == len(expected) or "value" in (data or {})  # no duplicates but that one


@pytest.mark.parametrize("group", [1, 2])  # one edit alone, and a run of them
def test_a_decide_that_changes_the_old_document_still_marks_its_old_buckets(
    tmp_path: pathlib.Path, group: int
) -> None:
    # The old document's buckets are taken before decide runs: a decide that
    # empties the old document's data must not leave its old buckets unmarked.
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    store.open()
    try:
        t0 = 1_700_000_040.0
        made = store.apply_edits(
            [Create({"name": "n", "value": 1.0, "ts": t0 + i, "data": {"a": 1}}) for i in range(2)]
        )

        def decide(old: dict[str, Any]) -> dict[str, Any]:
            old["data"].clear()
            return {"name": "n", "value": 2.0, "ts": t0 + 7200}

        store.apply_edits([Change(doc["id"], decide) for doc in made[:group]])
        with sqlite3.connect(store.path) as conn:
            marks = set(conn.execute("SELECT path, tier, bucket FROM roll_dirty"))
        assert ("a", 60, int(t0 // 60 * 60)) in marks
    finally:
        store.close()


def _marks(db: str | pathlib.Path) -> list[tuple[Any, ...]]:
    """The dirty marks of path ``value`` (those of ``""``, the count of
    documents, come and go with them), and how many of each."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT path, tier, bucket, count(*) FROM roll_dirty WHERE path = 'value'"
            " GROUP BY 1, 2, 3 ORDER BY 2, 3"
        ).fetchall()


def _value_minutes(db: str | pathlib.Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT b.n, b.min, b.max FROM roll_60 AS b JOIN roll_series AS s ON s.id = b.series"
            " WHERE s.path = 'value'"
        ).fetchall()


_T0 = 1_700_000_040.0


def _one_folded_point(db: pathlib.Path) -> tuple[Any, dict[str, Any]]:
    """An open store (tiers kept forever) holding one API point at ``_T0``,
    folded: the store and the point."""
    store = open_store(f"sqlite:///{db}", rollup_retention_days=(0, 0))
    store.open()
    (doc,) = store.apply_edits([Create({"name": "n", "value": 1.0, "ts": _T0})])
    store.fold_rollups()
    return store, doc  # type: ignore[return-value]


def test_an_edited_bucket_keeps_one_dirty_mark_however_often_it_is_edited(
    tmp_path: pathlib.Path,
) -> None:
    # One mark per edit made the table grow by ~24,000 rows a second under a
    # flat-out PUT load, and the repair that scanned and deleted them held
    # the write lock ~100 ms.
    store, doc = _one_folded_point(tmp_path / "m.db")
    try:
        assert _marks(store.path) == []
        for v in range(30):  # one group commit each, as under a steady PUT load
            store.apply_edits([Replace(doc["id"], {"name": "n", "value": float(v), "ts": _T0})])
        minute, ten, hour = (int(_T0 // t * t) for t in (MINUTE, 600, HOUR))
        assert _marks(store.path) == [("value", MINUTE, minute, 1), ("value", 600, ten, 1),
                                      ("value", HOUR, hour, 1)]  # fmt: skip
        store.fold_rollups()  # the repair: clean again, and the buckets hold the last value
        assert _marks(store.path) == []
        assert _value_minutes(store.path) == [(1, 29.0, 29.0)]
    finally:
        store.close()


def test_an_edit_between_a_repairs_claim_and_its_write_keeps_its_bucket_dirty(
    tmp_path: pathlib.Path,
) -> None:
    # A bucket marked already is not marked again, unless the repair under
    # way claimed that mark: the repair rebuilt it from a snapshot taken
    # before this edit, and deleting the claimed mark must leave one.
    db = tmp_path / "r.db"
    store, doc = _one_folded_point(db)
    try:
        store.apply_edits([Replace(doc["id"], {"name": "n", "value": 2.0, "ts": _T0})])
        # The folder's repair, step by step (SqliteStore._repair), with an
        # edit of the same bucket between its read snapshot and its write.
        with store._transaction("claim") as conn:
            top = sr.claim_dirty(conn)
        assert top is not None
        conn = store._writer_conn()
        conn.execute("BEGIN")
        rep = sr.read_repair(conn, _ROLLUP_SQL, store._series_ids, top)
        conn.execute("COMMIT")
        assert rep is not None
        store.apply_edits([Replace(doc["id"], {"name": "n", "value": 3.0, "ts": _T0})])
        with store._transaction("write") as conn:
            assert sr.write_repair(conn, store._series_ids, rep)
        assert ("value", MINUTE, int(_T0 // MINUTE * MINUTE), 1) in _marks(store.path)
        # over whole hours: the tiers answer it, the dirty minute read raw
        hour = _T0 // HOUR * HOUR
        q = AggregateQuery(
            fn="max", field="value", where=MetricQuery(ts_from=hour - HOUR, ts_to=hour + 2 * HOUR)
        )
        assert [r.value for r in run_aggregate(store, q)] == [3.0]  # read raw: still dirty
        store.fold_rollups()
        assert _marks(store.path) == []
        assert _value_minutes(db) == [(1, 3.0, 3.0)]
    finally:
        store.close()
    _assert_hours_match_raw(tmp_path, db)
