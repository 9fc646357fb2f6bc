"""What only the SQLite store promises: its file, schema versioning, locking
and URI options. The behaviour every store shares is in test_store_contract."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from deltawire.collector.stores import (
    API_SESSION,
    MetricQuery,
    StoreError,
    StoreUnavailable,
    open_store,
)
from deltawire.collector.stores.base import Create
from deltawire.collector.stores.sqlite import (
    _MIGRATIONS,
    _READER_MMAP_BYTES,
    SCHEMA_VERSION,
    SqliteStore,
    encode_rows,
)
from deltawire.protocol import Document

T0 = 1_700_000_000.0


def docs(session: str, seqs: Iterable[int], data: dict[str, Any] | None = None) -> list[Document]:
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


def test_new_database_layout(store: SqliteStore, other: sqlite3.Connection) -> None:
    # 3: the paths catalog, 4: the rollup tiers, 5: id_floor, 6: roll_pending,
    # 7: roll_dirty's index, 8: roll_vals, 9: roll_600, 10: roll_hvals and roll_hbuild,
    # 11: roll_600's sketches dense
    assert SCHEMA_VERSION == 11
    assert other.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'roll_dirty_bucket'"
    ).fetchone() == (1,)
    assert other.execute("PRAGMA page_size").fetchone() == (16384,)
    # Idempotence no longer rests on a unique (session, seq) index: the only
    # unique index of docs is the partial one of API points.
    unique = [r[1] for r in other.execute("PRAGMA index_list(docs)") if r[2]]
    assert unique == ["docs_api_seq"]


def make_v1_database(path: str) -> None:
    """s1: seqs 0, 1, 2, 5, 7 and a sessions row; s2: seqs 3, 4 and, unlike
    what schema 1 always wrote, no sessions row; API points 0 and 1."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        # Migration 1 is append-only (never edited), so it is schema 1 exactly.
        for statement in _MIGRATIONS[0]:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO docs (id, session, seq, kind, name, host, tags, ts, value, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (3, "s1", 0, "sample", "cpu", "h1", '["prod"]', T0, None, '{"i":0}'),
                (4, "s1", 1, "sample", "cpu", "h1", '["prod"]', T0 + 1, None, '{"i":1}'),
                (5, "s2", 3, "sample", "mem", "h2", '["eu"]', T0 + 3, None, '{"i":3}'),
                (6, "s1", 2, "event", "deploy", "h1", '["prod"]', T0 + 2, None, None),
                (7, "api", 0, "metric", "temp", None, "[]", T0, 21.5, None),
                (9, "s2", 4, "sample", "mem", "h2", '["eu"]', T0 + 4, None, '{"i":4}'),
                (10, "s1", 5, "sample", "cpu", "h1", '["prod"]', T0 + 5, None, '{"i":5}'),
                (11, "s1", 7, "session", "end", "h1", '["prod"]', T0 + 7, None, '{"exit_code":0}'),
                (12, "api", 1, "metric", "temp", None, "[]", T0 + 1, 22.0, '{"unit":"C"}'),
            ],
        )
        conn.executemany(
            "INSERT INTO names (name, kind) VALUES (?, ?)",
            [("cpu", "sample"), ("mem", "sample"), ("deploy", "event"), ("end", "session"),
             ("temp", "metric")],
        )  # fmt: skip
        conn.execute(
            "INSERT INTO sessions VALUES ('s1', 'h1', 'agent/1', '[\"prod\"]', ?, ?, 1, ?, 0, NULL)",
            (T0 - 10, T0 + 7, T0 + 7),
        )
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_v1_database_upgrades_in_place(sqlite_uri: str) -> None:
    path = db_path(sqlite_uri)
    make_v1_database(path)
    conn = sqlite3.connect(path)
    try:
        before = conn.execute("SELECT * FROM docs ORDER BY id").fetchall()
    finally:
        conn.close()

    s = SqliteStore(sqlite_uri)
    s.open()
    try:
        assert s.schema_version() == SCHEMA_VERSION
        with s._reader("test") as reader:
            assert reader.execute("SELECT * FROM docs ORDER BY id").fetchall() == before
            assert reader.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            indexes = {r[1] for r in reader.execute("PRAGMA index_list(docs)")}
            # An existing file keeps its page size.
            assert reader.execute("PRAGMA page_size").fetchone() == (4096,)
        assert indexes == {
            "docs_ts",
            "docs_session_ts",
            "docs_rare_kind_ts",
            "docs_rare_name_ts",
            "docs_api_seq",
        }
        assert (s.acked("s1"), s.acked("s2"), s.acked(API_SESSION)) == (7, 4, 1)
        sessions = {r["session"]: r for r in s.sessions()}
        assert set(sessions) == {"s1", "s2"}  # the API pseudo-session gets no row
        s1 = sessions["s1"]
        assert (s1["agent"], s1["first_seen"], s1["connected"], s1["ended"]) == (
            "agent/1", T0 - 10, True, T0 + 7,
        )  # fmt: skip
        s2 = sessions["s2"]
        assert (s2["host"], s2["tags"], s2["first_seen"], s2["last_seen"]) == (
            "h2", ["eu"], T0 + 3, T0 + 4,
        )  # fmt: skip

        # The old rows again (a client resending after the upgrade): nothing
        # is stored twice; the gaps below the marks were never stored, and are.
        s.write_batch(docs("s1", range(8)) + docs("s2", range(5)))
        assert len(s.find(MetricQuery(limit=100))) == len(before) + 6
        # New rows are stored; the next API point continues the API sequence.
        s.write_batch(docs("s1", range(8, 10)) + docs("s2", range(5, 6)))
        assert [d["seq"] for d in s.find(MetricQuery(session="s1", limit=100))] == [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
        ]  # fmt: skip
        assert (s.acked("s1"), s.acked("s2")) == (9, 5)
        assert s.create({"name": "temp", "value": 1, "ts": T0})["seq"] == 2
        assert s.acked(API_SESSION) == 2
    finally:
        s.close()


