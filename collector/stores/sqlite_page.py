"""``GET /metrics`` pages rendered by SQLite itself, in one step (``find_page``).

Why: the uncached listing was bound by how Python reads rows, not by SQLite.
``fetchall`` steps once per row and lets go of the GIL around each step, so
with the API's store threads reading at once every row became a GIL hand-off:
on the bench's store, a 100-document page cost 0.78 ms of CPU on one thread
and 2.0-3.5 ms each with 2-4 threads reading (400-600 pages/s in all). Here
the page is ONE row: SQLite writes each document's JSON and joins them,
with the GIL let go for the whole statement, so store threads read in
parallel (0.34 ms a page on one thread, and 2 threads twice the pages once
SQLite's memory statistics are off: sqlite_memstatus.py; figures in
docs/api-performance.md).

Two ways to write the documents, the same bytes: ``native_page_sql``, by
``dw_page``, a SQLite function in C (sqlite_docjson.c; about a third of
the statement's CPU), wherever sqlite_native.py could build and load it;
else ``page_sql``, in SQL, as follows. Both write ``views.doc_out``'s JSON,
byte for byte (property tests hold each to it,
tests/collector/test_sqlite_page.py):

- strings through ``json_quote``, which escapes as orjson does;
- ``tags`` and ``data`` as stored: both are orjson's text (``_json_text``);
  ``fields=``'s paths of ``data`` through ``->``, which keeps that text;
- ``timestamp`` from ``round(ts * 1000)`` milliseconds, with Python's
  round-half-even (``rfc3339``);
- ``value`` through ``printf('%!.15g')``, which is orjson's shortest form
  wherever 15 digits give the value back and it is written without an
  exponent (1e-4 <= |value| < 1e15: checked per row).

A row outside that (``ODD``: a value with more digits or an exponent, a time
before 1970 or after 9999, a JSON ``null`` as data), or paths it cannot
name (``selected``), make ``find_page`` answer None, and the caller renders
that page in Python (``find`` and ``doc_out``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson

from .base import FoundPage

__all__ = [
    "ODD",
    "bounded_page_sql",
    "native_page",
    "native_page_sql",
    "page_sql",
    "path_spec",
    "rendered",
    "selected",
]

# x = ts * 1000 (the same double as Python's). For 1 <= x < 2**52, x + 0.5 is
# exact, so its integer part is round-half-up; a tie (x + 0.5 whole) that
# lands on an odd number goes down to the even one, as Python's round does.
_UP: Final = "CAST(ts * 1000 + 0.5 AS INTEGER)"
_MS: Final = f"({_UP} - (ts * 1000 + 0.5 = {_UP} AND {_UP} % 2 = 1))"

#: Per row: a document this module cannot write as doc_out does.
#: 253402300800 is 10000-01-01 (SQLite's dates stop at 9999); before 1 s
#: the rounding above is not exact.
ODD: Final = (
    "(ts < 1 OR ts >= 253402300800 OR typeof(seq) != 'integer' OR data = 'null'"
    " OR (value IS NOT NULL AND value != 0 AND NOT (abs(value) >= 1e-4 AND abs(value) < 1e15"
    " AND CAST(vtext AS REAL) = value)))"
)


def rendered(data: str = "data") -> str:
    """Per row: the document as ``views.doc_out`` writes it, its ``data``
    as the SQL ``data`` (JSON text, or NULL for none: ``selected`` for
    ``fields=``). ``vtext``: the value as text, as ``printf('%!.15g')``
    writes a REAL; ``%f`` writes the seconds of a whole number of
    milliseconds exactly (strftime turns ``unixepoch`` seconds into whole
    milliseconds, rounded)."""
    return (
        """'{"id":"' || id || '","session":' || json_quote(session) || ',"seq":' || seq"""
        """ || ',"kind":' || json_quote(kind) || ',"name":' || json_quote(name)"""
        """ || ',"host":' || json_quote(host) || ',"tags":' || tags"""
        """ || ',"timestamp":"' || strftime('%Y-%m-%dT%H:%M:%fZ', ms / 1000.0, 'unixepoch') || '"'"""
        f""" || ifnull(',"value":' || vtext, '') || ifnull(',"data":' || {data}, '') || '}}'"""
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def selected(
    paths: Sequence[tuple[str, ...]], key_path: Callable[[Sequence[str]], str]
) -> str | None:
    """SQL for ``views.select_paths(data, paths)`` as JSON text (NULL when
    none of the paths is present), or None where this cannot write it
    exactly: a path that another one continues (``a`` and ``a.b``: Python's
    merge of the two is not worth copying). ``key_path``: the store's JSON
    path of a key sequence (it raises for a key no path can name).

    ``data -> '$."a"."b"'`` is the element's JSON text as stored (orjson's:
    numbers keep their digits), NULL when a key is missing or a step is not
    an object, as ``select_paths`` skips such a path. Keys come in the order
    the paths first name them, as the dict ``select_paths`` builds."""
    tree: dict[str, Any] = {}
    for path in paths:
        if not path:
            return None
        node = tree
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if child is _LEAF:
                return None
            node = child
        if node.get(path[-1], _LEAF) is not _LEAF:
            return None  # a path under this one came first
        node[path[-1]] = _LEAF

    def obj(node: dict[str, Any], at: tuple[str, ...]) -> str:
        members = []
        for key, child in node.items():
            where = (*at, key)
            if child is _LEAF:
                value = "(data -> " + _literal(key_path(where)) + ")"
            else:
                value = obj(child, where)
            members.append(
                f"ifnull({_literal(',' + orjson.dumps(key).decode() + ':')} || {value}, '')"
            )
        # ",m1,m2" or '' -> "{m1,m2}" or NULL (no member present)
        return "('{' || substr(nullif(" + " || ".join(members) + ", ''), 2) || '}')"

    return obj(tree, ())


_LEAF: Final = object()  # a selected path ends here


def page_sql(edge_sql: str, find_sql: str, data: str = "data") -> str:
    """The page query: ONE statement (one snapshot, and one step, so one
    hand-off of the GIL), whose ``?`` are ``edge_sql``'s, then ``find_sql``'s.
    ``find_sql`` selects the page's document columns (filtered, ordered,
    limited to the page); ``edge_sql`` selects ``ts, id`` of the page's last
    document and the one after it, if any (the same query at LIMIT 2 OFFSET
    limit - 1: an index walk, no document read twice). ``data``: as
    ``rendered`` takes it.

    One row: the page's documents joined (a BLOB: bytes, as the answer wants
    them), how many there are, how many of them are odd (``ODD``), the
    (ts, id) of the edge's first row and the ts of its second (None where
    there is none).

    The aggregate joins the rows in the subquery's order (SQLite feeds them
    in that order; the tests check it over pages of many documents)."""
    return (
        f"WITH edge AS MATERIALIZED ({edge_sql})"
        " SELECT CAST(group_concat(j, ',') AS BLOB), count(*), sum(odd),"
        " (SELECT ts FROM edge LIMIT 1), (SELECT id FROM edge LIMIT 1),"
        " (SELECT ts FROM edge LIMIT 1 OFFSET 1)"
        f" FROM (SELECT {rendered(data)} AS j, {ODD} AS odd"
        f" FROM (SELECT *, {_MS} AS ms, CAST(value AS TEXT) AS vtext FROM ({find_sql})))"
    )


#: The call of ``dw_page`` over a page's rows; its ``?`` are the page's
#: limit, ``path_spec``'s paths (NULL: whole documents) and the order the
#: rows must come in (1 ascending, -1 descending: else the answer is NULL).
_PAGE_CALL: Final = "dw_page(?, id, session, seq, kind, name, host, tags, ts, value, data, ?, ?)"


def native_page_sql(find_sql: str) -> str:
    """The page query where ``dw_page`` is installed (sqlite_docjson.c,
    sqlite_native.py): ONE statement and one row, ``dw_page``'s answer
    (``native_page`` reads it). Its ``?`` are ``_PAGE_CALL``'s, then
    ``find_sql``'s, which selects the document columns of limit + 1 rows
    (the one past the page only says whether another page follows, and
    where). SQLite feeds the subquery's rows in its order; ``dw_page``
    checks they come so."""
    return f"SELECT {_PAGE_CALL} FROM ({find_sql})"


def bounded_page_sql(where: str, edge_sql: str, *, descending: bool = False) -> str:
    """The page query without a subquery to feed it, for filters an index
    with ``ts`` covers (ts, session, the cursor): ``dw_page`` over the rows
    of ``where`` up to the ts of the one past the page, ``edge_sql`` (the
    same filters in the page's order, ``LIMIT 1 OFFSET limit``: an index
    walk that reads no document), or to the end where fewer match; for a
    ``descending`` page down to it, on a connection that walks an unordered
    query's index backwards (``PRAGMA reverse_unordered_selects``). Its
    ``?`` are ``_PAGE_CALL``'s, ``where``'s, then ``edge_sql``'s.

    Why: ``native_page_sql``'s subquery is a co-routine whose every row
    SQLite copies, strings and all, before the aggregate sees it: half the
    statement's CPU (a 100-document page on the bench's store: 160-173 µs
    that way, 80-92 µs this way). Nothing here orders the rows but the
    index the plan walks, so ``dw_page`` checks each row comes after the
    one before in the page's order; a plan that fed them otherwise would
    make the page NULL, and the caller would write it in Python. Rows tied
    with the page's edge in ts are all read, as they must be to find the
    first ``limit`` in (ts, id) order."""
    if descending:
        edge = f"ts >= coalesce(({edge_sql}), -9e999)"
    else:
        edge = f"ts <= coalesce(({edge_sql}), 9e999)"
    return f"SELECT {_PAGE_CALL} FROM docs WHERE {where} AND {edge}"


def path_spec(paths: Sequence[tuple[str, ...]]) -> str:
    """``fields=``'s paths as ``dw_page`` takes them: a line a path, its keys
    separated by tabs, each as orjson writes it (which escapes tabs and
    newlines, so they only ever separate), to be matched against the
    stored data's keys byte for byte. Paths ``selected`` declines are
    declined here too (the caller checks with it first)."""
    return "\n".join("\t".join(orjson.dumps(key).decode() for key in path) for path in paths)


#: dw_page's trailer: how many documents, the ts and id of the last one and
#: the ts of the row after it (NaN: none), in the machine's byte order.
_TRAILER: Final = struct.Struct("=qdqd")


def native_page(answer: bytes | None) -> FoundPage | None:
    """``dw_page``'s answer as a page; None where it declined (a document
    it cannot write exactly: the caller writes the page in Python)."""
    if answer is None:
        return None
    cut = len(answer) - _TRAILER.size
    count, last_ts, last_id, beyond = _TRAILER.unpack_from(answer, cut)
    if math.isnan(beyond):  # no more
        return FoundPage(answer[:cut], count, None, None)
    return FoundPage(answer[:cut], count, (last_ts, str(last_id)), beyond)
