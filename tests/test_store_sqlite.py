"""What only the SQLite store promises: its file, schema versioning, locking
and URI options. The behaviour every store shares is in test_store_contract."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from collector.stores import MetricQuery, StoreError, StoreUnavailable, open_store
from collector.stores.sqlite import SCHEMA_VERSION, SqliteStore
from protocol import Document

T0 = 1_700_000_000.0


def docs(session: str, seqs: range, data: dict[str, Any] | None = None) -> list[Document]:
    return [
        Document(session, i, "sample", "cpu", T0 + i, "h1", ("prod",), data or {"i": i})
        for i in seqs
    ]


def db_path(uri: str) -> str:
    return SqliteStore(uri).path


@pytest.fixture
def store(sqlite_uri: str) -> Iterator[SqliteStore]:
    s = SqliteStore(sqlite_uri)
    s.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def other(sqlite_uri: str, store: SqliteStore) -> Iterator[sqlite3.Connection]:
    """A second, independent connection to the same file, like another process."""
    conn = sqlite3.connect(db_path(sqlite_uri), isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


# -- schema --------------------------------------------------------------------


def test_schema_version_is_recorded(store: SqliteStore, other: sqlite3.Connection) -> None:
    assert SCHEMA_VERSION >= 1
    assert other.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert store.schema_version() == SCHEMA_VERSION
    tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"docs", "sessions"} <= tables


def test_wal_mode(store: SqliteStore, other: sqlite3.Connection) -> None:
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_reopening_is_idempotent(sqlite_uri: str) -> None:
    first = SqliteStore(sqlite_uri)
    first.open()
    first.write_batch(docs("s1", range(3)))
    first.open()  # a second open on the same object: no-op
    first.close()
    first.close()  # and so is a second close
    for _ in range(2):
        again = SqliteStore(sqlite_uri)
        again.open()
        try:
            assert again.schema_version() == SCHEMA_VERSION
            assert again.acked("s1") == 2
        finally:
            again.close()


def test_a_newer_schema_is_refused(sqlite_uri: str) -> None:
    s = SqliteStore(sqlite_uri)
    s.open()
    s.close()
    conn = sqlite3.connect(db_path(sqlite_uri))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        s.open()


def test_data_survives_close_and_reopen(sqlite_uri: str) -> None:
    s = SqliteStore(sqlite_uri)
    s.open()
    s.write_batch(docs("s1", range(100), {"nested": {"x": [1, 1.0, True]}}))
    created = s.create({"name": "n", "value": 4.5, "ts": T0})
    s.close()
    s = SqliteStore(sqlite_uri)
    s.open()
    try:
        assert s.acked("s1") == 99
        got = s.find(MetricQuery(session="s1", limit=1000))
        assert len(got) == 100
        assert got[0]["data"] == {"nested": {"x": [1, 1.0, True]}}
        assert s.get(created["id"]) == created
        # The next API point does not reuse a seq after a reopen.
        assert s.create({"name": "n", "value": 1, "ts": T0})["seq"] == created["seq"] + 1
    finally:
        s.close()


# -- locking ---------------------------------------------------------------------


def test_a_held_write_lock_surfaces_as_unavailable(
    store: SqliteStore, other: sqlite3.Connection
) -> None:
    store.write_batch(docs("s1", range(2)))
    other.execute("BEGIN IMMEDIATE")  # takes the write lock, as another writer would
    try:
        with pytest.raises(StoreUnavailable):
            store.write_batch(docs("s1", range(2, 5)))
        with pytest.raises(StoreUnavailable):
            store.create({"name": "n", "value": 1, "ts": T0})
        # WAL: reads go on while the writer is locked out.
        assert store.acked("s1") == 1
        assert store.ping() is True
    finally:
        other.execute("ROLLBACK")
    store.write_batch(docs("s1", range(2, 5)))  # the retry of the same batch
    assert store.acked("s1") == 4
    assert len(store.find(MetricQuery(limit=100))) == 5


def test_a_failed_batch_stores_nothing(store: SqliteStore) -> None:
    bad = [*docs("s1", range(3)), Document("s1", 3, "sample", "cpu", T0, None, (), {1: "x"})]
    with pytest.raises(StoreError) as info:
        store.write_batch(bad)  # type: ignore[arg-type]
    assert not isinstance(info.value, StoreUnavailable)  # retrying would not help
    assert store.acked("s1") == -1


def test_many_threads_share_the_store(store: SqliteStore) -> None:
    """More concurrent callers than any pool size: readers and the writer
    each get a connection they use alone."""
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def work(n: int) -> None:
        try:
            start.wait()
            for b in range(5):
                store.write_batch(docs(f"t{n}", range(b * 20, b * 20 + 20)))
                assert store.acked(f"t{n}") == b * 20 + 19
                assert len(store.find(MetricQuery(session=f"t{n}", limit=1000))) == b * 20 + 20
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.find(MetricQuery(limit=10_000))) == 1200


# -- lifecycle -------------------------------------------------------------------


def test_closed_store(sqlite_uri: str) -> None:
    s = SqliteStore(sqlite_uri)
    assert s.ping() is False  # not opened yet
    with pytest.raises(StoreUnavailable):
        s.acked("s1")
    s.open()
    assert s.ping() is True
    s.close()
    assert s.ping() is False
    with pytest.raises(StoreUnavailable):
        s.write_batch(docs("s1", range(1)))
    with pytest.raises(StoreUnavailable):
        s.find(MetricQuery())


def test_parent_directories_are_created(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    s = SqliteStore(f"sqlite:///{path}")
    s.open()
    s.close()
    assert path.is_file()


def test_unusable_directory_is_unavailable(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    s = SqliteStore(f"sqlite:///{tmp_path / 'file' / 'x.db'}")
    with pytest.raises(StoreUnavailable):
        s.open()


def test_not_a_database(tmp_path: pathlib.Path) -> None:
    (tmp_path / "x.db").write_bytes(b"this is not an SQLite file, just some bytes" * 100)
    s = SqliteStore(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StoreError):
        s.open()


# -- URIs and open_store ---------------------------------------------------------


def test_relative_and_absolute_paths(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert SqliteStore("sqlite:///data/x.db").path == "data/x.db"
    assert SqliteStore("sqlite:///./data/x.db").path == "./data/x.db"
    assert SqliteStore("sqlite:////var/lib/x.db").path == "/var/lib/x.db"
    assert SqliteStore("sqlite:///with%20space.db").path == "with space.db"
    s = SqliteStore("sqlite:///data/x.db")
    s.open()
    s.close()
    assert (tmp_path / "data" / "x.db").is_file()


def test_uri_options(sqlite_uri: str) -> None:
    assert SqliteStore(sqlite_uri).synchronous == "FULL"
    assert SqliteStore(sqlite_uri + "?synchronous=normal").synchronous == "NORMAL"
    s = SqliteStore(sqlite_uri + "?synchronous=NORMAL&busy_timeout_ms=0")
    s.open()
    try:
        s.write_batch(docs("s1", range(1)))
        assert s.acked("s1") == 0
    finally:
        s.close()


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "sqlite:///:memory:",
        "sqlite:///x.db?synchronous=OFF",
        "sqlite:///x.db?busy_timeout_ms=-1",
        "sqlite:///x.db?busy_timeout_ms=soon",
        "sqlite:///x.db?journal=delete",
    ],
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        SqliteStore(uri)


def test_open_store_dispatch(sqlite_uri: str) -> None:
    s = open_store(sqlite_uri)
    assert isinstance(s, SqliteStore)
    # The collector passes its whole store configuration whatever the backend.
    s = open_store(sqlite_uri, app_env="prod", max_pool_size=8, timeout_ms=100, retention_days=0)
    assert isinstance(s, SqliteStore)
    with pytest.raises(ValueError, match="RETENTION_DAYS"):
        open_store(sqlite_uri, retention_days=30)
    with pytest.raises(ValueError, match="unknown option"):
        open_store(sqlite_uri, synchronus="FULL")
    for uri in ["postgres://u:secret@db/x", "redis://localhost", "data.db", ""]:
        with pytest.raises(ValueError, match="unsupported store URI") as info:
            open_store(uri)
        assert "secret" not in str(info.value)


# -- the planner uses the indexes the schema was designed for ----------------------


@pytest.mark.parametrize(
    ("q", "index"),
    [
        (MetricQuery(), "docs_ts"),
        (MetricQuery(after=(T0, "5"), descending=True), "docs_ts"),
        (MetricQuery(session="s1", after=(T0, "5")), "docs_session_ts"),
        (MetricQuery(kind="event"), "docs_rare_kind_ts"),
        (MetricQuery(kind="event", name="deploy"), "docs_rare_"),
        (MetricQuery(name="deploy", ts_from=T0), "docs_rare_name_ts"),
        (MetricQuery(name="cpu", ts_from=T0), "docs_ts"),
    ],
)
def test_queries_use_an_index_in_order(store: SqliteStore, q: MetricQuery, index: str) -> None:
    """No full scan and no sort of all matches: a page costs O(limit)."""
    from collector.stores.sqlite import _find_sql

    store.write_batch(docs("s1", range(3)))  # cpu: a sample stream
    store.write_batch([Document("s1", 9, "event", "deploy", T0, None, (), None)])
    with store._reader("test") as conn:
        no_samples = store._no_samples(conn, q)
    assert no_samples == (q.name == "deploy" and q.kind is None)
    sql, params = _find_sql(q, no_samples=no_samples)
    conn = sqlite3.connect(store.path)
    try:
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        conn.close()
    assert f"INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
