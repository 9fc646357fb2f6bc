"""``SqliteStore.find_page``: a listing page written by SQLite (sqlite_page.py)
is the one the API's ``doc_out`` writes, byte for byte, or None."""

from __future__ import annotations

import itertools
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deltawire.collector.api.views import doc_out, found_page
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.collector.stores.base import Create, FoundPage
from deltawire.collector.stores.sqlite import SqliteStore
from deltawire.formats import rfc3339
from deltawire.protocol import Document
from tests.strategies import examples, samples

_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
_BUDGET = 1 << 30  # no byte budget: find_page has none, the caller checks it

_text = st.text(max_size=6)  # control characters, quotes, non-ASCII: json_quote's cases
# Times as agents send them (now, to the microsecond), whole ones, ties at
# half a millisecond, and the edges of what SQLite may write (before 1 s
# and after 9999 it must decline).
_stamps = st.one_of(
    st.floats(1.7e9, 1.9e9),
    st.integers(0, 4_000_000_000).map(float),
    st.integers(1_000_000, 4_000_000_000_000).map(lambda ms: ms / 1000 + 0.0005),
    st.floats(0, 2),
    st.floats(2.5e11, 2.6e11),
)
# Values as people write them (few digits), and any float at all.
_values = st.one_of(
    st.none(),
    st.integers(-(10**6), 10**6).map(lambda n: n / 100),
    st.floats(allow_nan=False, allow_infinity=False),
)

_streamed = st.builds(
    lambda session, seq, kind, name, ts, host, tags, data: (
        "doc", Document(session, seq, kind, name, ts, host, tuple(tags), data)
    ),
    _text, st.integers(0, 10**6), st.sampled_from(["sample", "event"]), _text, _stamps,
    st.none() | _text, st.lists(_text, max_size=2), st.none() | samples,
)  # fmt: skip
_points = st.builds(
    lambda name, value, ts, tags, data: (
        "point", {"name": name, "value": value, "ts": ts, "tags": tags, **data}
    ),
    st.text(min_size=1, max_size=6), _values, _stamps, st.lists(_text, max_size=2),
    st.just({}) | samples.map(lambda d: {"data": d}),
)  # fmt: skip
# Sessions and the end of the window too: an ascending page filtered on no
# more than ts and session is read without a subquery (bounded_page_sql).
_queries = st.builds(
    lambda limit, desc, name, lo, hi, session: MetricQuery(
        session=session, name=name, ts_from=lo, ts_to=hi, limit=limit, descending=desc
    ),
    st.integers(1, 12), st.booleans(), st.none() | _text, st.none() | _stamps,
    st.none() | _stamps, st.none() | st.sampled_from(["", "a", "s\u00e9ssion"]),
)  # fmt: skip


#: Both ways a page is written: by the C renderer (sqlite_docjson.c, built
#: here: the test machine has a C compiler) and in SQL (``?render=sql``).
RENDERS = pytest.mark.parametrize("render", ["auto", "sql"])


