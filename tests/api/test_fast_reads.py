"""GETs the cache does not hold, taken by the fast path (http.py's
``_answered_at_once``, fast.py's ``FastGets.submit``): a real API process
over real sockets, with keys on. A keep-alive GET takes the fast path; the
same request with ``connection: close`` takes the full Starlette path. Both
must give the same answer, and the fast one every contract of the full one:
keys, JSON errors, x-cache, single flight, the counters, pipelining."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import orjson
import pytest

from deltawire.collector.stores.base import encode_cursor

from .test_api import ApiServer, stats_metric
from .test_fast_writes import _Conn, served_with_keys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from served_with_keys(tmp_path_factory, "fastreads")  # keys on, "r-key" reads


def _get(path: str, key: str | None = "r-key", close: bool = False) -> bytes:
    head = [f"GET {path} HTTP/1.1", "host: test"]
    if key is not None:
        head.append(f"x-api-key: {key}")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def _once(api: ApiServer, data: bytes) -> tuple[int, dict[str, str], bytes]:
    conn = _Conn(api.port)
    try:
        conn.send(data)
        return conn.answer()
    finally:
        conn.close()


def _served(api: ApiServer) -> float:
    return stats_metric(api.get("/stats").text, "deltawire_api_requests_total",
                        method="GET", route="/metrics", status="200")  # fmt: skip


def test_a_new_listing_is_answered_as_the_full_path_answers_it(api: ApiServer) -> None:
    before, took = _served(api), api.metric("deltawire_api_fast_reads_total")
    fast = _once(api, _get("/metrics?limit=4"))  # keep-alive: the fast path
    # The full path: computed again (a listing is kept once asked again,
    # admission.py), and now kept.
    full = _once(api, _get("/metrics?limit=4", close=True))
    assert fast[0] == full[0] == 200
    assert fast[1]["x-cache"] == "miss" and full[1]["x-cache"] == "miss"
    assert fast[2] == full[2] and len(orjson.loads(fast[2])["items"]) == 4
    hit = _once(api, _get("/metrics?limit=4"))
    assert hit[1]["x-cache"] == "hit" and hit[2] == fast[2]
    # And the other way round: two misses on the full path, then a hit on the fast one.
    _once(api, _get("/metrics?limit=5", close=True))
    full = _once(api, _get("/metrics?limit=5", close=True))
    fast = _once(api, _get("/metrics?limit=5"))
    assert (full[1]["x-cache"], fast[1]["x-cache"]) == ("miss", "hit") and fast[2] == full[2]
    # The same headers as the full path's (but connection: close, which it asked for).
    assert set(fast[1]) == set(full[1]) - {"connection"}
    assert fast[1]["content-type"] == "application/json"
    assert int(fast[1]["content-length"]) == len(fast[2])
    assert _served(api) - before == 6
    # The fast path took the keep-alive miss (and answered the hits at once).
    assert api.metric("deltawire_api_fast_reads_total") - took == 1


@pytest.mark.parametrize(
    ("path", "key", "status", "code"),
    [
        ("/metrics?limit=7", None, 401, "unauthorized"),
        ("/metrics?limit=7", "nope", 401, "unauthorized"),
        ("/metrics?limit=abc", "r-key", 422, "bad_parameter"),
        ("/metrics?limit=3&bogus=1", "r-key", 422, "bad_parameter"),
    ],
)
def test_what_the_fast_path_leaves_alone_the_full_path_refuses(
    api: ApiServer, path: str, key: str | None, status: int, code: str
) -> None:
    took = api.metric("deltawire_api_fast_reads_total")
    got, headers, body = _once(api, _get(path, key))
    assert got == status and headers["content-type"] == "application/json"
    assert orjson.loads(body)["error"] == code
    assert api.metric("deltawire_api_fast_reads_total") == took


def test_a_foreign_cursor_is_refused_as_the_full_path_refuses_it(api: ApiServer) -> None:
    """A cursor that parses but names no document of this store: the store
    refuses it, and the fast path's answer (from its store read's callback)
    is the full path's 422, byte for byte."""
    took = api.metric("deltawire_api_fast_reads_total")
    path = f"/metrics?limit=5&after={encode_cursor(1.0, 'x')}"
    fast, full = _once(api, _get(path)), _once(api, _get(path, close=True))
    assert fast[0] == full[0] == 422 and fast[2] == full[2]
    assert fast[1]["content-type"] == "application/json"
    error = orjson.loads(fast[2])
    assert error["error"] == "bad_parameter" and error["parameter"] == "after"
    assert "not a document id of this store" in error["detail"]
    assert api.metric("deltawire_api_fast_reads_total") == took + 1


def test_pipelined_misses_are_answered_in_order(api: ApiServer) -> None:
    paths = ["/metrics?limit=2&sort=-timestamp", "/metrics?limit=3&sort=-timestamp", "/nope",
             "/metrics?limit=2&sort=-timestamp", "/metrics?limit=6&sort=-timestamp"]  # fmt: skip
    conn = _Conn(api.port)
    try:
        conn.send(b"".join(_get(p) for p in paths))
        answers = [conn.answer() for _ in paths]
    finally:
        conn.close()
    assert [a[0] for a in answers] == [200, 200, 404, 200, 200]
    for path, (_, _, body) in zip(paths, answers, strict=True):
        if path != "/nope":
            assert body == _once(api, _get(path, close=True))[2], path
    assert answers[0][2] == answers[3][2]
    assert [len(orjson.loads(answers[i][2])["items"]) for i in (0, 1, 4)] == [2, 3, 6]


def test_concurrent_misses_of_one_listing_compute_it_once(api: ApiServer) -> None:
    """Single flight on the fast path too: of 20 clients asking a new
    listing at once, one computes it; the rest share it (or hit it)."""
    path, n = "/metrics?limit=50&sort=timestamp", 20
    # Asked once before: the one computation is then kept, so a client that
    # comes after it is a hit (a listing is kept once asked again, admission.py).
    assert _once(api, _get(path))[1]["x-cache"] == "miss"
    conns = [_Conn(api.port) for _ in range(n)]
    ready = threading.Barrier(n)
    how: list[str] = []

    def ask(conn: _Conn) -> None:
        ready.wait(timeout=10)
        conn.send(_get(path))
        status, headers, _body = conn.answer()
        assert status == 200
        how.append(headers["x-cache"])

    threads = [threading.Thread(target=ask, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for c in conns:
        c.close()
    assert len(how) == n and how.count("miss") == 1, how
    assert set(how) <= {"miss", "shared", "hit"}


def test_a_client_gone_before_its_answer_leaves_the_server_serving(api: ApiServer) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
        s.sendall(_get("/metrics?limit=100&sort=-timestamp"))
    got, _, body = _once(api, _get("/metrics?limit=8&sort=-timestamp"))
    assert got == 200 and len(orjson.loads(body)["items"]) == 8
