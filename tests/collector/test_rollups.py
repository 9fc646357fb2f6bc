"""Rollup tiers and the aggregation engine: every answer equals a scan of the
raw documents (percentiles: within the sketch's 1%), on a real SQLite file and
on the MongoDB-wire server, for random data, edits, windows, buckets and groups.

The reference below reads every document back with ``find`` and computes each
function in plain Python, independently of the tiers and the planner.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import pathlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltawire.collector.aggregate import (
    FNS,
    QUANTILES,
    AggregateError,
    AggregateQuery,
    AggregateRow,
    parse_bucket,
    plan_segments,
    run_aggregate,
)
from deltawire.collector.aggregate.engine import rate_seconds
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.collector.stores.rollup import RAW, Segment, Sketch, step
from deltawire.protocol import Document
from tests.strategies import examples

BASE = 1_795_003_200.0  # a whole hour
SESSIONS = ("s1", "s2")
NAMES = ("proc", "net")
HOSTS = ("h1", "h2", None)
TAGS = ("x", "y")
FIELDS = ("value", "cpu.p", "n", "deep.a.b")


# -- the reference: a raw scan in Python -------------------------------------------------


def _all_docs(store: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        page = store.find(MetricQuery(limit=1000, after=after))
        out += page
        if len(page) < 1000:
            return out
        after = (page[-1]["ts"], page[-1]["id"])


def _matches(d: dict[str, Any], w: MetricQuery) -> bool:
    return (
        (w.session is None or d["session"] == w.session)
        and (w.name is None or d["name"] == w.name)
        and (w.kind is None or d["kind"] == w.kind)
        and (w.host is None or d["host"] == w.host)
        and all(t in d["tags"] for t in w.tags)
        and (w.ts_from is None or d["ts"] >= w.ts_from)
        and (w.ts_to is None or d["ts"] < w.ts_to)
    )


def _value(d: dict[str, Any], field: str | None) -> Any:
    if field is None:
        return 1
    if field == "value":
        return d.get("value")
    node: Any = d.get("data")
    for key in field.split("."):
        node = node.get(key) if type(node) is dict else None
    return node


def _order(doc_id: str) -> Any:
    return int(doc_id) if doc_id.isdigit() else doc_id


def reference(docs: list[dict[str, Any]], q: AggregateQuery) -> dict[tuple[Any, Any], Any]:
    """(group, bucket) -> (value, count) by a raw scan."""
    cells: dict[tuple[Any, Any], list[tuple[Any, float, Any, float]]] = defaultdict(list)
    for d in docs:
        v = _value(d, q.field)
        if not _matches(d, q.where) or type(v) not in (int, float):
            continue
        group = None if q.by is None else d[q.by]
        bucket = None if q.bucket is None else math.floor(d["ts"] / q.bucket) * q.bucket
        series = (d["session"], d["kind"], d["name"], d["host"], tuple(d["tags"]))
        cells[(group, bucket)].append((series, d["ts"], _order(d["id"]), v))
    out: dict[tuple[Any, Any], Any] = {}
    for key, items in cells.items():
        vals = [v for _s, _t, _o, v in items]
        n = len(vals)
        if q.fn == "count":
            value: Any = n
        elif q.fn == "sum":
            value = sum(vals)
        elif q.fn == "avg":
            value = sum(vals) / n
        elif q.fn == "min":
            value = min(vals)
        elif q.fn == "max":
            value = max(vals)
        elif q.fn in QUANTILES:
            value = sorted(vals)[math.floor(QUANTILES[q.fn] * (n - 1))]
        else:  # rate
            per_series: dict[Any, list[tuple[float, Any, float]]] = defaultdict(list)
            for s, t, o, v in items:
                per_series[s].append((t, o, v))
            inc = 0.0
            for pts in per_series.values():
                pts.sort(key=lambda p: (p[0], p[1]))
                inc += sum(step(a[2], b[2]) for a, b in itertools.pairwise(pts))
            times = [t for _s, t, _o, _v in items]
            seconds = rate_seconds(q, min(times), max(times))
            value = inc / seconds if seconds > 0 else None
        out[key] = (value, n)
    return out


def assert_same(
    rows: list[AggregateRow], ref: dict[tuple[Any, Any], Any], q: AggregateQuery
) -> None:
    got = {(r.group, r.bucket): (r.value, r.count) for r in rows}
    assert got.keys() == ref.keys(), q
    for key, (value, n) in ref.items():
        gv, gn = got[key]
        assert gn == n, (q, key)
        if value is None or gv is None:
            assert value is None and gv is None, (q, key, gv, value)
        elif q.fn in QUANTILES:
            assert abs(gv - value) <= 0.01 * abs(value) + 1e-9, (q, key, gv, value)
        else:
            assert math.isclose(gv, value, rel_tol=1e-9, abs_tol=1e-6), (q, key, gv, value)


# -- random data and queries -------------------------------------------------------------

numbers: st.SearchStrategy[float] = st.one_of(
    st.integers(-1000, 10**6),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3)),
)
leaf = st.one_of(*[numbers] * 6, st.booleans(), st.just("text"), st.none())
data = st.one_of(
    st.none(),
    *[
        st.fixed_dictionaries(
            {"cpu": st.fixed_dictionaries({"p": leaf}), "n": leaf},
            optional={"deep": st.fixed_dictionaries({"a": st.fixed_dictionaries({"b": leaf})})},
        )
    ]
    * 4,
)
# ts in ms (the MongoDB store keeps milliseconds), over ~3 hours
# (hour, minute, second, ms) drawn apart: one integer would cluster near BASE.
timestamps = st.builds(
    lambda h, m, s, ms: BASE + h * 3600 + m * 60 + s + ms / 1000,
    st.integers(0, 2), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999),
)  # fmt: skip
# A write: one stream's docs, usually in time order (as agents send them),
# sometimes not (late or skewed clocks), with counters that sometimes reset.
stream_batch = st.tuples(
    st.sampled_from(SESSIONS), st.sampled_from(NAMES), st.sampled_from(("sample", "sample", "event")),
    st.lists(st.tuples(timestamps, data), min_size=2, max_size=60), st.booleans(),
)  # fmt: skip
api_point = st.fixed_dictionaries(
    {"name": st.sampled_from(NAMES), "value": numbers, "ts": timestamps,
     "tags": st.lists(st.sampled_from(TAGS), unique=True), "data": data}
)  # fmt: skip
#: write streamed docs / create an API point / delete the k-th doc / change the
#: k-th doc / resend the last batch / fold the tiers
write = st.tuples(st.just("write"), st.lists(stream_batch, min_size=1, max_size=3))
actions = st.builds(
    lambda first, rest: [first, *rest],
    write,
    st.lists(
        st.one_of(
            write,
            st.tuples(st.just("create"), api_point),
            st.tuples(st.just("delete"), st.integers(0, 10**6)),
            st.tuples(st.just("replace"), st.integers(0, 10**6), api_point),
            st.tuples(st.just("resend"), st.none()),
            st.tuples(st.just("fold"), st.none()),
            st.tuples(st.just("halffold"), st.integers(1, 4)),
        ),
        max_size=10,
    ),
)


@st.composite
def queries(draw: st.DrawFn) -> AggregateQuery:
    fn = draw(st.sampled_from((*FNS, "rate", "rate", "p95", "count")))
    field = draw(st.sampled_from((*FIELDS, None) if fn == "count" else FIELDS))
    lo = draw(st.one_of(st.none(), timestamps))
    hi = draw(st.one_of(st.none(), timestamps))
    if lo is not None and hi is not None and hi < lo:
        lo, hi = hi, lo

    def rarely(*values: Any) -> Any:  # a filter on one query in ~4
        return draw(st.sampled_from((None,) * (2 * len(values)) + values))

    where = MetricQuery(
        session=rarely(*SESSIONS),
        name=rarely(*NAMES),
        kind=rarely("sample", "event", "metric"),
        host=rarely("h1", "h2"),
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=1))),
        ts_from=lo,
        ts_to=hi,
    )
    return AggregateQuery(
        fn=fn,
        field=field,
        where=where,
        by=draw(st.sampled_from((None, "host", "session", "name"))),
        bucket=draw(st.sampled_from((None, 60.0, 600.0, 3600.0, 90.0, 7200.0))),
    )


def apply(store: Any, acts: list[tuple[Any, ...]], can_fold: bool) -> None:
    seqs: dict[str, int] = defaultdict(int)
    last: list[Document] = []
    for act in acts:
        if act[0] == "write":
            batch = []
            for session, name, kind, items, in_order in act[1]:
                host = HOSTS[len(items) % 3] if session == "s1" else "h2"
                tags = ("x",) if session == "s1" else ("x", "y")
                for ts, d in sorted(items, key=lambda i: i[0]) if in_order else items:
                    batch.append(Document(session, seqs[session], kind, name, ts, host, tags, d))
                    seqs[session] += 1
            store.write_batch(batch)
            last = batch
        elif act[0] == "resend" and last:
            store.write_batch(last)
        elif act[0] == "create":
            store.create(act[1])
        elif act[0] in ("delete", "replace"):
            docs = _all_docs(store)
            if docs:
                doc = docs[act[1] % len(docs)]
                if act[0] == "delete":
                    assert store.delete(doc["id"])
                else:
                    assert store.replace(doc["id"], act[2]) is not None
        elif act[0] == "fold" and can_fold:
            store.fold_rollups()
        elif act[0] == "halffold" and can_fold:
            _fold_half_way(store, act[1])


def _fold_half_way(store: Any, steps: int) -> None:
    """A folder that dies after ``steps`` transactions of its checkpoint (one
    series each): some series are folded further than the watermark.
    (MongoDB: its tiers have no watermark; a compaction instead.)"""
    if not hasattr(store, "_absorb"):
        store.fold_rollups()
        return
    store._absorb(10**6)
    store._checkpoint(steps=steps, series=1)  # its memory is lost; roll_pending stays


_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _check(store: Any, acts: list[tuple[Any, ...]], qs: list[AggregateQuery]) -> None:
    apply(store, acts, can_fold=True)
    docs = _all_docs(store)
    for q in qs:
        assert_same(run_aggregate(store, q), reference(docs, q), q)
    store.fold_rollups()  # everything in the tiers, no tail: the same answers
    for q in qs:
        assert_same(run_aggregate(store, q), reference(docs, q), q)


@contextlib.contextmanager
def _sqlite_store(tmp_path: pathlib.Path) -> Iterator[Any]:
    store = open_store(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    store.open()
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _mongo_store(uri: str) -> Iterator[Any]:
    """A fresh database per example, dropped after."""
    store = open_store(uri, app_env=f"roll{uuid.uuid4().hex[:12]}", tier_reads=True)
    store.open()
    try:
        yield store
    finally:
        store._client.drop_database(store.database_name)
        store.close()


_BACKENDS = ["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)]


@pytest.fixture(params=_BACKENDS)
def fresh_store(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A new empty store per hypothesis example, on either backend."""
    if request.param == "sqlite":
        return lambda: _sqlite_store(tmp_path)
    uri = request.getfixturevalue("mongo_uri")
    return lambda: _mongo_store(uri)