def _store(
    tmp_path: pathlib.Path, docs: list[tuple[str, Any]], render: str = "auto"
) -> SqliteStore:
    store = open_store(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db?render={render}")
    assert isinstance(store, SqliteStore)
    store.open()
    assert store._native == (render == "auto")  # C where asked: never silently SQL here
    streamed: dict[tuple[str, int], Document] = {}
    for what, doc in docs:
        if what == "doc":
            streamed.setdefault((doc.session, doc.seq), doc)
        else:
            store.apply_edits([Create(doc)])
    # Each session's documents in seq order, as the protocol stores them.
    store.write_batch(sorted(streamed.values(), key=lambda d: (d.session, d.seq)))
    return store


def _by_doc_out(store: SqliteStore, q: MetricQuery) -> FoundPage:
    from dataclasses import replace

    return found_page(store.find(replace(q, limit=q.limit + 1)), q.limit, None, _BUDGET)


@RENDERS
@settings(max_examples=examples(200), deadline=None, suppress_health_check=_SUPPRESS)
@given(docs=st.lists(_streamed | _points, min_size=1, max_size=25), q=_queries)
@example(docs=[("point", {"name": "p", "value": 0.1 + 0.2, "ts": 1.8e9, "tags": []})],
         q=MetricQuery(limit=5))  # fmt: skip
def test_a_page_sqlite_writes_is_doc_outs_byte_for_byte(
    tmp_path: pathlib.Path, docs: list[tuple[str, Any]], q: MetricQuery, render: str
) -> None:
    store = _store(tmp_path, docs, render)
    try:
        page = store.find_page(q)
        if page is not None:
            assert page == _by_doc_out(store, q)
        # The cursor of the page leads to the same next page both ways.
        if page is not None and page.next is not None:
            from dataclasses import replace

            nxt = replace(q, after=page.next)
            again = store.find_page(nxt)
            assert again is None or again == _by_doc_out(store, nxt)
    finally:
        store.close()


@RENDERS
@settings(max_examples=examples(100), deadline=None, suppress_health_check=_SUPPRESS)
@given(
    stamps=st.lists(
        st.floats(1.7e9, 1.9e9) | st.integers(1_700_000_000, 1_900_000_000), min_size=1, max_size=30
    ),
    values=st.lists(st.integers(-(10**9), 10**9).map(lambda n: n / 1000), min_size=1, max_size=30),
    q=_queries.map(lambda q: MetricQuery(limit=q.limit, descending=q.descending)),
)
def test_ordinary_documents_are_written_by_sqlite(
    tmp_path: pathlib.Path, stamps: list[float], values: list[float], q: MetricQuery, render: str
) -> None:
    """The fast path is taken, not declined, for what agents and people
    write: times since 1970, values of a few digits, names with any text."""
    docs: list[tuple[str, Any]] = [
        ("doc", Document("s\u00e9ssion", i, "sample", 'na"me', ts, None, ("t",), {"v": i}))
        for i, ts in enumerate(stamps)
    ]
    docs += [("point", {"name": "p\n", "value": v, "ts": stamps[0], "tags": []}) for v in values]
    store = _store(tmp_path, docs, render)
    try:
        page = store.find_page(q)
        assert page is not None
        assert page == _by_doc_out(store, q)
        assert page.count == min(q.limit, len(stamps) + len(values))
    finally:
        store.close()


@settings(max_examples=examples(100), deadline=None, suppress_health_check=_SUPPRESS)
@given(
    stamps=st.lists(st.integers(1_700_000_000, 1_700_000_020).map(float), min_size=1, max_size=40),
    sessions=st.lists(st.sampled_from(["a", "b"]), min_size=40, max_size=40),
    q=_queries.map(
        lambda q: MetricQuery(
            session=q.session or None,
            ts_from=q.ts_from,
            ts_to=q.ts_to,
            limit=q.limit,
            descending=True,
        )
    ),
    cursor=st.booleans(),
)
def test_a_newest_first_page_walks_its_index_backwards(
    tmp_path: pathlib.Path, stamps: list[float], sessions: list[str], q: MetricQuery, cursor: bool
) -> None:
    """A descending page filtered on ts and session (a dashboard's latest
    points) is read by dw_page without a subquery, on a reader that walks
    docs_ts or docs_session_ts backwards: written in C (not declined for
    rows out of order), and the same page as doc_out's, ties in ts and the
    next page's cursor included."""
    from dataclasses import replace

    from deltawire.collector.stores.sqlite import _bounded_page

    docs: list[tuple[str, Any]] = [
        ("doc", Document(sessions[i], i, "sample", "process", ts, None, (), {"v": i}))
        for i, ts in enumerate(stamps)
    ]
    store = _store(tmp_path, docs)
    try:
        if cursor:  # from the cursor of a first page, where there is one
            first = store.find_page(replace(q, limit=1))
            if first is not None and first.next is not None:
                q = replace(q, after=first.next)
        assert _bounded_page(q) is not None
        page = store.find_page(q)
        assert page is not None, "dw_page declined: the reader walked forwards"
        assert page == _by_doc_out(store, q)
    finally:
        store.close()


@RENDERS
def test_the_timestamp_rounds_half_a_millisecond_to_even(
    tmp_path: pathlib.Path, render: str
) -> None:
    """``rfc3339``'s round(): ties go to the even millisecond, both ways."""
    stamps = [1_800_000_000.0005, 1_800_000_000.0015, 1_800_000_000.0025, 1_800_000_000.9995]
    docs: list[tuple[str, Any]] = [
        ("doc", Document("s", i, "sample", "n", ts, "h", (), None)) for i, ts in enumerate(stamps)
    ]
    store = _store(tmp_path, docs, render)
    try:
        page = store.find_page(MetricQuery(limit=10))
        assert page is not None
        shown = [rfc3339(ts) for ts in stamps]
        assert [d["timestamp"] for d in _items(page)] == shown
        assert page.items == b",".join(
            __import__("orjson").dumps(doc_out(d)) for d in store.find(MetricQuery(limit=10))
        )
    finally:
        store.close()


@RENDERS
def test_what_sqlite_cannot_write_exactly_is_left_to_doc_out(
    tmp_path: pathlib.Path, render: str
) -> None:
    """A value of 16-17 digits or with an exponent, or a time before 1970 s
    1: None, and the API writes that page itself."""
    for point in ({"value": 0.1 + 0.2}, {"value": 1e20}, {"value": 1e-7}, {"ts": 0.25}):
        store = _store(
            tmp_path, [("point", {"name": "p", "value": 1.0, "ts": 1.8e9, **point})], render
        )
        try:
            assert store.find_page(MetricQuery(limit=5)) is None
        finally:
            store.close()


def _items(page: FoundPage) -> list[dict[str, Any]]:
    import orjson

    return list(orjson.loads(b"[" + page.items + b"]"))


_MEMORY_USED = """
import ctypes, sys
{first}
import deltawire.collector.api.app  # what the API process imports before its store
from deltawire.collector.stores import MetricQuery, open_store
store = open_store("sqlite:///" + sys.argv[1])
store.open()
store.find(MetricQuery())
lib = ctypes.CDLL("libsqlite3.so.0")
lib.sqlite3_memory_used.restype = ctypes.c_int64
print(lib.sqlite3_memory_used())
store.close()
"""


def test_a_collector_process_turns_sqlites_memory_statistics_off(
    tmp_path: pathlib.Path,
) -> None:
    """With them on, every SQLite allocation takes a process-wide mutex
    (sqlite_memstatus.py): importing deltawire.collector turns them off when
    SQLite has not started yet, and leaves SQLite alone when it has."""

    def used(first: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_USED.format(first=first),
             str(tmp_path / f"{uuid.uuid4().hex}.db")],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return int(out.stdout.split()[-1])

    assert used("") == 0  # not counted: off
    assert used("import sqlite3") > 0  # Python started SQLite first: on, as ever


# fields=: keys from a small alphabet, so the paths asked for are often there
# (and sometimes not, or half way, or under a list or a number).
_KEYS = ["cpu", "percent", "a", "b.c", "it's", "é", "", 'q"']
_data_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
_paths = st.lists(
    st.lists(st.sampled_from(_KEYS), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4
)


@RENDERS
@settings(max_examples=examples(200), deadline=None, suppress_health_check=_SUPPRESS)
@given(
    datas=st.lists(st.none() | st.dictionaries(st.sampled_from(_KEYS), _data_values, max_size=4),
                   min_size=1, max_size=8),
    paths=_paths,
    limit=st.integers(1, 6),
)  # fmt: skip
@example(  # siblings, in the order the paths first name them; a missing one; a number half way
    datas=[{"cpu": {"percent": 1.5, "a": 2}, "é": {"it's": [3]}, "b.c": 7}, None, {"cpu": 4}],
    paths=[("cpu", "percent"), ("é", "it's"), ("cpu", "a"), ("cpu", "b.c"), ("b.c", "a")],
    limit=3,
)
def test_a_page_of_selected_paths_is_doc_outs_byte_for_byte(
    tmp_path: pathlib.Path, datas: list[Any], paths: list[tuple[str, ...]], limit: int, render: str
) -> None:
    docs: list[tuple[str, Any]] = [
        ("doc", Document("s", i, "sample", "n", 1.8e9 + i, "h", (), data))
        for i, data in enumerate(datas)
    ]
    store = _store(tmp_path, docs, render)
    try:
        from dataclasses import replace

        q = MetricQuery(limit=limit)
        page = store.find_page(q, paths)
        fetched = store.find(replace(q, limit=limit + 1))
        assert page is None or page == found_page(fetched, limit, paths, _BUDGET)
        plain = all(p and all(k and '"' not in k for k in p) for p in paths) and not any(
            a != b and b[: len(a)] == a for a in paths for b in paths
        )
        assert (page is not None) == plain  # declined exactly where it says it would
    finally:
        store.close()


_WITHOUT_COMPILER = """
import sys
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.collector.stores.base import Create
store = open_store("sqlite:///" + sys.argv[1])
store.open()
store.apply_edits([Create({"name": "p", "value": 1.5, "ts": 1.8e9})])
page = store.find_page(MetricQuery())
print(store._native, page.count, page.items.decode())
store.close()
"""


def test_without_a_c_compiler_pages_are_written_in_sql(tmp_path: pathlib.Path) -> None:
    """No compiler to build the C renderer (and none built before): the
    store says so in its log and writes the same pages in SQL."""
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "DELTAWIRE_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_COMPILER, str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    native, count, items = out.stdout.split(maxsplit=2)
    assert (native, count) == ("False", "1")
    assert '"value":1.5' in items and '"timestamp":"2027-01-15T08:00:00.000Z"' in items
    assert not (tmp_path / "native").exists() or not any((tmp_path / "native").glob("*.so"))


def _one_doc(value: float | None, text: str = "s", ts: float = 1.8e9) -> bytes | None:
    """One document as dw_page writes it (None: it declined)."""
    import sqlite3

    from deltawire.collector.stores import sqlite_native, sqlite_page

    assert sqlite_native.install()
    conn = sqlite3.connect(":memory:")
    try:
        (answer,) = conn.execute(
            "SELECT dw_page(1, 1, ?, 2, 'k', ?, ?, '[]', ?, ?, NULL, NULL, 0)",
            (text, text, text, ts, value),
        ).fetchone()
    finally:
        conn.close()
    page = sqlite_page.native_page(answer)
    return None if page is None else page.items


@settings(max_examples=examples(2000), deadline=None)
@given(
    value=st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**15), 10**15).map(lambda n: n / 10 ** (n % 19)),
    text=st.text(max_size=8),
    ts=st.floats(1, 253402300799.999),
)
def test_the_c_renderer_writes_what_orjson_writes(value: float, text: str, ts: float) -> None:
    """Any float, any text, any time SQLite may hold: dw_page writes doc_out's
    JSON exactly, or declines (NULL) - and it declines only values outside
    1e-4 <= |v| < 1e15 or of more than 15 significant digits."""
    import orjson

    out = _one_doc(value, text, ts)
    doc = {"id": "1", "session": text, "seq": 2, "kind": "k", "name": text, "host": text,
           "tags": [], "ts": ts, "value": value}  # fmt: skip
    if out is not None:
        assert out == orjson.dumps(doc_out(doc))
    else:
        digits = len(repr(abs(value)).split("e")[0].replace(".", "").strip("0"))
        assert value != 0 and not (1e-4 <= abs(value) < 1e15 and digits <= 15)


