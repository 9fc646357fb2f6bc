"""The write fast path (http.py's ``_write_taken``, fast.py's ``FastWrites``):
a real API process over real sockets. A keep-alive write takes the fast path;
the same request with ``connection: close`` takes the full Starlette path.
Both must give the same answer, and the fast one must keep every contract:
keys and roles, JSON errors, ids, the cache bump, the counters, pipelining."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from deltawire.testing.servers import HOST

from .test_api import ApiServer, seed, start_api, stats_metric

pytestmark = pytest.mark.slow

KEYS = {"write": "w-key", "read": "r-key", "admin": "a-key"}


def served_with_keys(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[ApiServer]:
    """A real API process over a seeded store, with ``KEYS`` on."""
    tmp = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("API_KEYS", ",".join(f"{k}:{role}" for role, k in KEYS.items()))
        server = start_api(tmp, seed(tmp / "store.db"))
    server.client.headers["x-api-key"] = "r-key"  # its own reads (raw requests carry theirs)
    yield server
    server.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from served_with_keys(tmp_path_factory, "fastwrites")


def _request(method: str, path: str, body: Any = None, key: str | None = "w-key",
             close: bool = False) -> bytes:  # fmt: skip
    raw = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
    head = [f"{method} {path} HTTP/1.1", "host: test", f"content-length: {len(raw)}"]
    if key is not None:
        head.append(f"authorization: Bearer {key}")
    if raw:
        head.append("content-type: application/json")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


class _Conn:
    """One keep-alive connection that reads answers by content-length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), headers, body

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _both(api: ApiServer, method: str, path: str, **kw: Any) -> list[tuple[int, dict, Any]]:
    """The answer of the fast path (keep-alive) and of the full path (close)."""
    out = []
    for close in (False, True):
        before = api.metric("deltawire_api_fast_writes_total")
        c = _Conn(api.port)
        try:
            c.send(_request(method, path, close=close, **kw))
            status, headers, body = c.answer()
        finally:
            c.close()
        out.append((status, headers, orjson.loads(body) if body else None))
        took = api.metric("deltawire_api_fast_writes_total") - before
        assert took == (0 if close or "?" in path else 1), "the path taken"
    return out


def _streamed_id(api: ApiServer) -> str:
    return str(api.get("/metrics", params={"session": "s1", "limit": 1}).json()["items"][0]["id"])


def test_writes_answer_as_the_full_path(api: ApiServer) -> None:
    fast, full = _both(api, "POST", "/metrics", body={"name": "fw", "value": 1.5, "tags": ["a"]})
    for status, headers, doc in (fast, full):
        assert status == 201 and headers["content-type"] == "application/json"
        assert headers["location"] == f"/metrics/{doc['id']}"
        assert doc["name"] == "fw" and doc["value"] == 1.5 and doc["tags"] == ["a"]
    assert int(full[2]["id"]) > int(fast[2]["id"])  # new ids, in order
    doc_id = fast[2]["id"]
    for method, body, status in [
        ("PATCH", {"value": 2.5, "data": {"k": 1}}, 200),
        ("PUT", {"name": "fw", "value": 3.5}, 200),
    ]:
        fast, full = _both(api, method, f"/metrics/{doc_id}", body=body)
        assert fast[0] == full[0] == status
        assert {k: v for k, v in fast[2].items() if k != "timestamp"} == {
            k: v for k, v in full[2].items() if k != "timestamp"
        }
    got = api.get(f"/metrics/{doc_id}").json()
    assert got["value"] == 3.5
    fast, full = _both(api, "DELETE", f"/metrics/{doc_id}")
    assert (fast[0], fast[2]) == (204, None)
    assert full[0] == 404 and full[2]["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "error"),
    [
        ("POST", "/metrics", {"body": b"{"}, 400, "bad_json"),
        ("POST", "/metrics", {"body": b""}, 400, "bad_json"),
        ("POST", "/metrics", {"body": {"name": "x"}}, 422, "bad_parameter"),
        ("POST", "/metrics", {"body": [1]}, 422, "bad_body"),
        ("POST", "/metrics", {"body": {"name": "x", "value": 1}, "key": None}, 401, "unauthorized"),
        ("POST", "/metrics", {"body": {"name": "x", "value": 1}, "key": "nope"}, 401,
         "unauthorized"),
        ("POST", "/metrics", {"body": {"name": "x", "value": 1}, "key": "r-key"}, 403, "forbidden"),
        ("PATCH", "/metrics/999999", {"body": {"value": 1}}, 404, "not_found"),
        ("PUT", "/metrics/abc", {"body": {"name": "x", "value": 1}}, 404, "not_found"),
        ("DELETE", "/metrics/999999", {}, 404, "not_found"),
        ("DELETE", "/metrics/1?x=1", {}, 422, "bad_parameter"),  # query: the full path's 422
    ],
)  # fmt: skip
def test_refusals_are_the_same_json(
    api: ApiServer, method: str, path: str, kw: dict[str, Any], status: int, error: str
) -> None:
    fast, full = _both(api, method, path, **kw)
    assert fast[0] == full[0] == status
    assert fast[2] == full[2] and fast[2]["error"] == error
    assert fast[1]["content-type"] == full[1]["content-type"] == "application/json"
    assert fast[1].get("www-authenticate") == full[1].get("www-authenticate")


def test_roles_guard_streamed_documents(api: ApiServer) -> None:
    streamed = _streamed_id(api)
    for method, body in [("PATCH", {"value": 1}), ("DELETE", None)]:
        fast, full = _both(api, method, f"/metrics/{streamed}", body=body)
        assert fast[0] == full[0] == 403 and fast[2] == full[2]
    fast, _full = _both(api, "PATCH", f"/metrics/{streamed}", body={"value": 9}, key="a-key")
    assert fast[0] == 200 and fast[2]["value"] == 9


def test_pipelined_writes_answer_in_order_and_count(api: ApiServer) -> None:
    before = api.metric("deltawire_api_requests_total", route="/metrics", method="POST")
    c = _Conn(api.port)
    try:
        reqs = [_request("POST", "/metrics", {"name": "pipe", "value": i}) for i in range(5)]
        c.send(b"".join(reqs) + _request("GET", "/metrics?name=pipe&limit=10", key="r-key"))
        docs = []
        for _ in range(5):
            status, _h, body = c.answer()
            assert status == 201
            docs.append(orjson.loads(body))
        assert [d["value"] for d in docs] == list(range(5))
        assert [int(d["id"]) for d in docs] == sorted(int(d["id"]) for d in docs)
        status, _h, body = c.answer()  # the GET after them sees all five (the cache bump)
        assert status == 200 and len(orjson.loads(body)["items"]) == 5
    finally:
        c.close()
    after = api.metric("deltawire_api_requests_total", route="/metrics", method="POST")
    assert after - before == 5
    assert stats_metric(api.get("/stats").text, "deltawire_api_edits_total") >= 5


def test_a_fast_post_reaches_a_stream_subscriber(api: ApiServer) -> None:
    with api.client.stream("GET", "/stream", params={"name": "live"}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith(":"))  # subscribed
        c = _Conn(api.port)
        try:
            before = api.metric("deltawire_api_fast_writes_total")
            c.send(_request("POST", "/metrics", {"name": "live", "value": 4.5}))
            status, _h, body = c.answer()
            assert status == 201
            assert api.metric("deltawire_api_fast_writes_total") == before + 1
        finally:
            c.close()
        event = orjson.loads(next(line for line in lines if line.startswith("data: "))[6:])
        assert event == orjson.loads(body)