def _answers_equal_a_raw_scan(
    fresh_store: Callable[[], contextlib.AbstractContextManager[Any]],
    acts: list[tuple[Any, ...]],
    qs: list[AggregateQuery],
) -> None:
    with fresh_store() as store:
        _check(store, acts, qs)


def _scan_test(count: int, backends: list[Any] = _BACKENDS, at_most: int = 10**9) -> Any:
    """The property test with ``count`` examples per backend (``at_most`` in `make test`)."""
    test = settings(
        max_examples=examples(count, at_most), deadline=None, suppress_health_check=_SUPPRESS
    )(
        given(acts=actions, qs=st.lists(queries(), min_size=1, max_size=6))(
            _answers_equal_a_raw_scan
        )
    )
    return pytest.mark.parametrize("fresh_store", backends, indirect=True)(test)


# FerretDB answers a round trip in ~1 ms, SQLite in microseconds: a bounded
# run in `make test` (~10 s on MongoDB), many more examples in the slow one.
test_answers_equal_a_raw_scan = _scan_test(30)
test_answers_equal_a_raw_scan_many_examples = pytest.mark.slow(_scan_test(200, _BACKENDS[:1]))
# The same property with as many examples under `make fuzz`; in `make test`, 15
# on FerretDB (~0.2 s of CPU each, 3x SQLite's), after the 30 above: a long pole
# of the parallel run otherwise (11-27 s), where SQLite runs MAX_EXAMPLES.
test_answers_equal_a_raw_scan_many_examples_mongo = pytest.mark.slow(
    _scan_test(200, _BACKENDS[1:], at_most=15)
)


