"""The embedded store: one SQLite file in WAL mode.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
query parameters:

``synchronous`` (``FULL`` by default, or ``EXTRA``, ``NORMAL``)
    With FULL, every commit fsyncs the write-ahead log before ``write_batch``
    returns, so an acknowledged document survives a power loss. NORMAL skips
    that fsync (the log is synced at checkpoints only): a committed batch still
    survives a crash of the collector process, because the OS holds the data,
    but the last batches may vanish on power loss or a kernel crash, even though
    their acks were sent. Use it only where that trade is acceptable.
``busy_timeout_ms`` (100 by default)
    How long a write waits for a lock held by another process before it gives
    up with ``StoreUnavailable``. Kept short on purpose: the collector retries
    with backoff, and a write that blocks a worker thread for seconds would
    stall acks and every other store call queued behind it.
``fold`` (``on`` by default, or ``off``)
    Whether ``start_checkpointer`` (the collector's writer) also starts the
    rollup folder process (sqlite_folder.py). Off, the tiers fall behind and
    aggregations read ever more raw rows (answers stay exact): for benches
    that measure ingest without the tiers, or a folder run elsewhere.

Threads: one writer connection behind a lock (SQLite admits one writer at a
time anyway), and a pool of reader connections, which WAL lets run next to
the writer without blocking it.

Idempotence: a streamed document whose seq is above its session's high-water
mark (``sessions.acked``, raised by the same transaction) is new: the
collector stores a connection's frames in order (PROTOCOL.md). One at or below
the mark is a resend if a document of the same (session, seq) is stored at
the same ts (a resend is the same frame again), found through the
(session, ts) index; otherwise it was never stored, and is stored now: a
later connection of the session may fill a gap the earlier one left (a
client may drop data), and acking it without storing it would lose it
(issue 11). A unique (session, seq) index would decide both cases for far
more CPU per row (see the comment above ``_MIGRATIONS``).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from urllib.parse import parse_qsl, unquote

import orjson

from deltawire.protocol import BadFrame, Document, Hello

from ..point import PointError, check_fields
from . import rollup_vals, sqlite_native, sqlite_page, sqlite_rollup
from .base import (
    API_SESSION,
    AggQuery,
    Change,
    Changed,
    Create,
    Edit,
    EditResult,
    FoundPage,
    MetricQuery,
    Replace,
    SessionQuery,
    StoreError,
    StoreUnavailable,
)
from .catalog import Catalog, StreamTracker, first_sample_paths, sample_paths
from .rollup import HOUR, TIERS, RollupData, RollupRequest
from .sqlite_lock import WriteLock

__all__ = ["End", "Row", "SqliteStore", "encode_row", "encode_rows"]

log = logging.getLogger("deltawire.collector.stores.sqlite")

_SCHEME: Final = "sqlite://"

_SYNCHRONOUS: Final = frozenset({"FULL", "EXTRA", "NORMAL"})
_DEFAULT_BUSY_TIMEOUT_MS: Final = 100

#: Page size of new databases (an existing file keeps its own). A batch
#: appends to ~100 sessions' regions of the (session, ts) index at once, each
#: on its own leaf: larger pages mean fewer leaves and interior pages to dirty,
#: write to the log and checkpoint per batch. Measured 5-20% less CPU per row
#: than 4096 (100 sessions interleaved, batches of 2000; the VM is noisy).
_PAGE_SIZE: Final = 16384

#: Background checkpoints (``start_checkpointer``): how often, and the WAL
#: size in pages at which a writer's own automatic checkpoint still steps
#: in (every writing process's), should the background one fall behind
#: (128 MiB at 16 KiB pages).
_CHECKPOINT_PERIOD_S: Final = 0.5
_BACKSTOP_CHECKPOINT_PAGES: Final = 8192

#: A write transaction (its wait for the lock included) or a log fsync that
#: takes longer than this is logged as a warning with where the time went:
#: every other writer (ingest acks, API writes) waited as long. (How a 1.8 s
#: pause of every write under the API bench was traced to a rollup step.)
SLOW_WRITE_S = 0.5

#: Page cache per connection (negative = KiB). The writer gets the large one:
#: every sample insert walks the interior pages of three b-trees (the table,
#: ts, session+ts), and keeping them in memory is what keeps big databases
#: fast to append to.
_WRITER_CACHE_KIB: Final = 65536
_READER_CACHE_KIB: Final = 16384
#: Readers map the database file (``PRAGMA mmap_size``) instead of copying
#: its pages with pread: every commit elsewhere (the ingest's, many a
#: second with agents streaming) makes SQLite drop a reader's whole page
#: cache at its next read, so an uncached page read 16 KiB pages afresh each
#: time. Mapped, a page no longer in the log is a pointer into the OS's
#: cache. Measured (bench.api, uncached GET at c=100, 3 interleaved rounds):
#: 179-207 µs of API CPU a page against 235-245. Address space only, never
#: memory of its own; a larger database reads the rest as before. Writers
#: keep pread: a page they change is copied either way (mapped, measured
#: slower). The background checkpointer's connection is not mapped either:
#: it reads the log, not the database. (The 1.4-1.9 s pauses first blamed on
#: mapping it were a checkpoint step's rebuild inside the write lock, since
#: moved into its read snapshot: docs/api-performance.md.)
_READER_MMAP_BYTES: Final = 1 << 30

#: The (name, kind) pairs the writer knows are in the ``names`` table; a bound
#: keeps a stream of ever-new event names from growing it without end.
_KNOWN_NAMES_MAX: Final = 100_000

#: Rollup folding (sqlite_rollup.Folder) runs in a process of its own, the
#: folder (sqlite_folder.py, started by ``start_checkpointer``, niced), never
#: on the writer's commit path: folding costs several times the CPU of the
#: insert, and done by the writer between batches it saturated the writer
#: under sustained load (paced ack p99 2.4 s instead of 89 ms). The folder
#: absorbs slices of new documents with no lock, and writes what it absorbed
#: in short write transactions (_STEP_SERIES), so a batch commit waits for
#: one short step at most.
_FOLD_SLICE: Final = 5000
#: How often an idle folder looks for new documents.
_FOLD_POLL_S: Final = 0.2
#: Checkpoint the absorbed buckets at this many documents or this age: each
#: checkpoint writes every touched bucket once, so rarer is cheaper (folding
#: 200,000 documents of 100 streams, ~20 leaves each, checkpointed every
#: 30,000: ~60 µs of CPU a document; every 60,000: ~44), while what is not
#: checkpointed is the tail every query reads raw (the age bounds it under a
#: steady load: 2 s at 30,000 documents a second either way), and memory:
#: the values, packed as arrays, ~11 MB per 60,000 such documents (as lists
#: they took 34 MB; measured with tracemalloc).
_CHECKPOINT_DOCS: Final = 60_000
_CHECKPOINT_S: Final = 2.0
#: Series per checkpoint write transaction (~70 bucket rows). Measured at load
#: average 10 (30,000 documents of ~20 leaves): 25 series, median 1.2 ms, p90
#: 4.9; 50 series 3.3 / 7.2; 100 series 9-15 / 25-30 (wall time, no fsync).
_STEP_SERIES: Final = 25
#: How long ``close`` waits for the folder process to finish its step.
_FOLDER_GRACE_S: Final = 10.0
#: How often a checkpoint also drops buckets past their tier's retention.
_PRUNE_EVERY_S: Final = 600.0

#: Error codes that mean "not now" rather than "never": locked, busy, out of
#: disk or memory, an unreachable or read-only file. Everything else (bad SQL,
#: a corrupt file, a constraint) is a ``StoreError``.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)

#: The docs table's columns: migration 1 creates the table with them and UNIQUE
#: (session, seq); migration 2 copies it into one with the same columns, without.
_DOCS_COLUMNS: Final = """
    id INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    host TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    ts REAL NOT NULL,
    value REAL,
    data TEXT"""

# Schema migrations: migration i (0-based) moves PRAGMA user_version from i to
# i + 1. Append, never edit: a database on disk has already run the old ones.
#
# Indexes, and why only these: each secondary index costs 1-2 us per inserted
# row on the reference machine (2 vCPUs), and ingest must sustain 100k
# documents/s. The full set (session, name, kind, host and ts indexes) measured
# ~75-85k/s; this set measures ~115-125k/s.
# - no (session, seq) UNIQUE index (schema 1 had one): with ~100 sessions per
#   batch every insert lands in another session's region of it, and it cost
#   ~1/3 of the CPU per row. Idempotence uses the session's high-water mark
#   instead (``sessions.acked``, see ``write_rows``), and ``acked`` reads it.
# - (session, seq) UNIQUE WHERE kind = 'metric': API points (``create``) are
#   numbered max(seq) + 1 of this index; samples pay nothing for it.
# - (ts): the default listing order and every time-range query. Queries whose
#   filters have no index below walk it in order and stop after ``limit``
#   matches: cheap when the filter matches often, and bounded by from/to.
# - (session, ts): one session's stream; sessions are many, so a scan of the
#   ts index would touch mostly other sessions' rows.
# - (kind, ts) and (name, ts) only for kinds other than "sample": samples are
#   the bulk and pay nothing for them, while events, byes and API points are
#   rare and so need an index to be found. A name filter without a kind uses
#   the name index when the ``names`` catalog shows the name has no samples
#   (event names); sample stream names are frequent by nature and walk (ts).
# - no (host, ts): a host carries many sessions, so host filters are far less
#   selective than session filters, and what dashboards ask (a host over the
#   last hour) stays bounded by the ts index.
# Tags: no side table (it would write one more row per tag per document);
# see ``_tag_filter``.
#: A migration step: SQL, or a function of the connection (in the same transaction).
_Step = str | Callable[[sqlite3.Connection], None]
_MIGRATIONS: Final[tuple[tuple[_Step, ...], ...]] = (
    (
        f"CREATE TABLE docs ({_DOCS_COLUMNS},\n    UNIQUE (session, seq))",
        "CREATE INDEX docs_ts ON docs (ts)",
        "CREATE INDEX docs_session_ts ON docs (session, ts)",
        "CREATE INDEX docs_rare_kind_ts ON docs (kind, ts) WHERE kind != 'sample'",
        "CREATE INDEX docs_rare_name_ts ON docs (name, ts) WHERE kind != 'sample'",
        # Every (name, kind) present in docs, maybe more (deletes leave
        # entries behind): it tells a name query whether it may use the
        # partial name index. Written per distinct pair, not per document.
        """CREATE TABLE names (
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            PRIMARY KEY (name, kind)
        ) WITHOUT ROWID""",
        """CREATE TABLE sessions (
            session TEXT PRIMARY KEY,
            host TEXT,
            agent TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            connected INTEGER NOT NULL DEFAULT 0,
            ended REAL,
            exit_code INTEGER,
            signal TEXT
        )""",
        "CREATE INDEX sessions_last_seen ON sessions (last_seen)",
    ),
    # 2: idempotence by high-water mark; docs loses UNIQUE (session, seq).
    (
        # The marks first, while the unique index still makes max(seq) a
        # lookup per session. Every streamed session gets a row ('api' is
        # API_SESSION, whose points are numbered by docs_api_seq instead).
        "ALTER TABLE sessions ADD COLUMN acked INTEGER NOT NULL DEFAULT -1",
        """INSERT OR IGNORE INTO sessions (session, host, tags, first_seen, last_seen)
            SELECT session, host, tags, min(ts), max(ts) FROM docs
            WHERE session != 'api' GROUP BY session""",
        """UPDATE sessions SET acked = coalesce(
            (SELECT max(seq) FROM docs WHERE docs.session = sessions.session), -1)""",
        # SQLite cannot drop a constraint's index: copy the table, ids kept.
        f"CREATE TABLE docs_new ({_DOCS_COLUMNS})",
        """INSERT INTO docs_new (id, session, seq, kind, name, host, tags, ts, value, data)
            SELECT id, session, seq, kind, name, host, tags, ts, value, data FROM docs""",
        "DROP TABLE docs",
        "ALTER TABLE docs_new RENAME TO docs",
        # Built after the copy: one sort each instead of a b-tree insert per row.
        "CREATE INDEX docs_ts ON docs (ts)",
        "CREATE INDEX docs_session_ts ON docs (session, ts)",
        "CREATE INDEX docs_rare_kind_ts ON docs (kind, ts) WHERE kind != 'sample'",
        "CREATE INDEX docs_rare_name_ts ON docs (name, ts) WHERE kind != 'sample'",
        "CREATE UNIQUE INDEX docs_api_seq ON docs (session, seq) WHERE kind = 'metric'",
    ),
    # 3: the data paths of sample streams, for the /query vocabulary (catalog.py).
    (
        """CREATE TABLE paths (
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (name, path)
        ) WITHOUT ROWID""",
    ),
    # 4: rollup tiers (sqlite_rollup.py); existing rows are folded as the writer goes.
    sqlite_rollup.MIGRATION,
    # 5: ids are never reused. SQLite gives a new row max(id) + 1, so deleting
    # the newest document would hand its id to the next one; a delete of the
    # top id records it here and the next insert starts above it (``_hold_ids``).
    # Cheaper than AUTOINCREMENT, which updates sqlite_sequence per row.
    ("CREATE TABLE id_floor (id INTEGER PRIMARY KEY)",),
    # 6: the per-series marks of a rollup checkpoint under way (sqlite_rollup.py).
    sqlite_rollup.MIGRATION_PENDING,
    # 7: dirty buckets are looked up by every read of the tiers (sqlite_rollup.py).
    sqlite_rollup.MIGRATION_DIRTY,
    # 8: the sorted values of minute buckets, for thresholds (rollup_vals.py).
    # Buckets folded before it have none: a threshold reads their raw rows.
    rollup_vals.MIGRATION,
    # 9: the ten-minute tier, built from the minutes (sqlite_rollup.py).
    sqlite_rollup.MIGRATION_TEN_MINUTES,
    # 10: each hour's values in sorted chunks, for thresholds (rollup_vals.py);
    # the hours folded before are built by the folder (from their minutes'
    # values, or their raw rows).
    rollup_vals.MIGRATION_HOURS,
    # 11: the ten-minute sketches rewritten dense (sqlite_rollup.DENSE_TIERS).
    sqlite_rollup.MIGRATION_DENSE,
)

#: The schema version this code writes and reads.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_DOC_COLUMNS: Final = "id, session, seq, kind, name, host, tags, ts, value, data"
#: Where each column is in a row of ``_DOC_COLUMNS``.
_COLUMN_AT: Final = {c: i for i, c in enumerate(_DOC_COLUMNS.split(", "))}
#: The API-writable columns of REAL affinity (``_DOCS_COLUMNS``): SQLite
#: stores an integer set there as a REAL, which is what a read returns.
_REAL_COLUMNS: Final = frozenset({"value", "ts"})
_SESSION_COLUMNS: Final = (
    "session, host, agent, tags, first_seen, last_seen, connected, ended, exit_code, signal"
)
_GROUP_COLUMNS: Final = frozenset({"name", "host", "session", "kind"})
_AGG_FUNCS: Final = {"count": "count", "avg": "avg", "min": "min", "max": "max", "sum": "total"}

# Canonical decimal rowids only: int() would also take " 7", "+7", "0_7" or
# non-ASCII digits, which would give one document several ids.
_T = TypeVar("_T")
_ROWID_RE: Final = re.compile(r"[1-9][0-9]{0,18}")
_MAX_ROWID: Final = 2**63 - 1

_INSERT_NAME: Final = "INSERT OR IGNORE INTO names (name, kind) VALUES (?, ?)"
# OR IGNORE only for docs_api_seq: a streamed row never has kind 'metric'
# unless someone hands write_rows one, and then the first write wins as usual.
_INSERT_DOC: Final = (
    "INSERT OR IGNORE INTO docs (session, seq, kind, name, host, tags, ts, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The high-water marks of a batch's sessions (a JSON array), in one query.
_MARKS: Final = (
    "SELECT session, acked FROM sessions WHERE session IN (SELECT value FROM json_each(?))"
)
# A session first heard of in a batch (no hello seen by this store, e.g. a
# replayed capture) still gets a row, so GET /sessions lists everything stored.
_TOUCH_SESSION: Final = (
    "INSERT INTO sessions (session, host, tags, first_seen, last_seen, connected, acked)"
    " VALUES (?, ?, ?, ?, ?, 0, ?)"
    " ON CONFLICT (session) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen),"
    " acked = max(acked, excluded.acked)"
)
# The highest seq of API_SESSION (?1): its API points, or rows streamed under
# that name by an agent, which schema 1 numbered in one sequence with them.
# Scalar subqueries keep each max() a single index lookup.
_API_TOP: Final = (
    "SELECT max(coalesce((SELECT max(seq) FROM docs WHERE session = ?1 AND kind = 'metric'), -1),"
    " coalesce((SELECT acked FROM sessions WHERE session = ?1), -1))"
)
# Tags of API points (streamed documents carry their session's tags): the
# most recent _CATALOG_POINTS of them, through the partial kind index.
_RECENT_POINT_TAGS: Final = (
    "SELECT DISTINCT tags FROM (SELECT tags FROM docs WHERE kind = 'metric' AND kind != 'sample'"
    " ORDER BY ts DESC LIMIT ?)"
)
_CATALOG_POINTS: Final = 10_000
_END_SESSION: Final = "UPDATE sessions SET ended = ?, exit_code = ?, signal = ? WHERE session = ?"
# Is this row (at or below its session's mark) stored already? A resend
# carries the frame's own ts, so the (session, ts) index finds it at once.
_STORED: Final = "SELECT 1 FROM docs WHERE session = ? AND ts = ? AND seq = ? LIMIT 1"


# After a delete of the top id (?1): remember it, only the highest.
_RECORD_FLOOR: Final = (
    "INSERT INTO id_floor (id) SELECT ?1 WHERE ?1 > coalesce((SELECT max(id) FROM docs), 0)"
)
_PLACEHOLDER: Final = (
    "INSERT INTO docs (id, session, seq, kind, name, ts) VALUES (?, '', -1, '', '', 0)"
)


@contextmanager
def _hold_ids(conn: sqlite3.Connection) -> Iterator[None]:
    """Inserts inside get ids above every id ever deleted: when the highest
    deleted id is above the top id, a placeholder row holds it for the inserts'
    duration (same transaction: no reader ever sees it)."""
    (floor,) = conn.execute("SELECT max(id) FROM id_floor").fetchone()
    hold = None
    if floor is not None:
        (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM docs").fetchone()
        if floor > top:
            hold = floor
            conn.execute(_PLACEHOLDER, (hold,))
    yield
    if hold is not None:
        conn.execute("DELETE FROM docs WHERE id = ?", (hold,))


def _parse_uri(uri: str) -> tuple[str, str, float, bool, bool]:
    """(path, synchronous, busy timeout in seconds, fold, C renderer wanted)
    from a ``sqlite://`` URI."""
    if not uri.startswith(_SCHEME):
        raise ValueError(f"not a sqlite URI (expected sqlite:///PATH): {uri!r}")
    rest, _, query = uri[len(_SCHEME) :].partition("?")
    if not rest.startswith("/") or len(rest) < 2:
        raise ValueError(
            f"sqlite URI needs a path: sqlite:///relative.db or sqlite:////absolute.db, got {uri!r}"
        )
    path = unquote(rest[1:])
    if path == ":memory:" or path.startswith("file:"):
        # Every connection would get its own private database: the readers
        # would never see what the writer stored.
        raise ValueError("sqlite store needs a file path, not an in-memory database")
    synchronous = "FULL"
    busy_ms = _DEFAULT_BUSY_TIMEOUT_MS
    fold = True
    native = True
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key == "synchronous":
            synchronous = value.upper()
            if synchronous not in _SYNCHRONOUS:
                raise ValueError(
                    f"synchronous must be one of {', '.join(sorted(_SYNCHRONOUS))}, got {value!r}"
                )
        elif key == "busy_timeout_ms":
            if not value.isascii() or not value.isdigit():
                raise ValueError(f"busy_timeout_ms must be an integer >= 0, got {value!r}")
            busy_ms = int(value)
        elif key == "fold":
            if value not in ("on", "off"):
                raise ValueError(f"fold must be on or off, got {value!r}")
            fold = value == "on"
        elif key == "render":
            if value not in ("auto", "sql"):
                raise ValueError(f"render must be auto or sql, got {value!r}")
            native = value == "auto"
        else:
            raise ValueError(
                f"unknown sqlite URI parameter {key!r}"
                " (known: synchronous, busy_timeout_ms, fold, render)"
            )
    return path, synchronous, busy_ms / 1000, fold, native