# -- idempotence by high-water mark ----------------------------------------------


def stored(store: SqliteStore, session: str) -> list[tuple[int, Any]]:
    return [(d["seq"], d["data"]) for d in store.find(MetricQuery(session=session, limit=1000))]


def test_duplicates_within_one_batch_are_dropped(store: SqliteStore) -> None:
    """A client that reconnected resends what its old connection had in
    flight, and both connections' frames may land in one batch."""
    batch = [
        *docs("s", range(9, 11), {"v": "old connection"}),
        *docs("t", range(3), {"v": "t"}),
        *docs("s", range(9, 12), {"v": "new connection"}),
    ]
    store.write_rows(encode_rows(batch))
    assert stored(store, "s") == [
        (9, {"v": "old connection"}),
        (10, {"v": "old connection"}),
        (11, {"v": "new connection"}),
    ]
    assert [seq for seq, _ in stored(store, "t")] == [0, 1, 2]
    assert (store.acked("s"), store.acked("t")) == (11, 2)


def test_duplicates_across_batches_are_dropped(store: SqliteStore) -> None:
    store.write_batch(docs("s", range(9, 11), {"v": "first"}))
    store.write_batch(docs("s", range(9, 12), {"v": "again"}))
    assert stored(store, "s") == [(9, {"v": "first"}), (10, {"v": "first"}), (11, {"v": "again"})]
    assert store.acked("s") == 11


def test_a_seq_below_the_high_water_mark_is_stored_unless_it_is_a_resend(
    store: SqliteStore,
) -> None:
    """A lower seq arriving later is a resend only if it is stored (issue 11,
    defect 6: a later connection may fill a gap an earlier one left)."""
    store.write_batch(docs("s", [0, 5], {"v": 1}))
    store.write_batch(docs("s", [3, 5, 6], {"v": 2}))
    assert stored(store, "s") == [(0, {"v": 1}), (3, {"v": 2}), (5, {"v": 1}), (6, {"v": 2})]
    assert store.acked("s") == 6


def test_a_resent_bye_still_ends_the_session_once(store: SqliteStore) -> None:
    bye = Document("s", 3, "session", "end", T0 + 3, "h1", (), {"exit_code": 2})
    store.write_batch([*docs("s", range(3)), bye])
    store.write_batch([bye])
    assert [d["seq"] for d in store.find(MetricQuery(session="s", kind="session"))] == [3]
    [row] = store.sessions()
    assert (row["ended"], row["exit_code"]) == (T0 + 3, 2)


