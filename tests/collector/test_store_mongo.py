"""What only the MongoDB store has: its indexes and storage layout, the acked
high-water mark, TTL retention, error classes, and surviving a server outage.

The shared behaviour is in test_store_contract.py. These tests run on the
session's MongoDB-compatible server (MONGO_URI, or a FerretDB started by
conftest); the outage test starts and stops a FerretDB of its own.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson.datetime_ms import DatetimeMS

from deltawire.collector.stores import (
    AggQuery,
    MetricQuery,
    StoreError,
    StoreUnavailable,
    open_store,
)
from deltawire.collector.stores.mongo import MongoStore
from deltawire.protocol import Document, Hello
from deltawire.testing.servers import (
    HOST,
    ferretdb_at,
    free_port,
    is_ferretdb,
)

pytestmark = pytest.mark.mongo

T0 = 1_700_000_000.0


# -- fixtures and helpers ----------------------------------------------------------


@pytest.fixture(scope="module")
def client(mongo_uri: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    """A plain client, to look at (and tamper with) what the store wrote."""
    with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000, tz_aware=True) as c:
        yield c


@pytest.fixture(scope="module")
def on_ferretdb(client: pymongo.MongoClient[dict[str, Any]]) -> bool:
    return is_ferretdb(client)


@pytest.fixture
def app_env() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def store(mongo_uri: str, app_env: str) -> Iterator[MongoStore]:
    s = MongoStore(mongo_uri, app_env=app_env, tier_reads=True)
    s.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def db(client: pymongo.MongoClient[dict[str, Any]], app_env: str) -> Any:
    return client[f"telemetry_{app_env}"]


def xfail_on_ferretdb(request: pytest.FixtureRequest, on_ferretdb: bool, reason: str) -> None:
    """Strict: the test must fail on FerretDB (with a StoreError) and pass on MongoDB."""
    if on_ferretdb:
        request.applymarker(
            pytest.mark.xfail(reason=f"FerretDB: {reason}", strict=True, raises=StoreError)
        )


def mk(session: str, seq: int, ts: float = T0, **kw: Any) -> Document:
    kw.setdefault("data", {"percent": float(seq)})
    return Document(session, seq, kw.get("kind", "sample"), kw.get("name", "cpu"), ts,
                    kw.get("host", "h1"), tuple(kw.get("tags", ("prod",))), kw["data"])  # fmt: skip


def seqs(store: MongoStore, session: str) -> list[int]:
    return [d["seq"] for d in store.find(MetricQuery(session=session, limit=100_000))]


# -- layout ------------------------------------------------------------------------


def test_open_store_picks_mongo(mongo_uri: str) -> None:
    s = open_store(mongo_uri, app_env="x", retention_days=0, max_pool_size=4, timeout_ms=900)
    assert isinstance(s, MongoStore)
    assert (s.database_name, s.max_pool_size, s.timeout_ms) == ("telemetry_x", 4, 900)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"app_env": "a/b"},
        {"app_env": ""},
        {"app_env": "a.b"},
        {"retention_days": -1},
        {"max_pool_size": 0},
        {"timeout_ms": 0},
    ],
)
def test_bad_options_are_rejected_up_front(mongo_uri: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MongoStore(mongo_uri, **kwargs)


def test_indexes(store: MongoStore, db: Any) -> None:
    docs = {ix["name"]: ix for ix in db["docs"].list_indexes()}
    keys = {name: list(ix["key"].items()) for name, ix in docs.items()}
    assert keys["session_seq"] == [("session", 1), ("seq", 1)]
    assert docs["session_seq"].get("unique") is True
    for field in ("name", "tags", "session", "kind", "host"):
        assert keys[f"{field}_ts_id"] == [(field, 1), ("ts", 1), ("_id", 1)]
    assert keys["ts_id"] == [("ts", 1), ("_id", 1)]
    assert "ts_ttl" not in docs  # retention_days=0 keeps everything
    sessions = {ix["name"]: list(ix["key"].items()) for ix in db["sessions"].list_indexes()}
    assert sessions["last_seen_id"] == [("last_seen", -1), ("_id", 1)]


def test_documents_as_stored(store: MongoStore, db: Any) -> None:
    store.write_batch([mk("s1", 0, ts=T0 + 0.25, data=None, kind="event", name="deploy")])
    raw = db["docs"].find_one({"session": "s1"})
    # ts is a BSON date: what TTL indexes and MongoDB's tools understand.
    assert raw["ts"].timestamp() == T0 + 0.25
    assert "data" not in raw  # no data, no field
    assert (raw["seq"], raw["kind"], raw["tags"]) == (0, "event", ["prod"])


def test_ts_is_kept_to_the_millisecond(store: MongoStore) -> None:
    store.write_batch([mk("s1", 0, ts=T0 + 0.0004), mk("s1", 1, ts=T0 + 0.0006),
                       mk("s1", 2, ts=T0 + 0.123)])  # fmt: skip
    assert [d["ts"] for d in store.find(MetricQuery())] == [T0, T0 + 0.001, T0 + 0.123]
    # Bounds compare with what find() returns, sub-millisecond bounds included.
    assert seqs_of(store.find(MetricQuery(ts_from=T0 + 0.0002))) == [1, 2]
    assert seqs_of(store.find(MetricQuery(ts_to=T0 + 0.0002))) == [0]
    assert seqs_of(store.find(MetricQuery(ts_from=T0 + 0.001, ts_to=T0 + 0.123))) == [1]


def seqs_of(docs: Sequence[dict[str, Any]]) -> list[int]:
    return [d["seq"] for d in docs]


def test_write_concern_defaults_and_uri_overrides(mongo_uri: str) -> None:
    s = MongoStore(mongo_uri, app_env=uuid.uuid4().hex, max_pool_size=7, timeout_ms=1234)
    s.open()
    try:
        assert s._client is not None
        assert s._client.write_concern.document == {"w": "majority", "j": True}
        assert s._client.options.pool_options.max_pool_size == 7
        assert s._client.options.server_selection_timeout == 1.234
    finally:
        s.close()
    # What an operator writes in the URI wins over the store's defaults.
    sep = "&" if "?" in mongo_uri else "?"
    s = MongoStore(f"{mongo_uri}{sep}w=1&maxPoolSize=3", app_env=uuid.uuid4().hex)
    s.open()
    try:
        assert s._client is not None
        assert s._client.write_concern.document == {"w": 1, "j": True}
        assert s._client.options.pool_options.max_pool_size == 3
    finally:
        s.close()


# -- duplicates and the resume point -------------------------------------------------


def test_duplicates_inside_and_across_batches(store: MongoStore, db: Any) -> None:
    store.write_batch([mk("s1", i) for i in range(5)])
    # A retry overlapping what is stored, with a duplicate inside the batch too.
    store.write_batch([mk("s1", i, data={"v": "again"}) for i in (3, 4, 5, 5, 6)])
    assert db["docs"].count_documents({"session": "s1"}) == 7
    assert seqs(store, "s1") == list(range(7))
    assert store.get(store.find(MetricQuery(session="s1"))[3]["id"])["data"] == {"percent": 3.0}  # type: ignore[index]
    assert store.acked("s1") == 6


def test_acked_ignores_a_partly_stored_batch(store: MongoStore, db: Any) -> None:
    """An unordered insert that failed (or a collector that crashed) midway
    leaves documents above a hole; acked must stay below the hole."""
    store.write_batch([mk("s1", i) for i in range(10)])
    # The batch 10..19 got only 12, 15 and 19 in before the failure, and no
    # retry came: exactly what insert_many(ordered=False) can leave behind.
    db["docs"].insert_many(
        [{"session": "s1", "seq": i, "kind": "sample", "name": "cpu", "host": "h1",
          "tags": ["prod"], "ts": DatetimeMS(int(T0 * 1000))} for i in (12, 15, 19)]
    )  # fmt: skip
    assert store.acked("s1") == 9  # not 19: the agent must resend from 10
    # The agent resends 10..19: the hole is filled, nothing stored twice.
    store.write_batch([mk("s1", i) for i in range(10, 20)])
    assert store.acked("s1") == 19
    assert sorted(seqs(store, "s1")) == list(range(20))


def test_acked_moves_only_up_and_per_session(store: MongoStore, db: Any) -> None:
    store.write_batch([mk("a", 5), mk("b", 2), mk("a", 7)])
    assert (store.acked("a"), store.acked("b"), store.acked("c")) == (7, 2, -1)
    store.write_batch([mk("a", 6)])  # late, below the mark
    assert store.acked("a") == 7
    # The mark lives in sessions, and is not part of what sessions() shows.
    assert db["sessions"].find_one({"_id": "a"})["acked"] == 7
    assert all("acked" not in row for row in store.sessions())


def test_hello_does_not_move_acked(store: MongoStore) -> None:
    store.session_connected(Hello(session="s1", host="h1", agent="a", tags=()), T0)
    assert store.acked("s1") == -1


def test_write_error_other_than_duplicate_is_a_store_error(store: MongoStore) -> None:
    # JSON allows integers beyond 64 bits, BSON does not: a data problem that
    # retrying will not fix, hence StoreError and not StoreUnavailable.
    with pytest.raises(StoreError) as info:
        store.write_batch([mk("s1", 0), mk("s1", 1, data={"n": 2**64})])
    assert not isinstance(info.value, StoreUnavailable)
    assert store.acked("s1") == -1


def test_server_write_error_is_a_short_store_error(store: MongoStore, on_ferretdb: bool) -> None:
    """A document the server refuses: StoreError, and the message does not
    quote the batch (pymongo's own text of a bulk error quotes every document)."""
    if not on_ferretdb:
        pytest.skip("needs a document only FerretDB refuses (nested arrays)")
    docs = [mk("s1", i, data={"pad": "x" * 1000}) for i in range(50)]
    docs.append(mk("s1", 50, data={"nested": [[1]]}))
    with pytest.raises(StoreError) as info:
        store.write_batch(docs)
    assert not isinstance(info.value, StoreUnavailable)
    assert "1 write error(s)" in str(info.value)
    assert len(str(info.value)) < 500
    assert store.acked("s1") == -1  # the batch did not fully succeed


# -- ids, paths ------------------------------------------------------------------------


def test_ids_are_canonical_object_ids(store: MongoStore) -> None:
    store.write_batch([mk("s1", 0)])
    [doc] = store.find(MetricQuery())
    assert len(doc["id"]) == 24 and int(doc["id"], 16) >= 0
    assert store.get(doc["id"]) == doc
    for bad in [doc["id"].upper(), doc["id"] + " ", doc["id"][:-1], "g" * 24, "🚀" * 24]:
        if bad == doc["id"]:
            continue  # an id of digits only has no upper case
        assert store.get(bad) is None, bad
        assert store.replace(bad, {"value": 1}) is None, bad
        assert store.delete(bad) is False, bad
        with pytest.raises(StoreError):
            store.find(MetricQuery(after=(doc["ts"], bad)))
    assert store.get(doc["id"]) == doc


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", "$where", "a.$b", "a$", "a\0b"])
def test_bad_data_paths(store: MongoStore, path: str) -> None:
    with pytest.raises(StoreError):
        store.aggregate(AggQuery(func="sum", path=path))


def test_count_of_a_path_counts_numbers_only(
    request: pytest.FixtureRequest, store: MongoStore, on_ferretdb: bool
) -> None:
    """$type "number" alone would also match [1, 2] and a path through an array
    of objects; $isNumber looks at the value the group sees."""
    xfail_on_ferretdb(request, on_ferretdb, "$isNumber not implemented (code 238)")
    store.write_batch([
        mk("s1", 0, data={"load": 3}),
        mk("s1", 1, data={"load": [1, 2]}),
        mk("s1", 2, data={"load": "4"}),
        mk("s1", 3, data={"load": True}),
        mk("s1", 4, data={"load": [{"x": 1}]}),
        mk("s1", 5, data={"cpu": [{"p": 1}, {"p": 2}]}),
    ])  # fmt: skip
    assert store.aggregate(AggQuery(func="count", path="load")) == [
        {"group": None, "value": 1, "count": 1}
    ]
    assert store.aggregate(AggQuery(func="max", path="load")) == [
        {"group": None, "value": 3, "count": 1}
    ]
    assert store.aggregate(AggQuery(func="count", path="cpu.p")) == []


def test_api_seq_counter_catches_up_with_documents(store: MongoStore, db: Any) -> None:
    """A counters collection lost or restored from an older backup must not
    make create() fail on the unique (session, seq) index."""
    first = store.create({"name": "n", "value": 1, "ts": T0})
    second = store.create({"name": "n", "value": 2, "ts": T0})
    assert (first["seq"], second["seq"]) == (0, 1)
    db["counters"].delete_many({})
    third = store.create({"name": "n", "value": 3, "ts": T0})
    assert third["seq"] == 2
    assert store.acked("api") == 2


# -- rollup tiers ------------------------------------------------------------------------


def tier_count(db: Any, tier: int = 60, **where: Any) -> int:
    """Documents counted in a tier (its partials' n for the DOCS path)."""
    return sum(p["n"] for p in db[f"roll_{tier}"].find({"path": "", **where}))


def aggregate(store: MongoStore, fn: str, field: str | None, **kw: Any) -> list[Any]:
    from deltawire.collector.aggregate import AggregateQuery, run_aggregate

    return [(r.group, r.bucket, r.value, r.count)
            for r in run_aggregate(store, AggregateQuery(fn, field, **kw))]  # fmt: skip


def test_tier_reads_are_off_on_ferretdb_by_default(
    mongo_uri: str, app_env: str, on_ferretdb: bool
) -> None:
    s = MongoStore(mongo_uri, app_env=app_env)
    assert s.rollup_tiers == ()  # decided at open
    s.open()
    try:
        assert s.rollup_tiers == (() if on_ferretdb else (3600, 60))
    finally:
        s.close()
    s = MongoStore(mongo_uri, app_env=app_env, rollups=False, tier_reads=True)
    s.open()
    try:
        assert s.rollup_tiers == ()  # no tiers kept: none to read
    finally:
        s.close()


def test_tiers_count_each_stored_document_once(store: MongoStore, db: Any) -> None:
    batch = [mk("s1", i, ts=T0 + i * 10) for i in range(30)]
    store.write_batch(batch)
    store.write_batch(batch)  # a resend: skipped, and not counted again
    store.write_batch([mk("s1", 29, ts=T0), *[mk("s1", i, ts=T0 + i * 10) for i in range(30, 40)]])
    assert tier_count(db, 60) == tier_count(db, 3600) == 40
    names = {ix["name"] for ix in db["roll_60"].list_indexes()}
    assert {"path_b", "name_path_b", "session_path_b", "b"} <= names
    hour = db["roll_3600"].find_one({"path": "percent"})
    assert hour is not None and sum(hour["sk"]["p"].values()) + hour["sk"]["z"] == hour["n"]
    assert aggregate(store, "sum", "percent") == [(None, None, float(sum(range(40))), 40)]


def test_a_batch_stored_before_a_failure_is_recomputed_not_counted_twice(
    store: MongoStore, db: Any
) -> None:
    """A batch whose documents were stored but whose tiers were not (the
    writer failed in between): its retry finds duplicates above ``acked``
    and rebuilds their buckets from the raw documents."""
    store.write_batch([mk("s1", i, ts=T0 + i) for i in range(5)])
    retry = [mk("s1", i, ts=T0 + i) for i in range(5, 15)]
    # what a failed first attempt left: documents only, acked not moved
    rows = [{"session": d.session, "seq": d.seq, "kind": d.kind, "name": d.name, "host": d.host,
             "tags": list(d.tags), "ts": DatetimeMS(round(d.ts * 1000)), "data": d.data}
            for d in retry[:7]]  # fmt: skip
    db["docs"].insert_many(rows)
    store.write_batch(retry)
    assert tier_count(db, 60) == tier_count(db, 3600) == 15
    assert aggregate(store, "max", "percent", by="session") == [("s1", None, 14.0, 15)]


def test_partials_are_compacted_and_answers_stay_the_same(store: MongoStore, db: Any) -> None:
    from deltawire.collector.stores import mongo_rollup

    n = mongo_rollup._COMPACT_AT + 5
    for i in range(n):  # one document per batch: a partial per batch and bucket
        store.write_batch([mk("s1", i, ts=T0 + i, data={"percent": float(i % 7)})])
    before = aggregate(store, "rate", "percent")
    parts = db["roll_60"].count_documents({"path": "percent"})
    assert 1 < parts <= mongo_rollup._COMPACT_AT  # compacted while writing
    assert store.fold_rollups() > 0
    assert db["roll_60"].count_documents({"path": "percent"}) == len(
        {int(T0 + i) // 60 for i in range(n)}
    )
    assert db["roll_3600"].count_documents({"path": "percent"}) == 1
    assert aggregate(store, "rate", "percent") == before
    assert tier_count(db, 3600) == n


def test_api_edits_recompute_their_buckets(store: MongoStore, db: Any) -> None:
    created = store.create({"name": "temp", "value": 20.0, "ts": T0, "tags": ["a"]})
    store.create({"name": "temp", "value": 22.0, "ts": T0 + 1, "tags": ["a"]})
    assert aggregate(store, "avg", "value", where=MetricQuery(name="temp")) == [
        (None, None, 21.0, 2)
    ]
    store.replace(created["id"], {"value": 30.0, "ts": T0 + 7200})  # another hour
    assert tier_count(db, 3600, name="temp") == 2
    assert sorted(aggregate(store, "max", "value", bucket=3600.0)) == [
        (None, T0 - T0 % 3600, 22.0, 1), (None, T0 + 7200 - T0 % 3600, 30.0, 1)
    ]  # fmt: skip
    assert store.delete(created["id"])
    assert tier_count(db, 3600, name="temp") == 1


def test_tier_retention_outlives_raw_documents(mongo_uri: str, store: MongoStore, db: Any) -> None:
    days = MongoStore(mongo_uri, retention_days=0, rollup_retention_days=(1, 10))
    assert days.rollup_retention == {60: 0, 3600: 0}  # raw kept forever: tiers too
    days = MongoStore(mongo_uri, retention_days=3, rollup_retention_days=(1, 10))
    assert days.rollup_retention == {60: 3 * 86400.0, 3600: 10 * 86400.0}
    with pytest.raises(ValueError):
        MongoStore(mongo_uri, rollup_retention_days=(1,))
    store.write_batch([mk("s1", i, ts=T0 + i * 3600) for i in range(48)])
    store._rollups().prune({60: 86400.0, 3600: 0}, now=T0 + 48 * 3600)
    assert tier_count(db, 60) == 23  # buckets that start within the last day
    assert tier_count(db, 3600) == 48


# -- retention -------------------------------------------------------------------------


def test_ttl_index_follows_retention_days(
    request: pytest.FixtureRequest, mongo_uri: str, db: Any, app_env: str, on_ferretdb: bool
) -> None:
    xfail_on_ferretdb(request, on_ferretdb, "no TTL indexes (expireAfterSeconds)")

    def ttl() -> int | None:
        for ix in db["docs"].list_indexes():
            if ix["name"] == "ts_ttl":
                assert list(ix["key"].items()) == [("ts", 1)]
                return int(ix["expireAfterSeconds"])
        return None

    for days, expected in [(7, 7 * 86400), (7, 7 * 86400), (30, 30 * 86400), (0, None)]:
        s = MongoStore(mongo_uri, app_env=app_env, retention_days=days)
        s.open()
        s.close()
        assert ttl() == expected, days


def test_retention_on_a_server_without_ttl_fails_clearly(mongo_uri: str, on_ferretdb: bool) -> None:
    if not on_ferretdb:
        pytest.skip("MongoDB has TTL indexes")
    s = MongoStore(mongo_uri, app_env=uuid.uuid4().hex, retention_days=7)
    with pytest.raises(StoreError, match="RETENTION_DAYS") as info:
        s.open()
    assert not isinstance(info.value, StoreUnavailable)  # config, not an outage
    assert s.ping() is False  # not open
    s.close()


# -- outages -------------------------------------------------------------------------------


def test_open_with_no_server_is_unavailable_promptly() -> None:
    port = free_port()  # nothing listens there
    s = MongoStore(f"mongodb://{HOST}:{port}/", app_env="x", timeout_ms=300)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        s.open()
    assert time.monotonic() - started < 0.3 + 3.0
    assert s.ping() is False
    with pytest.raises(StoreUnavailable):
        s.acked("s1")  # not open
    s.close()


def write_until_stored(store: MongoStore, docs: Sequence[Document], deadline_s: float) -> int:
    """Retry a batch as the collector's pipeline does; returns the attempts used.

    Each failed attempt waits up to timeout_ms for the server inside pymongo,
    so this loop needs no sleep of its own.
    """
    deadline = time.monotonic() + deadline_s
    attempts = 0
    while True:
        attempts += 1
        try:
            store.write_batch(docs)
            return attempts
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise


def test_outage_and_recovery(tmp_path: Path) -> None:
    timeout_ms = 500
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "ferretdb.log"
    s = MongoStore(f"mongodb://{HOST}:{port}/", app_env="outage", timeout_ms=timeout_ms)
    try:
        with ferretdb_at(port, data_dir, log):
            s.open()
            s.write_batch([mk("s1", i, ts=T0 + i) for i in range(10)])
            assert s.acked("s1") == 9
        # The server is gone (stopped by PID); the store stays open.
        assert s.ping() is False
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            s.write_batch([mk("s1", i, ts=T0 + i) for i in range(10, 20)])
        # Server selection gives up after timeout_ms; a retryable write may
        # select twice. Slack for a loaded machine.
        assert time.monotonic() - started < 2 * timeout_ms / 1000 + 2.0
        with pytest.raises(StoreUnavailable):
            s.acked("s1")
        with ferretdb_at(port, data_dir, log):
            # Resent from the last ack, overlapping what is stored.
            write_until_stored(s, [mk("s1", i, ts=T0 + i) for i in range(5, 20)], 30.0)
            assert s.ping() is True
            assert s.acked("s1") == 19
            docs = s.find(MetricQuery(session="s1", limit=1000))
            assert [d["seq"] for d in docs] == list(range(20))  # each exactly once
            assert [d["ts"] for d in docs] == [T0 + i for i in range(20)]
            s.close()  # FerretDB stops faster with no client connected
    finally:
        s.close()


def test_hung_server_times_out_promptly(tmp_path: Path) -> None:
    """A server that stops answering (frozen, or a network partition) rather
    than refusing connections: the socket timeout must end the write."""
    timeout_ms = 500
    port = free_port()
    s = MongoStore(f"mongodb://{HOST}:{port}/", app_env="hung", timeout_ms=timeout_ms)
    try:
        with ferretdb_at(port, tmp_path / "data", tmp_path / "ferretdb.log") as proc:
            s.open()
            s.write_batch([mk("s1", i, ts=T0 + i) for i in range(10)])
            proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    s.write_batch([mk("s1", i, ts=T0 + i) for i in range(10, 20)])
                # One socket timeout, then a retry's server selection (the
                # frozen server still accepts TCP, so its handshake times out).
                assert time.monotonic() - started < 2 * timeout_ms / 1000 + 2.0
            finally:
                proc.send_signal(signal.SIGCONT)
            # The frozen server may still apply the request it had received:
            # retrying the batch is safe either way.
            write_until_stored(s, [mk("s1", i, ts=T0 + i) for i in range(10, 20)], 30.0)
            assert s.acked("s1") == 19
            assert seqs(s, "s1") == list(range(20))
            # the retried batch is in the tiers once, however much the frozen server applied
            assert tier_count(s._database(), 60) == 20
            s.close()
    finally:
        s.close()