# -- the planner, the sketch, the query ------------------------------------------------------


def test_planner_tiles_with_the_coarsest_tier_and_raw_edges() -> None:
    h, m = 3600, 60
    segs = plan_segments(BASE - 90.5, BASE + 2 * h + 150, (h, m), None)
    assert segs == (
        Segment(RAW, BASE - 90.5, BASE - 60),
        Segment(m, BASE - 60, BASE),
        Segment(h, BASE, BASE + 2 * h),
        Segment(m, BASE + 2 * h, BASE + 2 * h + 120),
        Segment(RAW, BASE + 2 * h + 120, BASE + 2 * h + 150),
    )
    assert plan_segments(None, None, (h, m), None) == (Segment(h, None, None),)
    # a 90 s bucket is tiled by no tier; a 10 min one by minutes only
    assert plan_segments(None, BASE, (h, m), 90) == (Segment(RAW, None, BASE),)
    assert plan_segments(BASE, BASE + h, (h, m), 600) == (Segment(m, BASE, BASE + h),)
    assert plan_segments(BASE + 1, BASE + 2, (h, m), None) == (Segment(RAW, BASE + 1, BASE + 2),)


@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=300))
def test_sketch_quantiles_are_within_one_percent(values: list[float]) -> None:
    sketch = Sketch()
    half = len(values) // 2
    sketch.add_values(values[:half])
    other = Sketch.from_bytes(_sketch_of(values[half:]).to_bytes())
    sketch.merge(other)
    ordered = sorted(values)
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        exact = ordered[math.floor(q * (len(values) - 1))]
        got = sketch.quantile(q)
        assert got is not None
        assert abs(got - exact) <= 0.01 * abs(exact) + 1e-300