def test_deleting_the_newest_document_keeps_the_resume_point(store: SqliteStore) -> None:
    store.write_batch(docs("s", range(3)))
    newest = store.find(MetricQuery(session="s", descending=True, limit=1))[0]
    assert store.delete(newest["id"])
    # The client was acked 2: it must not be asked to send 2 again.
    assert store.acked("s") == 2


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


def test_opening_a_current_database_needs_no_write_lock(
    sqlite_uri: str, store: SqliteStore, other: sqlite3.Connection
) -> None:
    """A second process (the API, a tool) opens the file while the collector
    is writing: no migration to run, so no wait for the writer's lock."""
    other.execute("BEGIN IMMEDIATE")
    try:
        second = SqliteStore(sqlite_uri + "?busy_timeout_ms=0")
        second.open()
        second.close()
    finally:
        other.execute("ROLLBACK")


def test_a_failed_batch_stores_nothing(store: SqliteStore) -> None:
    bad = [*docs("s1", range(3)), Document("s1", 3, "sample", "cpu", T0, None, (), {1: "x"})]
    with pytest.raises(StoreError) as info:
        store.write_batch(bad)  # type: ignore[arg-type]
    assert not isinstance(info.value, StoreUnavailable)  # retrying would not help
    assert store.acked("s1") == -1


def test_readers_map_the_file_and_see_every_commit(
    store: SqliteStore, other: sqlite3.Connection
) -> None:
    """Readers read the database through mmap (``_READER_MMAP_BYTES``), the
    writer through its page cache; a mapped reader still sees each commit of
    another connection, checkpointed into the mapped file or still in the log."""
    with store._reader("test") as conn:
        assert conn.execute("PRAGMA mmap_size").fetchone() == (_READER_MMAP_BYTES,)
    assert store._writer_conn().execute("PRAGMA mmap_size").fetchone() == (0,)
    store.write_batch(docs("m", range(50)))
    assert len(store.find(MetricQuery(session="m", limit=1000))) == 50
    other.execute("UPDATE docs SET data = '{\"i\": -1}' WHERE seq = 7")  # another process's commit
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # into the mapped file itself
    assert [d["data"] for d in store.find(MetricQuery(session="m", limit=1000))][7] == {"i": -1}
    other.execute("UPDATE docs SET data = '{\"i\": -2}' WHERE seq = 8")  # in the log only
    assert [d["data"] for d in store.find(MetricQuery(session="m", limit=1000))][8] == {"i": -2}


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
    assert SqliteStore(sqlite_uri)._native and SqliteStore(sqlite_uri + "?render=auto")._native
    assert not SqliteStore(sqlite_uri + "?render=sql")._native
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
        "sqlite:///x.db?render=c",
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
    from deltawire.collector.stores.sqlite import _find_sql

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


def test_background_checkpoints_move_the_wal_into_the_database(sqlite_uri: str) -> None:
    """With the checkpointer on, committed pages reach the database file
    without the committing connection checkpointing (its own automatic
    checkpoint only steps in at a WAL far larger than this test writes)."""
    import os

    from deltawire.testing.harness import wait_until

    path = db_path(sqlite_uri)
    s = SqliteStore(sqlite_uri)
    s.open()
    try:
        s.start_checkpointer(period=0.05)
        size = os.path.getsize(path)
        s.write_batch(docs("ckpt", range(300), {"pad": "x" * 500}))
        wait_until(lambda: os.path.getsize(path) > size + 100_000, timeout=10,
                   what="the background checkpoint to copy the batch into the file")  # fmt: skip
        assert [t.name for t in threading.enumerate()].count("sqlite-checkpoint") == 1
    finally:
        s.close()
    assert "sqlite-checkpoint" not in [t.name for t in threading.enumerate()]


def test_without_the_checkpointer_a_small_wal_stays_in_the_log(sqlite_uri: str) -> None:
    """The control for the test above, and what every writing process does
    (an API edit writer, the folder): its commits do not checkpoint, not
    even past SQLite's default of 1,000 pages (16 MB of log here), since
    a checkpoint in a commit holds the write lock every writer waits for."""
    import os

    path = db_path(sqlite_uri)
    s = SqliteStore(sqlite_uri)
    s.open()
    try:
        size = os.path.getsize(path)
        for i in range(0, 24_000, 4_000):  # ~20 MB of log
            s.write_batch(docs("ckpt", range(i, i + 4_000), {"pad": "x" * 700}))
        assert os.path.getsize(path + "-wal") > 1000 * 16384
        assert os.path.getsize(path) == size
    finally:
        s.close()