def _page_of(rows: list[tuple[int, float]], limit: int, order: int) -> FoundPage | None:
    """dw_page over rows of (id, ts) fed in the order given (None: declined)."""
    import sqlite3

    from deltawire.collector.stores import sqlite_native, sqlite_page

    assert sqlite_native.install()
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE r (n INTEGER PRIMARY KEY, id INTEGER, ts REAL)")
        conn.executemany("INSERT INTO r (id, ts) VALUES (?, ?)", rows)
        (answer,) = conn.execute(
            "SELECT dw_page(?, id, 's', 1, 'k', 'n', NULL, '[]', ts, NULL, NULL, NULL, ?)"
            " FROM (SELECT id, ts FROM r ORDER BY n)",  # fed as inserted
            (limit, order),
        ).fetchone()
    finally:
        conn.close()
    return sqlite_page.native_page(answer)


@settings(max_examples=examples(300), deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 4).map(float)), max_size=8),
    limit=st.integers(1, 8),
)
def test_dw_page_declines_rows_out_of_the_pages_order(
    rows: list[tuple[int, float]], limit: int
) -> None:
    """A page never rests on the order a plan feeds the rows in: told the
    order (1, -1), dw_page writes the page only if every row, the ones past
    the page too, comes strictly after the one before in (ts, id); else it
    declines, and the page is written in Python. Told 0, it does not check."""
    keys = [(ts, doc_id) for doc_id, ts in rows]
    for order in (1, -1):
        in_order = all((b > a if order > 0 else b < a) for a, b in itertools.pairwise(keys))
        page = _page_of(rows, limit, order)
        assert (page is not None) == in_order, (rows, order)
        if page is not None:
            assert page.count == min(limit, len(rows))
    assert _page_of(rows, limit, 0) is not None


def test_a_page_on_ts_and_session_reads_no_subquery() -> None:
    """Which pages take bounded_page_sql (no co-routine copying each row):
    filtered on ts, session and the cursor only, either order."""
    from deltawire.collector.stores.sqlite import _bounded_page

    assert _bounded_page(MetricQuery(ts_from=1.8e9, ts_to=1.9e9, limit=50)) is not None
    assert _bounded_page(MetricQuery(session="s", after=(1.8e9, "7"))) is not None
    assert _bounded_page(MetricQuery(descending=True)) is not None
    assert _bounded_page(MetricQuery(session="s", ts_to=1.9e9, descending=True)) is not None
    for q in (
        MetricQuery(name="cpu"),
        MetricQuery(kind="event"),
        MetricQuery(host="h"),
        MetricQuery(tags=("t",)),
    ):
        assert _bounded_page(q) is None, q