def _start_folder(uri: str) -> subprocess.Popen[bytes]:
    """The rollup folder process of the store at ``uri`` (it exits at EOF on
    its stdin: when we close it, or when this process dies)."""
    level = logging.getLevelName(logging.getLogger("deltawire").getEffectiveLevel()).lower()
    argv = [sys.executable, "-m", "deltawire.collector.stores.sqlite_folder",
            "--store", uri, "--log-level", level]  # fmt: skip
    # Not our stdout: in the writer child that is the pipe of its replies, and
    # a folder holding it open would keep the collector from seeing the
    # writer's end (EOF) until the folder exits too.
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def _stop_folder(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        try:
            proc.stdin.close()  # EOF: it finishes its step and exits
        except OSError:
            pass
    try:
        proc.wait(_FOLDER_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("rollup folder did not exit; killing it", extra={"pid": proc.pid})
        proc.kill()
        proc.wait()


class _WriteTiming:
    """When a write transaction got the lock, and when it began its COMMIT
    (None: not yet, or never)."""

    __slots__ = ("committing", "locked")

    def __init__(self) -> None:
        self.locked: float | None = None
        self.committing: float | None = None


@contextmanager
def _slow_write_logged(action: str) -> Iterator[_WriteTiming]:
    """Log a write transaction that took over ``SLOW_WRITE_S`` from asking
    for the lock to letting it go (the caller sets ``locked`` on what it
    yields once it holds the lock, and ``committing`` as it commits), with
    how much was the wait and how much the COMMIT, where SQLite copies the
    log into the database itself once it passes the backstop (after the
    lock is let go: never a log line while others wait). Entered inside
    ``lock_priority``: the folder rests at SCHED_IDLE outside it, where on a
    busy machine it may not run for a second, which is no one's wait."""
    asked = time.monotonic()
    timing = _WriteTiming()
    try:
        yield timing
    finally:
        done = time.monotonic()
        if done - asked > SLOW_WRITE_S:
            wait = (timing.locked if timing.locked is not None else done) - asked
            commit = done - timing.committing if timing.committing is not None else 0.0
            log.warning("slow write transaction", extra={
                "action": action, "ms": round((done - asked) * 1e3),
                "lock_wait_ms": round(wait * 1e3), "held_ms": round((done - asked - wait) * 1e3),
                "commit_ms": round(commit * 1e3)})  # fmt: skip


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn sqlite3 errors into the store's two kinds of failure."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        # Extended codes (SQLITE_IOERR_FSYNC, ...) carry the primary code in
        # their low byte.
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            raise StoreUnavailable(f"sqlite {action}: {exc}") from exc
        raise StoreError(f"sqlite {action}: {exc}") from exc


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: the statements inside see one snapshot (WAL readers
    never block the writer, nor it them)."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        # An error may have ended the transaction already.
        if conn.in_transaction:
            conn.execute("COMMIT")


def _rowid(doc_id: str) -> int | None:
    if type(doc_id) is not str or not _ROWID_RE.fullmatch(doc_id):
        return None
    n = int(doc_id)
    return n if n <= _MAX_ROWID else None


def _json_text(value: Any, what: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from None


def _doc_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    doc_id, session, seq, kind, name, host, tags, ts, value, data = row
    doc: dict[str, Any] = {
        "id": str(doc_id),
        "session": session,
        "seq": seq,
        "kind": kind,
        "name": name,
        "host": host,
        "tags": orjson.loads(tags),
        "ts": ts,
    }
    if value is not None:
        doc["value"] = value
    if data is not None:
        doc["data"] = orjson.loads(data)
    return doc


def _buckets_of(
    row: tuple[Any, ...], doc: dict[str, Any] | None = None
) -> sqlite_rollup.DocBuckets:
    """``sqlite_rollup.doc_buckets`` of a row of ``_DOC_COLUMNS`` read
    already; ``doc``: its ``_doc_dict``, whose parsed data is reused (parsing
    it again was a few % of an edit's CPU)."""
    _id, session, _seq, kind, name, host, tags, ts, value, data = row
    if doc is None:
        doc = {"data": None if data is None else orjson.loads(data)}
    parsed = doc.get("data")
    return sqlite_rollup.doc_buckets((session, kind, name, host, tags), ts, value, parsed)


def _session_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    session, host, agent, tags, first_seen, last_seen, connected, ended, exit_code, signal = row
    return {
        "session": session,
        "host": host,
        "agent": agent,
        "tags": orjson.loads(tags),
        "first_seen": first_seen,
        "last_seen": last_seen,
        "connected": bool(connected),
        "ended": ended,
        "exit_code": exit_code,
        "signal": signal,
    }


def _json_path(dotted: str) -> str:
    """``cpu.percent`` -> ``$."cpu"."percent"`` (``_key_path``)."""
    return _key_path(dotted.split("."))


def _key_path(keys: Sequence[str]) -> str:
    """``("cpu", "percent")`` -> ``$."cpu"."percent"``: every key quoted, so
    keys with dashes, spaces or other punctuation address what they say."""
    for key in keys:
        # SQLite's path syntax has no escape for '"' inside a quoted key.
        if not key or '"' in key:
            dotted = ".".join(keys)
            raise StoreError(f"bad path {dotted!r}: keys must be non-empty and without '\"'")
    return "$" + "".join(f'."{key}"' for key in keys)


def _tag_filter(tags: Sequence[str], clauses: list[str], params: list[Any]) -> None:
    """Every tag in ``tags`` must be an element of the document's tags array.

    instr() on the JSON text is a cheap prefilter that rejects most rows
    without parsing them; json_each then checks the exact element (the
    substring alone can be fooled by escaped quotes inside other tags).
    Measured on 200k documents: a page of 100 takes 0.1 ms for a tag on half
    the documents, 0.6 ms for one on 2%, and a full scan, 40 ms, for a tag
    nobody has (json_each alone: twice as slow). A doc_tags(tag, doc_id) side
    table answers the absent tag at once but took 38 ms for the common tag
    (the planner sorts its matches), and it cost ~25% of the ingest rate.
    """
    for tag in dict.fromkeys(tags):  # repeated tags would only repeat the work
        clauses.append(
            "instr(tags, ?) AND EXISTS (SELECT 1 FROM json_each(docs.tags) WHERE value = ?)"
        )
        params.append(orjson.dumps(tag).decode())
        params.append(tag)


def _range(
    column: str, lo: float | None, hi: float | None, clauses: list[str], params: list[Any]
) -> None:
    """``column >= lo AND column < hi``, for the bounds given."""
    if lo is not None:
        clauses.append(f"{column} >= ?")
        params.append(float(lo))
    if hi is not None:
        clauses.append(f"{column} < ?")
        params.append(float(hi))


def _filters(q: MetricQuery, *, no_samples: bool = False) -> tuple[list[str], list[Any]]:
    """WHERE terms and their parameters for the filters of ``q``.

    ``no_samples``: the caller knows no sample can match (the names catalog
    says so), which lets the partial indexes serve the query.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if q.session is not None:
        clauses.append("session = ?")
        params.append(q.session)
    if q.name is not None:
        clauses.append("name = ?")
        params.append(q.name)
    if q.kind is not None:
        clauses.append("kind = ?")
        params.append(q.kind)
    if no_samples or (q.kind is not None and q.kind != "sample"):
        # The literal term is what lets the planner prove the partial
        # indexes apply; a bound parameter would not.
        clauses.append("kind != 'sample'")
    if q.host is not None:
        clauses.append("host = ?")
        params.append(q.host)
    _range("ts", q.ts_from, q.ts_to, clauses, params)
    if q.tags:
        _tag_filter(q.tags, clauses, params)
    return clauses, params


#: What the rollup tiers (sqlite_rollup.py) build their queries with.
_ROLLUP_SQL: Final = sqlite_rollup.Sql(_filters, _json_path)


def _find_where(q: MetricQuery, *, no_samples: bool = False) -> tuple[list[str], list[Any]]:
    """``find``'s WHERE terms and parameters: the filters and the keyset cursor."""
    if q.limit < 1:
        raise StoreError(f"limit must be >= 1, got {q.limit}")
    clauses, params = _filters(q, no_samples=no_samples)
    if q.after is not None:
        after_ts, after_id = q.after
        rowid = _rowid(after_id)
        if rowid is None:
            raise StoreError(f"cursor id {after_id!r} is not a document id of this store")
        # A row value compares (ts, id) as one key, which the planner maps
        # onto the (..., ts) indexes: those end with the rowid implicitly.
        clauses.append("(ts, id) < (?, ?)" if q.descending else "(ts, id) > (?, ?)")
        params += [float(after_ts), rowid]
    return clauses, params


def _find_sql(
    q: MetricQuery, *, no_samples: bool = False, columns: str = _DOC_COLUMNS
) -> tuple[str, list[Any]]:
    """The SELECT of ``find``: filters, keyset cursor, (ts, id) order, limit."""
    clauses, params = _find_where(q, no_samples=no_samples)
    order = "ts DESC, id DESC" if q.descending else "ts, id"
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    params.append(q.limit)
    return f"SELECT {columns} FROM docs{where} ORDER BY {order} LIMIT ?", params


def _bounded_page(q: MetricQuery) -> tuple[str, list[Any]] | None:
    """``sqlite_page.bounded_page_sql`` for ``q`` and its parameters after
    ``dw_page``'s, where it applies: a page filtered on no more than ts,
    session and the cursor (docs_ts and docs_session_ts hold those, so
    finding the page's edge reads no document). None elsewhere.

    A descending page must be run on a reader that walks backwards
    (``_reader(reversed_scans=True)``): its rows then come newest first,
    down to the edge. ``dw_page`` checks they do (``order`` -1), so a plan
    that walked forwards anyway would make the page NULL, written in Python,
    never wrong. Newest-first pages (a dashboard's latest points) read so:
    ~80-115 µs for 100 documents on the bench's store, against 150-215 µs
    through the subquery (interleaved, 2026-12-01)."""
    if q.name is not None or q.kind is not None or q.host is not None or q.tags:
        return None
    clauses, params = _find_where(q)
    where = " AND ".join(clauses) if clauses else "1"
    order = "ts DESC, id DESC" if q.descending else "ts, id"
    edge = f"SELECT ts FROM docs WHERE {where} ORDER BY {order} LIMIT 1 OFFSET ?"
    sql = sqlite_page.bounded_page_sql(where, edge, descending=q.descending)
    return sql, [*params, *params, q.limit]


def _dw_page(
    conn: sqlite3.Connection,
    q: MetricQuery,
    paths: Sequence[tuple[str, ...]] | None,
    sql: str,
    params: list[Any],
) -> FoundPage | None:
    """A page query of ``dw_page`` (``sqlite_page.native_page_sql`` or
    ``bounded_page_sql``, its rows' parameters ``params``) run and read."""
    spec = None if paths is None else sqlite_page.path_spec(paths)
    order = -1 if q.descending else 1  # dw_page checks the rows come so
    (answer,) = conn.execute(sql, [q.limit, spec, order, *params]).fetchone()
    return sqlite_page.native_page(answer)


def _aggregate_sql(q: AggQuery, *, no_samples: bool = False) -> tuple[str, list[Any]]:
    """The SELECT of ``aggregate``: rows of (group, value, count)."""
    func = _AGG_FUNCS.get(q.func)
    if func is None:
        raise StoreError(f"unknown aggregate {q.func!r}; known: {sorted(_AGG_FUNCS)}")
    if q.group_by is not None and q.group_by not in _GROUP_COLUMNS:
        raise StoreError(f"cannot group by {q.group_by!r}; known: {sorted(_GROUP_COLUMNS)}")
    if q.limit < 1:
        raise StoreError(f"limit must be >= 1, got {q.limit}")
    clauses, params = _filters(q.where, no_samples=no_samples)
    if q.path is None:
        if q.func != "count":
            raise StoreError(f"{q.func} needs a path ('value' or a path into data)")
        value_sql = "1"
    elif q.path == "value":
        value_sql = "value"
        clauses.append("value IS NOT NULL")
    else:
        # Only numbers count: json_extract would turn true into 1, and
        # min/max would mix strings into the ordering.
        path = _json_path(q.path)
        value_sql = "json_extract(data, ?)"
        clauses.append("json_type(data, ?) IN ('integer', 'real')")
        params.append(path)
        params.insert(0, path)  # value_sql's placeholder comes first in the SQL
    group_sql = q.group_by or "NULL"  # validated against _GROUP_COLUMNS above
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    direction = "ASC" if q.ascending else "DESC"
    sql = (
        f"SELECT g, {func}(v), count(*) FROM"
        f" (SELECT {group_sql} AS g, {value_sql} AS v FROM docs{where})"
        f" GROUP BY g ORDER BY 2 {direction}, g LIMIT ?"
    )
    params.append(q.limit)
    return sql, params


def _number(value: Any, what: str) -> float | int:
    if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
        raise StoreError(f"{what} must be a finite number, got {value!r}")
    return value


def _tags_json(value: Any) -> str:
    if type(value) not in (list, tuple) or not all(type(t) is str for t in value):
        raise StoreError(f"tags must be a list of strings, got {value!r}")
    return _json_text(list(value), "tags")


def _api_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Column values for the API-writable fields present in ``fields``,
    validated by the one point model."""
    try:
        checked = check_fields(fields)
    except PointError as exc:
        raise StoreError(str(exc)) from None
    out: dict[str, Any] = dict(checked)
    if "tags" in checked:
        out["tags"] = _json_text(checked["tags"], "tags")
    if checked.get("data") is not None:
        out["data"] = _json_text(checked["data"], "data")
    return out


#: A docs row as INSERTed: session, seq, kind, name, host, tags (JSON text),
#: ts, data (JSON text or None).
Row = tuple[str, int, str, str, "str | None", str, float, "str | None"]
#: A session end: ts, exit_code, signal, session.
End = tuple[float, "int | None", "str | None", str]


#: Tag lists as JSON text, by tuple: tags come from the hello, so a collector
#: sees few distinct tuples; the bound keeps a stream of odd ones harmless.
_TAG_TEXT: dict[tuple[str, ...], str] = {}
_TAG_TEXT_MAX: Final = 10_000


def encode_row(
    session: str,
    seq: int,
    kind: str,
    name: str,
    ts: float,
    host: str | None,
    tags: tuple[str, ...],
    data: dict[str, Any] | None,
) -> Row:
    """One document as the row ``SqliteStore.write_rows`` commits.

    A ``DocumentFactory``: the collector's connections build each document
    directly as this row (plain strings and numbers), which crosses the pipe
    to the writer process as is, so the data is serialised once and never
    parsed again.
    """
    tags_text = _TAG_TEXT.get(tags)
    if tags_text is None:
        tags_text = _json_text(list(tags), "tags")
        if len(_TAG_TEXT) < _TAG_TEXT_MAX:
            _TAG_TEXT[tags] = tags_text
    if data is None:
        return (session, seq, kind, name, host, tags_text, ts, None)
    try:
        data_text = orjson.dumps(data).decode()
    except orjson.JSONEncodeError as exc:  # e.g. nested deeper than orjson writes
        raise BadFrame(f"data cannot be stored as JSON: {exc}", seq=seq) from None
    return (session, seq, kind, name, host, tags_text, ts, data_text)


def encode_rows(docs: Sequence[Document]) -> list[Row]:
    """``encode_row`` for each of ``docs``."""
    try:
        return [
            encode_row(d.session, d.seq, d.kind, d.name, d.ts, d.host, d.tags, d.data) for d in docs
        ]
    except BadFrame as exc:
        raise StoreError(exc.msg) from None


def _stored(conn: sqlite3.Connection, row: Row, batch: list[Row]) -> bool:
    """Whether ``row``, at or below its session's mark, is stored already
    (or about to be, earlier in ``batch``, given only when it holds rows of
    the session): then it is a resend."""
    session, seq = row[0], row[1]
    if any(r[1] == seq and r[0] == session for r in batch):
        return True
    return conn.execute(_STORED, (session, row[6], seq)).fetchone() is not None


def _end(row: Row) -> End:
    """The ``_END_SESSION`` parameters of a bye's row.

    Derived where rows are committed: byes are one per session, so parsing
    their data back costs nothing, and rows stay all that crosses the pipe.
    """
    session, _seq, _kind, _name, _host, _tags, ts, data_text = row
    data = orjson.loads(data_text) if data_text is not None else None
    exit_code = data.get("exit_code") if type(data) is dict else None
    signal = data.get("signal") if type(data) is dict else None
    return (
        ts,
        exit_code if type(exit_code) is int else None,
        signal if type(signal) is str else None,
        session,
    )


class SqliteStore:
    """The Store protocol on one SQLite file (see the module docstring)."""

    reads_use_cpu = True  # a read is SQLite's work on this process's cores

    def __init__(self, uri: str, rollup_retention_days: Sequence[float] = (30, 400)) -> None:
        self.uri = uri
        self.path, self.synchronous, self._busy_timeout_s, self.fold, self._native = _parse_uri(uri)
        # Every write transaction holds the file lock too (sqlite_lock.py):
        # the ingest writer child, the API and the folder take turns fairly.
        self._wlock = WriteLock(self.path)
        self._write_lock = self._wlock.local
        self._pool_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        # Idle readers by whether they walk unordered scans backwards
        # (``_connect``'s ``reversed_scans``: descending pages).
        self._idle_readers: dict[bool, list[sqlite3.Connection]] = {False: [], True: []}
        self._all_readers: list[sqlite3.Connection] = []
        # (name, kind) pairs committed to the names table; only touched under
        # the write lock.
        self._known_names: set[tuple[str, str]] = set()
        self._path_sessions = StreamTracker()  # under the write lock too
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._series_ids = sqlite_rollup.SeriesIds()
        self._folder = sqlite_rollup.Folder()
        self._checkpointed = self._pruned = time.monotonic()
        # The writer connection commits without fsync for ``_sync_log``.
        self._log_unsynced = False
        self._edit_journal_in_memory = False  # see _transaction's ``edits``
        self._folder_proc: subprocess.Popen[bytes] | None = None
        #: Entered around every write transaction, the wait for the write lock
        #: included, and the folder's plain reads: the folder process
        #: (sqlite_folder.py) computes at idle CPU priority and leaves it
        #: here, so that it never holds the lock other writers wait for, nor
        #: a read snapshot (which keeps the log from starting over), while
        #: the scheduler keeps it off the CPU.
        self.lock_priority: Callable[[], AbstractContextManager[object]] = nullcontext
        #: Seconds each tier keeps its buckets (0: forever), from days per tier
        #: finest first (ROLLUP_1M_RETENTION_DAYS, ROLLUP_1H_RETENTION_DAYS).
        self.rollup_retention: dict[int, float] = {
            tier: float(days) * 86400
            for tier, days in zip(sorted(TIERS), rollup_retention_days, strict=True)
        }

    def __repr__(self) -> str:
        return f"SqliteStore({self.uri!r})"

    # -- connections ----------------------------------------------------------

    def _connect(
        self, *, writer: bool, mapped: bool = True, reversed_scans: bool = False
    ) -> sqlite3.Connection:
        """A connection to the database: the writer, or a reader (``mapped``:
        reading the file through mmap; ``reversed_scans``: walking the
        index of a query without ORDER BY backwards, for a descending
        page, see ``_bounded_page``). The pragma is the connection's for
        good: setting it expires every statement the connection prepared,
        so a reader that walks one way never switches."""
        # isolation_level=None: autocommit, transactions only where this class
        # opens them with BEGIN IMMEDIATE (the sqlite3 module's implicit
        # BEGIN would take the write lock late, inside executemany).
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,  # pooled: used by whichever worker thread holds it
        )
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if writer:
                conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
                # Every writing process's own automatic checkpoint only as the
                # backstop: it copies the log into the database inside the
                # commit, under the write lock every writer waits for. At
                # SQLite's 1,000 pages the edit writers and the folder did it
                # every 16 MB of log: a rollup step held the lock 1.77 s once
                # (ingest and every API write waited it out) and edit groups
                # ~50 ms now and then. The collector's background checkpointer
                # (start_checkpointer) copies the log without the write lock.
                conn.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_CHECKPOINT_PAGES}")
            else:
                conn.execute(f"PRAGMA cache_size = -{_READER_CACHE_KIB}")
                if mapped:
                    conn.execute(f"PRAGMA mmap_size = {_READER_MMAP_BYTES}")
                conn.execute("PRAGMA query_only = ON")
                if reversed_scans:
                    conn.execute("PRAGMA reverse_unordered_selects = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return self._writer

    @contextmanager
    def _transaction(
        self, action: str, *, sync_after: bool = False, edits: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """The writer connection inside BEGIN IMMEDIATE ... COMMIT.

        IMMEDIATE takes the write lock up front, so a lock held elsewhere
        fails here, within busy_timeout, before any work is done.

        ``sync_after``: the commit does not fsync the log inside the write
        lock; the caller calls ``_sync_log`` once the lock is let go, before
        it says the transaction is stored (the same durability, see there).

        ``edits``: the API's group commit (``apply_edits``), whose SAVEPOINT's
        sub-journal (the first image of each page it changes) is then kept
        in memory from here on, not in a temporary file: ~8 µs less CPU per
        API update (a 16 KiB write per page otherwise), and it holds the
        pages of one group (~30). Only on a connection that commits API
        edits (the edit writer's): the folder and the ingest writer keep
        their sorts and temporary files on disk, where a big one belongs.
        """
        with (
            self.lock_priority(),
            _slow_write_logged(action) as timing,
            self._write_lock,
            self._wlock.across_processes(),
            _translated(action),
        ):
            timing.locked = time.monotonic()
            conn = self._writer_conn()
            if edits and not self._edit_journal_in_memory:
                conn.execute("PRAGMA temp_store = MEMORY")  # outside a transaction only
                self._edit_journal_in_memory = True
            if sync_after and self.synchronous != "NORMAL":
                conn.execute("PRAGMA synchronous = NORMAL")
                self._log_unsynced = True
            elif self._log_unsynced:
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                self._log_unsynced = False
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                timing.committing = time.monotonic()
                conn.execute("COMMIT")
            except BaseException:
                # Some errors (disk full, I/O) already rolled SQLite back.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._series_ids.rolled_back()
                raise
            self._series_ids.committed()

    def _sync_log(self) -> None:
        """fsync the write-ahead log: what a commit with synchronous FULL
        does inside the write lock, done after it (``_transaction``'s
        ``sync_after``). The committed frames are in the log file already
        (written, not yet synced); once synced they survive a power loss as
        with FULL. Should a checkpoint have copied them into the database
        and the log started over meanwhile, the checkpoint synced the
        database first. The API's edits commit this way: ~70% of their write
        transaction was that fsync (3-8 ms here), during which the ingest
        writer, the folder and the next group of edits all waited for the
        lock. No-op with synchronous NORMAL (nothing is synced then)."""
        if self.synchronous == "NORMAL":
            return
        try:
            fd = os.open(self.path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # checkpointed and removed (the last connection closed): in the database
        except OSError as exc:
            raise StoreUnavailable(f"cannot open {self.path}-wal to sync it: {exc}") from exc
        started = time.monotonic()
        try:
            os.fsync(fd)
        except OSError as exc:
            raise StoreUnavailable(f"cannot sync {self.path}-wal: {exc}") from exc
        finally:
            os.close(fd)
            took = time.monotonic() - started
            if took > SLOW_WRITE_S:
                log.warning("slow fsync of the write-ahead log", extra={"ms": round(took * 1e3)})

    @contextmanager
    def _reader(self, action: str, *, reversed_scans: bool = False) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._writer is None:
                raise StoreUnavailable(f"{self!r} is not open")
            idle = self._idle_readers[reversed_scans]
            conn = idle.pop() if idle else None
        with _translated(action):
            if conn is None:
                conn = self._connect(writer=False, reversed_scans=reversed_scans)
                with self._pool_lock:
                    if self._writer is None:  # closed while we were connecting
                        conn.close()
                        raise StoreUnavailable(f"{self!r} is not open")
                    self._all_readers.append(conn)
            try:
                yield conn
            finally:
                with self._pool_lock:
                    if self._writer is not None:
                        self._idle_readers[reversed_scans].append(conn)

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                return
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot create the directory of {self.path}: {exc}"
                ) from exc
            # Before any connection of this store: they all get dw_page then.
            if self._native:
                self._native = sqlite_native.install()
            with _translated("open"):
                try:
                    self._wlock.open()
                except OSError as exc:
                    raise StoreUnavailable(f"cannot open {self._wlock.path}: {exc}") from exc
                conn = self._connect(writer=True)
                try:
                    # Only takes effect while the file is empty, so before WAL
                    # mode (which writes the header) and before any table.
                    conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
                    # Persistent in the file; readers then never block the writer.
                    conn.execute("PRAGMA journal_mode = WAL")
                    with self._wlock.across_processes():
                        self._migrate(conn)
                except BaseException:
                    conn.close()
                    raise
            self._writer = conn
            self._edit_journal_in_memory = False

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # Usually the schema is current: check without the write lock, which a
        # busy collector takes again at once after every commit; another
        # process opening the file would otherwise often give up after
        # busy_timeout. The check is repeated under the lock below.
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {version} is newer than this collector's"
                    f" ({SCHEMA_VERSION}): upgrade the collector"
                )
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
            # PRAGMA takes no parameters; SCHEMA_VERSION is our own int.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def start_checkpointer(self, period: float = _CHECKPOINT_PERIOD_S) -> None:
        """Checkpoint the WAL from a thread of its own, off the commit path.

        A connection that commits may also checkpoint, SQLite's default
        every ~1000 pages: it then copies megabytes into the database file
        and fsyncs it before the commit returns, a stall of tens of
        milliseconds that every queued batch (and so the ack latency) waits
        out. A PASSIVE checkpoint on another connection runs beside the
        writers instead of blocking them. Every writer connection's own
        automatic checkpoint (this process's or another's: the API's edit
        writers, the folder) stays as a backstop at a much larger WAL
        (``_connect``). For the process that does the bulk of the writing
        (the collector's store writer). Also starts the rollup folder
        process (unless the URI says ``fold=off``); ``close`` stops it.
        """
        if self.fold and self._folder_proc is None:
            self._folder_proc = _start_folder(self.uri)
        with self._write_lock:
            self._writer_conn()  # open, or StoreUnavailable
            if self._checkpointer is not None:
                return
            self._stop_checkpoints.clear()
            thread = threading.Thread(
                target=self._checkpoints, args=(period,), name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer = thread
        thread.start()

    def _checkpoints(self, period: float) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop_checkpoints.wait(period):
                try:
                    if conn is None:
                        conn = self._connect(writer=False, mapped=False)
                        conn.execute("PRAGMA query_only = OFF")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    # Busy or locked now: the next round (or the backstop) does it.
                    log.debug("background checkpoint skipped", extra={"error": repr(exc)})
        finally:
            if conn is not None:
                conn.close()

    def close(self) -> None:
        proc, self._folder_proc = self._folder_proc, None
        if proc is not None:
            _stop_folder(proc)
        thread, self._checkpointer = self._checkpointer, None
        if thread is not None:
            self._stop_checkpoints.set()
            thread.join()
        with self._write_lock, self._pool_lock:
            writer, self._writer = self._writer, None
            readers, self._all_readers = self._all_readers, []
            self._idle_readers = {False: [], True: []}
            self._wlock.close()
        for conn in readers:
            conn.close()
        if writer is not None:
            writer.close()

    def ping(self) -> bool:
        try:
            with self._reader("ping") as conn:
                conn.execute("SELECT 1").fetchone()
        except StoreError:
            return False
        return True

    def schema_version(self) -> int:
        """``PRAGMA user_version`` of the open database."""
        with self._reader("schema_version") as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        return int(version)

    # -- ingest ---------------------------------------------------------------

    encode_row = staticmethod(encode_row)

    def write_batch(self, docs: Sequence[Document]) -> None:
        if docs:
            self.write_rows(encode_rows(docs))

    def write_rows(self, rows: Sequence[Row]) -> None:
        """Commit rows made by ``encode_row`` (possibly in another process).

        Idempotent on (session, seq) like ``write_batch``: a row whose seq is
        not above its session's highest stored seq is a resend and is skipped
        (frames are stored in order, see the module docstring). Touches the
        sessions' ``last_seen`` and ``acked`` and records the ends (byes) in
        the same transaction.
        """
        if not rows:
            return
        marks_arg = _json_text(list({row[0] for row in rows}), "session names")
        with self._transaction("write_batch") as conn:
            # Read inside the transaction: no other writer can move a mark
            # between this read and the inserts.
            marks: dict[str, int] = dict(conn.execute(_MARKS, (marks_arg,)).fetchall())
            # session -> [min ts, max ts, host, tags, high-water seq] of the
            # rows kept, for the sessions table
            seen: dict[str, list[Any]] = {}
            names: set[tuple[str, str]] = set()
            fresh: list[Row] = []
            ends: list[End] = []
            for row in rows:
                session, seq, kind, name, host, tags, ts, _data = row
                if kind == "session":
                    ends.append(_end(row))
                entry = seen.get(session)
                # A batch may hold a resend too: a client that reconnected
                # sends again what the old connection had in flight.
                high = marks.get(session, -1) if entry is None else entry[4]
                if seq <= high and _stored(conn, row, fresh if entry is not None else []):
                    continue
                if entry is None:
                    seen[session] = [ts, ts, host, tags, max(seq, high)]
                else:
                    if seq > entry[4]:
                        entry[4] = seq
                    if ts < entry[0]:
                        entry[0] = ts
                    if ts > entry[1]:
                        entry[1] = ts
                names.add((name, kind))
                fresh.append(row)
            new_names = self._record_names(conn, names)
            path_sessions = self._record_paths(conn, fresh, seen.keys(), new_names)
            if fresh:
                with _hold_ids(conn):
                    conn.executemany(_INSERT_DOC, fresh)
                conn.executemany(
                    _TOUCH_SESSION, [(s, e[2], e[3], e[0], e[1], e[4]) for s, e in seen.items()]
                )
            # Also when the bye itself was a resend: setting the same end
            # again changes nothing.
            if ends:
                conn.executemany(_END_SESSION, ends)
        self._names_committed(new_names)
        with self._write_lock:
            self._path_sessions.remember(path_sessions)

    def _record_paths(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[Row],
        sessions: Iterable[str],
        new_names: set[tuple[str, str]],
    ) -> set[str]:
        """Add the data paths of new sessions' and new streams' first samples
        to the catalog, in the open transaction; returns the sessions to
        remember once it commits."""
        new_sessions = self._path_sessions.unseen(sessions)
        new_streams = {name for name, kind in new_names if kind in ("sample", "event")}
        if new_sessions or new_streams:
            pairs = first_sample_paths(
                ((r[0], r[2], r[3], r[7]) for r in rows), new_sessions, new_streams
            )
            conn.executemany("INSERT OR IGNORE INTO paths (name, path) VALUES (?, ?)", pairs)
        return new_sessions

    def _record_names(
        self, conn: sqlite3.Connection, names: set[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Add (name, kind) pairs to the catalog in the open transaction.

        Returns the pairs to remember once the transaction commits (not
        before: a rolled-back pair must be written again next time).
        """
        new = names - self._known_names
        if new:
            conn.executemany(_INSERT_NAME, new)
        return new

    def _names_committed(self, new: set[tuple[str, str]]) -> None:
        with self._write_lock:
            if len(self._known_names) + len(new) > _KNOWN_NAMES_MAX:
                self._known_names.clear()
            self._known_names |= new

    def _no_samples(self, conn: sqlite3.Connection, q: MetricQuery) -> bool:
        """True when ``q`` filters on a name that has never been a sample's."""
        if q.name is None or q.kind is not None:
            return False
        row = conn.execute(
            "SELECT 1 FROM names WHERE name = ? AND kind = 'sample'", (q.name,)
        ).fetchone()
        return row is None

    def acked(self, session: str) -> int:
        with self._reader("acked") as conn:
            if session == API_SESSION:
                (seq,) = conn.execute(_API_TOP, (session,)).fetchone()
                return int(seq)
            row = conn.execute(
                "SELECT acked FROM sessions WHERE session = ?", (session,)
            ).fetchone()
        return -1 if row is None else int(row[0])

    def session_connected(self, hello: Hello, ts: float) -> None:
        # A reconnect does not clear ``ended``: a client whose ack for its bye
        # was lost reconnects to learn it was stored, and that must not
        # reopen a finished session.
        with self._transaction("session_connected") as conn:
            conn.execute(
                "INSERT INTO sessions (session, host, agent, tags, first_seen, last_seen, connected)"
                " VALUES (?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (session) DO UPDATE SET host = excluded.host,"
                " agent = excluded.agent, tags = excluded.tags,"
                " last_seen = max(last_seen, excluded.last_seen), connected = 1",
                (
                    hello.session,
                    hello.host,
                    hello.agent,
                    _json_text(list(hello.tags), "tags"),
                    ts,
                    ts,
                ),
            )

    def session_disconnected(self, session: str, ts: float) -> None:
        with self._transaction("session_disconnected") as conn:
            conn.execute(
                "UPDATE sessions SET connected = 0, last_seen = max(last_seen, ?)"
                " WHERE session = ?",
                (ts, session),
            )

    # -- API ------------------------------------------------------------------

    def find(self, q: MetricQuery) -> list[dict[str, Any]]:
        with self._reader("find") as conn, _snapshot(conn):
            sql, params = _find_sql(q, no_samples=self._no_samples(conn, q))
            rows = conn.execute(sql, params).fetchall()
        return [_doc_dict(row) for row in rows]

    def find_page(
        self, q: MetricQuery, paths: Sequence[tuple[str, ...]] | None = None
    ) -> FoundPage | None:
        try:
            data = "data" if paths is None else sqlite_page.selected(paths, _key_path)
        except StoreError:  # a key no JSON path names: doc_out selects it
            return None
        if data is None:
            return None
        bounded = _bounded_page(q) if self._native else None
        # A descending bounded page is read by a reader that walks backwards.
        with self._reader("find", reversed_scans=bounded is not None and q.descending) as conn:
            if bounded is not None:  # no subquery to build
                return _dw_page(conn, q, paths, *bounded)
            no_samples = self._no_samples(conn, q)
            find_sql, params = _find_sql(q, no_samples=no_samples)
            if self._native:
                params[-1] = q.limit + 1  # the row past the page: is there more?
                return _dw_page(conn, q, paths, sqlite_page.native_page_sql(find_sql), params)
            edge_sql, edge_params = _find_sql(q, no_samples=no_samples, columns="ts, id")
            edge_params[-1:] = [2, q.limit - 1]  # LIMIT 2 OFFSET limit - 1
            sql = sqlite_page.page_sql(edge_sql + " OFFSET ?", find_sql, data)
            items, count, odd, last_ts, last_id, beyond = conn.execute(
                sql, [*edge_params, *params]
            ).fetchone()
        if odd:
            return None
        if beyond is None:  # no more
            return FoundPage(items or b"", count, None, None)
        return FoundPage(items, count, (last_ts, str(last_id)), beyond)

    def get(self, doc_id: str) -> dict[str, Any] | None:
        rowid = _rowid(doc_id)
        if rowid is None:
            return None
        with self._reader("get") as conn:
            row = conn.execute(f"SELECT {_DOC_COLUMNS} FROM docs WHERE id = ?", (rowid,)).fetchone()
        return None if row is None else _doc_dict(row)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        with self._transaction("create") as conn:
            return self._create_in(conn, doc)

    def replace(self, doc_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set the given fields (any of name, value, tags, ts, data); others stay."""
        rowid = _rowid(doc_id)
        if rowid is None:
            return None
        with self._transaction("replace") as conn:
            touches: list[sqlite_rollup.Touch] = []
            doc = self._replace_in(conn, rowid, fields, touches)
            self._touched(conn, touches)
            return doc

    def delete(self, doc_id: str) -> bool:
        rowid = _rowid(doc_id)
        if rowid is None:
            return False
        with self._transaction("delete") as conn:
            touches: list[sqlite_rollup.Touch] = []
            deleted = self._delete_in(conn, rowid, touches)
            self._touched(conn, touches)
            return deleted

    def apply_edits(self, edits: Sequence[Edit]) -> list[EditResult]:
        """Every edit in ONE write transaction (one lock turn, one fsync: the
        API's group commit), each inside a SAVEPOINT so that one refused
        edit is rolled back alone. A run of creates goes in at once
        (``_creates_in``: one savepoint, executemany). The rollup buckets
        the edits touch are marked dirty (read raw until the folder rebuilds
        them). So does a run of PUT/PATCH/DELETEs (``_changes_in``)."""
        results: list[EditResult] = []
        touches: list[sqlite_rollup.Touch] = []
        with self._transaction("apply_edits", sync_after=True, edits=True) as conn:
            i = 0
            while i < len(edits):
                kind, end = type(edits[i]), i + 1
                while end < len(edits) and type(edits[end]) is kind:
                    end += 1
                mine: list[sqlite_rollup.Touch] = []
                if end - i > 1 and kind in (Create, Change):
                    run: Callable[[], list[EditResult]] = (
                        functools.partial(
                            self._creates_in, conn, cast("list[Create]", edits[i:end])
                        )
                        if kind is Create
                        else functools.partial(
                            self._changes_in, conn, cast("list[Change]", edits[i:end]), mine
                        )
                    )
                    done = self._saved(conn, run)
                    if not isinstance(done, StoreError):
                        results += done
                        touches += mine
                        i = end
                        continue
                    # The run failed as a whole (not one bad field): one at a time.
                for edit in edits[i:end]:
                    mine = []
                    one = self._saved(conn, functools.partial(self._edit_in, conn, edit, mine))
                    results.append(one)
                    if not isinstance(one, StoreError):
                        touches += mine
                i = end
            self._touched(conn, touches)
        self._sync_log()  # outside the write lock: see there
        return results

    def _saved(self, conn: sqlite3.Connection, work: Callable[[], _T]) -> _T | StoreError:
        """``work()`` inside a SAVEPOINT: its StoreError rolls back its own
        changes alone and is its result (a StoreUnavailable, disk or lock
        trouble, ends the whole transaction)."""
        conn.execute("SAVEPOINT edit")
        try:
            with _translated("edit"):
                out: _T | StoreError = work()
        except StoreUnavailable:
            raise
        except StoreError as e:
            if not conn.in_transaction:  # SQLite ended it: nothing stands
                raise
            conn.execute("ROLLBACK TO edit")
            # Series ids that edit created are gone again; forgetting
            # the others only costs a lookup.
            self._series_ids.rolled_back()
            out = e
        conn.execute("RELEASE edit")
        return out

    def _creates_in(self, conn: sqlite3.Connection, creates: Sequence[Create]) -> list[EditResult]:
        """A run of API creates with one seq lookup, one id hold and one
        executemany (the group commit's POSTs: ~7 statements each one at a
        time). A create with a bad field is refused alone, as ``_create_in``
        would; each gets the same id and seq it would get there."""
        results: list[EditResult] = []
        good: list[tuple[int, dict[str, Any]]] = []
        for create in creates:
            try:
                fields = _api_fields(create.fields)
                if "name" not in fields:
                    raise StoreError("a metric point needs a name")
            except StoreError as e:
                results.append(e)
                continue
            good.append((len(results), fields))
            results.append(None)
        if not good:
            return results
        # max + 1 inside the write transaction: no other writer can take
        # the same seq, and docs_api_seq keeps API points unique.
        (top,) = conn.execute(_API_TOP, (API_SESSION,)).fetchone()
        now = time.time()
        conn.executemany(_INSERT_NAME, [(f["name"], "metric") for _, f in good])
        with _hold_ids(conn):
            conn.executemany(
                "INSERT INTO docs (session, seq, kind, name, host, tags, ts, value, data)"
                " VALUES (?, ?, 'metric', ?, ?, ?, ?, ?, ?)",
                [
                    (API_SESSION, top + 1 + n, f["name"], f.get("host"), f.get("tags", "[]"),
                     now if f.get("ts") is None else f["ts"], f.get("value"), f.get("data"))
                    for n, (_, f) in enumerate(good)
                ],
            )  # fmt: skip
        rows = conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM docs WHERE session = ? AND kind = 'metric'"
            " AND seq > ? AND seq <= ? ORDER BY seq",
            (API_SESSION, top, top + len(good)),
        ).fetchall()
        for (at, _), row in zip(good, rows, strict=True):
            results[at] = _doc_dict(row)
        return results

    def _edit_in(
        self, conn: sqlite3.Connection, edit: Edit, touches: list[sqlite_rollup.Touch]
    ) -> EditResult:
        if isinstance(edit, Create):
            return self._create_in(conn, edit.fields)
        rowid = _rowid(edit.doc_id)
        if isinstance(edit, Replace):
            return None if rowid is None else self._replace_in(conn, rowid, edit.fields, touches)
        if isinstance(edit, Change):
            return None if rowid is None else self._change_in(conn, rowid, edit, touches)
        return False if rowid is None else self._delete_in(conn, rowid, touches)

    def _change_in(
        self,
        conn: sqlite3.Connection,
        rowid: int,
        edit: Change,
        touches: list[sqlite_rollup.Touch],
    ) -> Changed | None:
        row = conn.execute(f"SELECT {_DOC_COLUMNS} FROM docs WHERE id = ?", (rowid,)).fetchone()
        if row is None:
            return None
        old = _doc_dict(row)
        before = _buckets_of(row, old)  # before decide, which may change ``old``
        fields = edit.decide(old)  # Refused: this edit's result (apply_edits)
        if fields is None:
            return (
                Changed(old, None) if self._delete_in(conn, rowid, touches, row, before) else None
            )
        _, new = self._update_in(conn, rowid, _api_fields(fields), row, touches, before)
        return Changed(old, new)

    def _create_in(self, conn: sqlite3.Connection, doc: dict[str, Any]) -> dict[str, Any]:
        (result,) = self._creates_in(conn, [Create(doc)])
        if isinstance(result, StoreError):
            raise result
        assert isinstance(result, dict)
        return result

    def _replace_in(
        self,
        conn: sqlite3.Connection,
        rowid: int,
        fields: dict[str, Any],
        touches: list[sqlite_rollup.Touch],
    ) -> dict[str, Any] | None:
        values = _api_fields(fields)
        old = conn.execute(f"SELECT {_DOC_COLUMNS} FROM docs WHERE id = ?", (rowid,)).fetchone()
        if old is None:
            return None
        return self._update_in(conn, rowid, values, old, touches)[1]

    def _update_in(
        self,
        conn: sqlite3.Connection,
        rowid: int,
        values: dict[str, Any],
        old: tuple[Any, ...],
        touches: list[sqlite_rollup.Touch],
        before: sqlite_rollup.DocBuckets | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Set ``values`` (``_api_fields``) on the document whose row ``old``
        this transaction read (``before``: its buckets, if known): its
        new row and document. One write statement (atomic alone) but for the
        names catalog's INSERT OR IGNORE.

        Only the columns whose values change are SET: SQLite rewrites the
        entries of every index on a column SET, equal or not, and a PUT
        sends the whole document back (its name and ts, in four of the five
        indexes, as they were): ~40% of a PUT's store time went there.

        The new row is built here, not read back (RETURNING cost ~7 µs a
        row, a fifth of the UPDATE): the old row with the values SQLite
        stores, an integer as a REAL in a REAL column (``_REAL_COLUMNS``)."""
        changed: dict[str, Any] = {}
        for column, value in values.items():
            if type(value) is int and column in _REAL_COLUMNS:
                value = float(value)  # as SQLite stores it
            was = old[_COLUMN_AT[column]]
            if not (type(value) is type(was) and value == was):
                changed[column] = value
        if not changed:
            return old, _doc_dict(old)
        # Column names come from the point model's fields only, never from the caller.
        sets = ", ".join(f"{column} = ?" for column in changed)
        cur = conn.execute(f"UPDATE docs SET {sets} WHERE id = ?", [*changed.values(), rowid])
        if cur.rowcount != 1:  # read in this transaction: a bug, never the caller's
            raise StoreError(f"document {rowid} changed under its edit")
        row = list(old)
        for column, value in changed.items():
            row[_COLUMN_AT[column]] = value
        new = tuple(row)
        if new[4] != old[4]:  # keep the names catalog complete (the old name is in it)
            conn.execute(_INSERT_NAME, (new[4], new[3]))
        # The tiers follow: the old buckets lose it, the new ones gain it.
        doc = _doc_dict(new)
        if before is None:
            before = _buckets_of(old)
        touches.append(sqlite_rollup.Touch(rowid, before, _buckets_of(new, doc)))
        return new, doc

    def _changes_in(
        self,
        conn: sqlite3.Connection,
        changes: Sequence[Change],
        touches: list[sqlite_rollup.Touch],
    ) -> list[EditResult]:
        """A run of ``Change`` edits (the group commit's PUT/PATCH/DELETEs)
        with ONE read of the documents they name and no savepoint each: one
        at a time, an edit was ~5 statements (savepoint, read, write, floor,
        release), most of its store time. A refusal (``decide``'s, or a bad
        field) comes before its edit writes anything, and each edit is then
        one write statement, atomic alone; the caller's savepoint covers the
        run, and any other error redoes it one edit at a time. Edits of the
        same document see each other, in order, as they would one at a time."""
        rowids = [_rowid(c.doc_id) for c in changes]
        wanted = list({r for r in rowids if r is not None})
        rows: dict[int, tuple[Any, ...] | None] = {}
        if wanted:
            marks = ", ".join("?" * len(wanted))  # at most MAX_BATCH: well under SQLite's limit
            found = conn.execute(f"SELECT {_DOC_COLUMNS} FROM docs WHERE id IN ({marks})", wanted)
            rows.update((row[0], row) for row in found)
        results: list[EditResult] = []
        floor = 0  # the highest id deleted: only it matters to id_floor (_RECORD_FLOOR)
        for change, rowid in zip(changes, rowids, strict=True):
            row = None if rowid is None else rows.get(rowid)
            if rowid is None or row is None:
                results.append(None)
                continue
            old = _doc_dict(row)
            before = _buckets_of(row, old)  # before decide, which may change ``old``
            try:
                fields = change.decide(old)
                values = None if fields is None else _api_fields(fields)
            except StoreError as e:  # Refused, or a bad field: this edit's alone
                results.append(e)
                continue
            if values is None:
                conn.execute("DELETE FROM docs WHERE id = ?", (rowid,))
                touches.append(sqlite_rollup.Touch(rowid, before, []))
                rows[rowid], floor = None, max(floor, rowid)
                results.append(Changed(old, None))
            else:
                rows[rowid], new = self._update_in(conn, rowid, values, row, touches, before)
                results.append(Changed(old, new))
        if floor:
            conn.execute(_RECORD_FLOOR, (floor,))
        return results

    def _delete_in(
        self,
        conn: sqlite3.Connection,
        rowid: int,
        touches: list[sqlite_rollup.Touch],
        row: tuple[Any, ...] | None = None,
        before: sqlite_rollup.DocBuckets | None = None,
    ) -> bool:
        """``row``: the document as read in this transaction already, if it
        was (``before``: its buckets, if known)."""
        if row is None:
            row = conn.execute(f"SELECT {_DOC_COLUMNS} FROM docs WHERE id = ?", (rowid,)).fetchone()
        if before is None:
            before = [] if row is None else _buckets_of(row)
        deleted = conn.execute("DELETE FROM docs WHERE id = ?", (rowid,)).rowcount > 0
        touches.append(sqlite_rollup.Touch(rowid, before, []))
        if deleted:
            conn.execute(_RECORD_FLOOR, (rowid,))
        return deleted

    def _touched(self, conn: sqlite3.Connection, touches: list[sqlite_rollup.Touch]) -> None:
        sqlite_rollup.mark_dirty(conn, touches)

    def aggregate(self, q: AggQuery) -> list[dict[str, Any]]:
        with self._reader("aggregate") as conn, _snapshot(conn):
            sql, params = _aggregate_sql(q, no_samples=self._no_samples(conn, q.where))
            rows = conn.execute(sql, params).fetchall()
        return [{"group": g, "value": value, "count": n} for g, value, n in rows]

    # -- rollup tiers ----------------------------------------------------------

    rollup_tiers: tuple[int, ...] = sqlite_rollup.KEPT_TIERS
    rollup_sketch_tiers: tuple[int, ...] = sqlite_rollup.SKETCH_TIERS

    def rollup_read(self, req: RollupRequest) -> RollupData:
        with self._reader("rollup_read") as conn, _snapshot(conn):
            return sqlite_rollup.read(conn, _ROLLUP_SQL, req)

    def fold_rollups(self, max_docs: int = 1_000_000) -> int:
        """Fold up to ``max_docs`` documents into the tiers now, checkpointed;
        how many were absorbed (tests and benches: a collector's folder
        process folds as documents arrive). 0 if another folder is at work."""
        with self._fold_lock() as mine:
            if not mine:
                return 0
            n = 0
            while True:
                got = self._absorb(min(_FOLD_SLICE, max_docs - n))
                n += got
                if self._folder.full:  # a half-done checkpoint, resumed
                    self._checkpoint()
                elif got == 0 or n >= max_docs:
                    break
            self._checkpoint()
            while self._repair():
                pass
            while self._build_hours(math.inf):  # every hour, over or not
                pass
        return n

    def fold_idle(self) -> bool:
        return False  # the folder process folds (``start_checkpointer``)

    def fold_forever(self, stop: Callable[[float], bool]) -> None:
        """The folder process's loop (sqlite_folder.py): fold documents as
        they arrive, until ``stop(timeout)``, which waits up to ``timeout``
        seconds, says to. Waits while another folder holds the file's lock."""
        conn = self._writer_conn()
        # The tiers are derived data, written with the watermark that says
        # what they hold: a commit lost to a power cut loses both (WAL keeps
        # the order), so the folder's commits need no fsync of their own,
        # which would hold the write lock for the fsync's length.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Every commit of another connection (the ingest writer's, every few
        # ms) empties this connection's page cache: a large one buys nothing.
        conn.execute(f"PRAGMA cache_size = -{_READER_CACHE_KIB}")
        # The writer's background checkpointer copies the log (start_checkpointer).
        conn.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_CHECKPOINT_PAGES}")
        while True:
            with self._fold_lock() as mine:
                if mine:
                    self._fold_until(stop)
                    return
            if stop(1.0):
                return

    def _fold_until(self, stop: Callable[[float], bool]) -> None:
        folder = self._folder
        while True:
            n = 0
            try:
                if not folder.docs and folder.limit is None:  # nothing absorbed: repair
                    self._repair() or self._build_hours(time.time())
                n = self._absorb(_FOLD_SLICE)
                # By age only when caught up (a short slice): behind the
                # writer, the tail is long whatever the age, while each
                # checkpoint takes the write lock ~150 times (100 streams of
                # ~20 leaves), a cost per series, not per document: every 2 s
                # it held up saturated ingest.
                if folder.full or (
                    folder.docs
                    and (
                        folder.docs >= _CHECKPOINT_DOCS
                        or (
                            n < _FOLD_SLICE
                            and time.monotonic() - self._checkpointed >= _CHECKPOINT_S
                        )
                    )
                ):
                    self._checkpoint(stop=lambda: stop(0))
            except StoreError as exc:
                # Memory is dropped; the raw rows are folded again.
                log.warning("rollup fold failed; retrying", extra={"error": str(exc)})
                n = 0
            # Asked after every slice, not only when caught up: a collector
            # that exits with a backlog must not leave its folder running
            # for minutes (the next checkpoint resumes where this one left).
            if stop(_FOLD_POLL_S if n < _FOLD_SLICE else 0):
                return

    @contextmanager
    def _fold_lock(self) -> Iterator[bool]:
        """One folder per database file: an exclusive lock on a file beside
        it (released by the kernel if the holder dies); yields whether we
        hold it."""
        fd = os.open(self.path + ".fold-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def _repair(self) -> bool:
        """Rebuild a batch of dirty buckets (sqlite_rollup.read_repair): the
        marks made so far claimed in a short transaction (claim_dirty), the
        buckets read in a snapshot after it, written in another short one.
        Only while the folder holds nothing absorbed. Whether it wrote anything."""
        minute_keep = self.rollup_retention[min(TIERS)]
        with self._write_lock, _translated("rollup repair"):
            if not sqlite_rollup.repair_due(self._writer_conn()):
                return False
        with self._transaction("rollup repair claim") as conn:
            top = sqlite_rollup.claim_dirty(conn)
        if top is None:
            return False
        with self._write_lock, _translated("rollup repair"):
            conn = self._writer_conn()
            with self.lock_priority(), _snapshot(conn):
                rep = sqlite_rollup.read_repair(
                    conn, _ROLLUP_SQL, self._series_ids, top, minute_keep
                )
        if rep is None:
            return False
        with self._transaction("rollup repair") as conn:
            return sqlite_rollup.write_repair(conn, self._series_ids, rep)

    def _build_hours(self, now: float) -> bool:
        """Build the sorted chunks of a batch of hours over by ``now``
        (rollup_vals.read_hours): read in a snapshot, written in a short
        transaction. Whether it wrote anything."""
        before = now - HOUR - rollup_vals.BUILD_AFTER_S
        with self._write_lock, _translated("rollup hours"):
            conn = self._writer_conn()
            with self.lock_priority(), _snapshot(conn):
                raw = sqlite_rollup.raw_hours(conn)
                built = rollup_vals.read_hours(conn, before, rollup_vals.BUILD_HOURS, raw)
        if not built:
            return False
        with self._transaction("rollup hours") as conn:
            rollup_vals.write_hours(conn, built)
        return True

    def _absorb(self, max_docs: int) -> int:
        with self._write_lock, _translated("rollup absorb"):
            return self._folder.absorb(self._writer_conn(), max_docs, self.lock_priority)

    def _checkpoint(
        self,
        steps: int | None = None,
        series: int = _STEP_SERIES,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Write the absorbed buckets, ``series`` series per write transaction,
        then move the watermark. Each step merges in a read snapshot first, so
        the write transaction only writes rows: other writers wait little, even
        while this (niced) process is short of CPU. ``steps``: stop after that
        many, memory dropped (tests: a folder that dies half way); ``stop``:
        asked between steps, stops the same way (the next folder finishes)."""
        folder = self._folder
        if folder.limit is not None and not folder.full:
            return  # resuming: not everything up to the limit is absorbed yet
        try:
            folder.prepare()
            while steps is None or steps > 0:
                with self._write_lock, _translated("rollup checkpoint"):
                    conn = self._writer_conn()
                    # (at the folder's idle priority: most of a step's CPU is
                    # merging, done here; a snapshot it holds while descheduled
                    # only keeps the log from starting over, and a starved
                    # folder rests niced after sqlite_folder.STARVED_S)
                    with _snapshot(conn):
                        step = folder.read_step(conn, _ROLLUP_SQL, self._series_ids, series)
                with self._transaction("rollup checkpoint") as conn:
                    if step is None:
                        folder.finish(conn, _ROLLUP_SQL, self._series_ids)
                        break
                    if not folder.write_step(conn, _ROLLUP_SQL, self._series_ids, step):
                        break  # someone else moved the watermark
                steps = None if steps is None else steps - 1
                if stop is not None and stop():
                    break
        finally:
            folder.clear()  # done; or failed, and the next absorb resumes
        self._checkpointed = time.monotonic()
        if time.monotonic() - self._pruned >= _PRUNE_EVERY_S:
            with self._transaction("rollup prune") as conn:
                sqlite_rollup.prune(conn, self.rollup_retention)
            self._pruned = time.monotonic()

    def sessions(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._reader("sessions") as conn:
            rows = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY last_seen DESC, session LIMIT ?",
                (limit,),
            ).fetchall()
        return [_session_dict(row) for row in rows]

    def find_sessions(self, q: SessionQuery) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("host", q.host), ("exit_code", q.exit_code)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if q.connected is not None:
            clauses.append("connected = ?")
            params.append(int(q.connected))
        if q.ended is not None:
            clauses.append("ended IS NOT NULL" if q.ended else "ended IS NULL")
        _range("last_seen", q.seen_from, q.seen_to, clauses, params)
        for tag in dict.fromkeys(q.tags):
            clauses.append("EXISTS (SELECT 1 FROM json_each(sessions.tags) WHERE value = ?)")
            params.append(tag)
        if q.after is not None:
            clauses.append("(last_seen < ? OR (last_seen = ? AND session > ?))")
            params += [q.after[0], q.after[0], q.after[1]]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {_SESSION_COLUMNS} FROM sessions {where}"
            " ORDER BY last_seen DESC, session LIMIT ?"
        )
        with self._reader("sessions") as conn:
            rows = conn.execute(sql, [*params, q.limit]).fetchall()
        return [_session_dict(row) for row in rows]

    def get_session(self, session: str) -> dict[str, Any] | None:
        with self._reader("sessions") as conn:
            row = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session = ?", (session,)
            ).fetchone()
        return None if row is None else _session_dict(row)

    def since(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        with self._reader("since") as conn:
            if after is None:
                (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM docs").fetchone()
                return [], str(top)
            rowid = _rowid(after)
            if rowid is None and after != "0":
                raise StoreError(f"{after!r} is not a document id of this store")
            rows = conn.execute(
                f"SELECT {_DOC_COLUMNS} FROM docs WHERE id > ? AND session != ? ORDER BY id LIMIT ?",
                (rowid or 0, API_SESSION, limit),
            ).fetchall()
        return [_doc_dict(row) for row in rows], str(rows[-1][0]) if rows else after

    def catalog(self) -> Catalog:
        """The names seen (see catalog.py): a few small indexed queries."""
        with self._reader("catalog") as conn, _snapshot(conn):
            names: dict[str, set[str]] = {}
            for name, kind in conn.execute("SELECT name, kind FROM names"):
                names.setdefault(kind, set()).add(name)
            paths: dict[str, set[str]] = {}
            for name, path in conn.execute("SELECT name, path FROM paths"):
                paths.setdefault(name, set()).add(path)
            for name in names.get("sample", set()) - set(paths):
                # Written before the catalog had paths: learn them from its latest sample.
                row = conn.execute(
                    "SELECT data FROM docs WHERE name = ? AND kind = 'sample' AND data IS NOT NULL"
                    " ORDER BY ts DESC LIMIT 1",
                    (name,),
                ).fetchone()
                if row is not None:
                    paths[name] = set(sample_paths(orjson.loads(row[0])))
            hosts = {h for (h,) in conn.execute("SELECT DISTINCT host FROM sessions") if h}
            sessions = {s for (s,) in conn.execute("SELECT session FROM sessions")}
            tags: set[str] = set()
            for (text,) in conn.execute("SELECT DISTINCT tags FROM sessions"):
                tags.update(orjson.loads(text))
            for (text,) in conn.execute(_RECENT_POINT_TAGS, (_CATALOG_POINTS,)):
                tags.update(orjson.loads(text))
        return Catalog.of(names, paths, hosts, sessions, tags)