def test_data_the_row_encoder_cannot_write_is_a_bad_frame_not_a_crash() -> None:
    """orjson reads objects nested 300 deep but writes at most 254 levels: such
    a frame is rejected (non-fatal, with its seq) and the stream carries on."""
    from deltawire.collector.stores.sqlite import encode_row
    from deltawire.protocol import ProtocolError, ServerConnection

    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    conn = ServerConnection(document=encode_row)
    conn.receive_data(
        b'{"t":"hello","v":1,"session":"s"}\n'
        + b'{"t":"snap","seq":1,"ts":1.7e9,"name":"p","data":'
        + deep
        + b"}\n"
        + b'{"t":"snap","seq":2,"ts":1.7e9,"name":"p","data":{"x":1}}\n'
    )
    events: list[Any] = []
    with pytest.raises(ProtocolError) as caught:
        conn.next_events(events)
    assert (caught.value.code, caught.value.seq, caught.value.fatal) == ("bad_frame", 1, False)
    conn.next_events(events)
    assert events[-1][:4] == ("s", 2, "sample", "p")


def test_only_the_api_edits_keep_their_savepoint_journal_in_memory(store: SqliteStore) -> None:
    # The edit writer's group commit: its savepoint's sub-journal in memory
    # (cheaper per update); ingest and the folder keep temporary files on
    # disk, where a big sort belongs.
    def temp_store() -> int:
        assert store._writer is not None
        (mode,) = store._writer.execute("PRAGMA temp_store").fetchone()
        return int(mode)

    store.write_batch(docs("s1", range(3)))
    assert temp_store() == 0  # the default: files
    [created] = store.apply_edits([Create({"name": "n", "value": 1, "ts": T0})])
    assert temp_store() == 2  # memory
    assert isinstance(created, dict) and store.get(created["id"]) == created


def _waiters_on(path: str) -> int:
    """Processes or threads blocked on a lock of the file at ``path`` (/proc/locks)."""
    inode = pathlib.Path(path).stat().st_ino
    return sum(
        1
        for line in pathlib.Path("/proc/locks").read_text().splitlines()
        if "->" in line and line.split()[-3].endswith(f":{inode}")
    )


def test_a_write_that_waited_for_the_lock_is_logged_with_the_wait(
    store: SqliteStore, sqlite_uri: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from deltawire.collector.stores import sqlite as sqlite_module
    from deltawire.collector.stores.sqlite_lock import WriteLock

    store.write_batch(docs("s1", range(2)))
    assert not [r for r in caplog.records if "slow" in r.getMessage()]  # a quick one: nothing
    monkeypatch.setattr(sqlite_module, "SLOW_WRITE_S", 0.05)
    other = WriteLock(db_path(sqlite_uri))  # another writer's (another open file: flock)
    other.open()
    done = threading.Event()
    try:
        with other.across_processes():

            def write() -> None:
                store.write_batch(docs("s1", range(2, 4)))
                done.set()

            writer = threading.Thread(target=write)
            writer.start()
            deadline = threading.Event()
            for _ in range(1000):  # until the write is blocked on our lock (<= 10 s)
                if _waiters_on(other.path):
                    break
                deadline.wait(0.01)
            else:
                raise AssertionError("the write never waited for the lock")
            deadline.wait(0.1)  # how long we hold it: the wait the log must report
        assert done.wait(10)
        writer.join()
    finally:
        other.close()
    slow = [r for r in caplog.records if r.getMessage() == "slow write transaction"]
    assert len(slow) == 1
    assert slow[0].action == "write_batch"  # type: ignore[attr-defined]
    assert slow[0].lock_wait_ms >= 100  # type: ignore[attr-defined]
    assert slow[0].ms >= slow[0].lock_wait_ms + slow[0].held_ms - 1  # type: ignore[attr-defined]
    # the COMMIT (where SQLite's own checkpoint would copy the log) is part of the hold
    assert 0 <= slow[0].commit_ms <= slow[0].held_ms  # type: ignore[attr-defined]
    assert store.acked("s1") == 3