def _sketch_of(values: list[float]) -> Sketch:
    s = Sketch()
    s.add_values(values)
    return s


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"fn": "median", "field": "value"}, "fn"),
        ({"fn": "avg"}, "field"),
        ({"fn": "avg", "field": "a..b"}, "field"),
        ({"fn": "avg", "field": "value", "by": "kind"}, "by"),
        ({"fn": "avg", "field": "value", "bucket": -1.0}, "bucket"),
        (
            {
                "fn": "avg",
                "field": "value",
                "bucket": 1.0,
                "where": MetricQuery(ts_from=0, ts_to=10**9),
            },
            "bucket",
        ),
    ],
)
def test_bad_queries_name_their_parameter(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(AggregateError) as e:
        AggregateQuery(**kwargs)
    assert e.value.parameter == parameter


def test_bucket_sizes() -> None:
    assert [parse_bucket(t) for t in ("30", "90s", "1m", "10m", "1h", "1d")] == [
        30, 90, 60, 600, 3600, 86400,
    ]  # fmt: skip
    for bad in ("", "0", "1w", "-1m", "m"):
        with pytest.raises(AggregateError):
            parse_bucket(bad)


def test_tiers_keep_their_retention(tmp_path: pathlib.Path) -> None:
    from deltawire.collector.stores import sqlite_rollup

    store = open_store(f"sqlite:///{tmp_path / 'r.db'}", rollup_retention_days=[1, 10])
    store.open()
    try:
        docs = [Document("s", i, "sample", "p", BASE + i * 3600, "h", (), {"n": i})
                for i in range(5 * 24)]  # fmt: skip
        store.write_batch(docs)
        store.fold_rollups()
        now = BASE + 5 * 86400
        with store._transaction("test") as conn:
            sqlite_rollup.prune(conn, store.rollup_retention, now)
            minutes = conn.execute("SELECT min(bucket), count(*) FROM roll_60").fetchone()
            hours = conn.execute("SELECT count(*) FROM roll_3600").fetchone()
        assert minutes[0] >= now - 86400 and minutes[1] > 0
        assert hours[0] == 2 * 5 * 24  # the docs count and n, every hour kept
    finally:
        store.close()


def test_the_folder_process_folds_as_documents_arrive(tmp_path: pathlib.Path) -> None:
    """start_checkpointer starts the folder process: it folds what is written
    (no fold call here), answers stay exact, close stops it; while it holds
    the folder lock nobody else folds."""
    from deltawire.collector.stores import sqlite_rollup
    from deltawire.testing.harness import sqlite_with_folder, wait_until

    with sqlite_with_folder(tmp_path / "f.db") as (store, _folder):
        docs = [Document(f"s{i % 3}", i // 3, "sample", "p", BASE + i, "h", (), {"n": i % 17})
                for i in range(600)]  # fmt: skip
        for i in range(0, 600, 30):
            store.write_batch(docs[i : i + 30])

        def mark() -> int:
            with store._reader("test") as conn:
                return sqlite_rollup.watermark(conn)

        wait_until(lambda: mark() == 600, timeout=30, what="the folder caught up")
        assert store.fold_rollups() == 0  # the folder process holds the lock
        stored = _all_docs(store)
        for q in (AggregateQuery("rate", "n", by="session"), AggregateQuery("p50", "n")):
            assert_same(run_aggregate(store, q), reference(stored, q), q)


def test_edits_while_a_checkpoint_is_half_done(tmp_path: pathlib.Path) -> None:
    """API edits of documents that only some series have folded (their marks
    above the watermark): answers stay exact before and after the checkpoint
    is finished by the next folder."""
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    store.open()
    try:
        store.write_batch([Document(f"s{i % 2}", i // 2, "sample", "p", BASE + i * 7, "h", (),
                                    {"n": i % 5, "m": i}) for i in range(40)])  # fmt: skip
        store.fold_rollups()
        store.write_batch([Document(f"s{i % 2}", i // 2, "sample", "p", BASE + i * 7, "h", (),
                                    {"n": i % 7, "m": -i}) for i in range(40, 80)])  # fmt: skip
        _fold_half_way(store, 5)  # of its 6 series (2 streams x docs, n, m)
        with store._reader("test") as conn:
            assert conn.execute("SELECT count(*) FROM roll_pending").fetchone()[0] == 5
        docs = _all_docs(store)
        store.replace(docs[10]["id"], {"data": {"n": 100, "m": 0.5}})  # folded everywhere
        store.replace(docs[50]["id"], {"data": {"n": 200}})  # folded by some series only
        assert store.delete(docs[60]["id"])
        qs = [AggregateQuery(fn, f, by="session") for fn in ("sum", "max", "count", "rate")
              for f in ("n", "m")]  # fmt: skip
        docs = _all_docs(store)
        for q in qs:
            assert_same(run_aggregate(store, q), reference(docs, q), q)
        store.fold_rollups()  # a new folder finishes the checkpoint, then folds on
        with store._reader("test") as conn:
            assert conn.execute("SELECT count(*) FROM roll_pending").fetchone()[0] == 0
        for q in qs:
            assert_same(run_aggregate(store, q), reference(docs, q), q)
    finally:
        store.close()


def test_a_step_rebuilds_an_overlapped_bucket_in_its_read_not_its_write(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that overlap a stored bucket in time (a late sample, or two API
    writers' creates committed out of time order) make the bucket rebuilt
    from its raw rows: in the step's read snapshot, never in its write
    transaction, where an hour of rows held the write lock 1.4 s."""
    from deltawire.collector.stores import sqlite
    from deltawire.collector.stores import sqlite_rollup as sr

    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    store.open()
    try:
        docs = [Document("s", i, "sample", "p", BASE + i, "h", (), {"n": i}) for i in range(10)]
        store.write_batch(docs)
        store.fold_rollups()
        # later ids, earlier times: inside the stored buckets' span
        store.write_batch([Document("s", 10 + i, "sample", "p", BASE + 0.5 + i, "h", (), {"n": 100 + i})
                           for i in range(3)])  # fmt: skip
        folder, ids = store._folder, store._series_ids
        store._absorb(100)
        with store._reader("test") as conn:
            step = folder.read_step(conn, sqlite._ROLLUP_SQL, ids, 100)
        assert step is not None and step.redo  # the overlapped buckets, rebuilt already

        def no_raw_reads(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the write transaction read raw rows")

        monkeypatch.setattr(sr, "_rebuilt", no_raw_reads)
        with store._transaction("test") as conn:
            assert folder.write_step(conn, sqlite._ROLLUP_SQL, ids, step)
            assert folder.read_step(conn, sqlite._ROLLUP_SQL, ids, 100) is None
            folder.finish(conn, sqlite._ROLLUP_SQL, ids)
        folder.clear()
        monkeypatch.undo()
        stored = _all_docs(store)
        for q in (AggregateQuery("sum", "n"), AggregateQuery("max", "n", bucket=60.0),
                  AggregateQuery("rate", "n", bucket=60.0)):  # fmt: skip
            assert_same(run_aggregate(store, q), reference(stored, q), q)
    finally:
        store.close()


def test_an_edit_between_a_steps_read_and_its_write(tmp_path: pathlib.Path) -> None:
    """A checkpoint step merges in a read snapshot, then writes: an API edit
    in between makes it merge again (else the edit's recompute is overwritten)."""
    from deltawire.collector.stores import sqlite

    store = open_store(f"sqlite:///{tmp_path / 'e.db'}")
    store.open()
    try:
        docs = [Document("s", i, "sample", "p", BASE + i, "h", (), {"n": i}) for i in range(20)]
        store.write_batch(docs[:10])
        store.fold_rollups()
        store.write_batch(docs[10:])
        folder, ids = store._folder, store._series_ids
        store._absorb(100)
        with store._reader("test") as conn:
            steps = [folder.read_step(conn, sqlite._ROLLUP_SQL, ids, 100)]
        first = _all_docs(store)[0]["id"]
        store.replace(first, {"data": {"n": 1000}})  # folded already: recomputed now
        with store._transaction("test") as conn:
            assert folder.write_step(conn, sqlite._ROLLUP_SQL, ids, steps[0])
            assert folder.read_step(conn, sqlite._ROLLUP_SQL, ids, 100) is None
            folder.finish(conn, sqlite._ROLLUP_SQL, ids)
        folder.clear()
        stored = _all_docs(store)
        for q in (AggregateQuery("sum", "n"), AggregateQuery("max", "n", bucket=60.0)):
            assert_same(run_aggregate(store, q), reference(stored, q), q)
    finally:
        store.close()
