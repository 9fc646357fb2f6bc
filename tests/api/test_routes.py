"""The API in-process (httpx.ASGITransport over the real app and a real SQLite
file): writes, PATCH, host, keys and roles, rate limits, sessions, fields=,
the byte budget, cursors, deadlines."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from deltawire.collector.api import ApiConfig
from deltawire.collector.api.auth import parse_keys
from deltawire.collector.stores import Store
from deltawire.collector.stores.sqlite import SqliteStore
from deltawire.protocol import Document, Hello

from .inproc import bearer, client, sqlite_store

T0 = 1_790_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = sqlite_store(tmp_path)
    s.session_connected(Hello(session="s1", host="web-1", agent="wd/1", tags=("env=prod",)), T0)
    s.session_connected(Hello(session="s2", host="web-2", agent="wd/1"), T0 + 1)
    s.write_batch(
        [Document("s1", i, "sample", "proc", T0 + i, "web-1", ("env=prod",),
                  {"cpu": {"percent": float(i)}, "mem": {"rss": i}}) for i in range(50)]
        + [Document("s2", 0, "session", "end", T0 + 5, "web-2", (), {"exit_code": 3})]
    )  # fmt: skip
    return s


async def test_patch_keeps_the_stored_timestamp_exactly(store: Store) -> None:
    """A patch that does not name the timestamp leaves ``ts`` as stored (to
    the last bit, not rounded to the microsecond), and one that does sets it."""
    ts = T0 + 0.123456789
    async with client(store) as (c, _):
        doc = (await c.post("/metrics", json={"name": "t", "value": 1, "timestamp": ts})).json()
        assert store.get(doc["id"])["ts"] == ts  # type: ignore[index]
        r = await c.patch(f"/metrics/{doc['id']}", json={"value": 2})
        assert r.status_code == 200 and r.json()["timestamp"] == doc["timestamp"]
        assert store.get(doc["id"])["ts"] == ts  # type: ignore[index]
        r = await c.patch(f"/metrics/{doc['id']}", json={"timestamp": None, "value": 3})
        assert r.status_code == 200 and store.get(doc["id"])["ts"] == ts  # type: ignore[index]
        r = await c.patch(f"/metrics/{doc['id']}", json={"timestamp": T0 + 7})
        assert r.status_code == 200 and store.get(doc["id"])["ts"] == T0 + 7  # type: ignore[index]


async def test_post_keeps_host_and_patch_merges(store: Store) -> None:
    async with client(store) as (c, _):
        r = await c.post("/metrics", json={"name": "t", "value": 1, "host": "h1",
                                           "data": {"a": {"b": 1, "c": 2}}})  # fmt: skip
        assert r.status_code == 201, r.text
        doc = r.json()
        assert doc["host"] == "h1"
        r = await c.patch(f"/metrics/{doc['id']}", json={"data": {"a": {"b": None, "d": 4}},
                                                         "value": 2.5})  # fmt: skip
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["data"] == {"a": {"c": 2, "d": 4}} and new["value"] == 2.5
        assert (new["name"], new["host"], new["timestamp"]) == ("t", "h1", doc["timestamp"])
        assert (await c.get(f"/metrics/{doc['id']}")).json() == new
        r = await c.patch(f"/metrics/{doc['id']}", json={"host": None, "name": None})
        assert r.status_code == 422 and r.json()["parameter"] == "name"
        r = await c.patch("/metrics/999999", json={"value": 1})
        assert r.status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("depth", [65, 254, 255, 1023, 1025, 5000])
async def test_deep_bodies_are_422_and_nothing_is_stored(
    store: Store, method: str, depth: int
) -> None:
    async with client(store) as (c, _):
        created = (await c.post("/metrics", json={"name": "n", "value": 1})).json()
        data = b'{"a":' * depth + b"1" + b"}" * depth
        body = b'{"name": "deep", "value": 1, "data": ' + data + b"}"
        path = "/metrics" if method == "POST" else f"/metrics/{created['id']}"
        r = await c.request(method, path, content=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "bad_parameter"
        listed = (await c.get("/metrics", params={"session": "api"})).json()["items"]
        assert [d["name"] for d in listed] == ["n"]


async def test_huge_integers_in_data_are_422(store: Store) -> None:
    async with client(store) as (c, _):
        body = b'{"name": "n", "value": 1, "data": {"x": 18446744073709551615}}'
        r = await c.post("/metrics", content=body)
        assert r.status_code == 422 and r.json()["parameter"] == "data"


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw", [b"[" + str(2**200).encode() + b',"1"]', b'[1e300,"1"]', b'[-1,"1"]', b'[1,""]']
)
async def test_cursor_out_of_range_is_422(store: Store, raw: bytes) -> None:
    async with client(store) as (c, _):
        r = await c.get("/metrics", params={"after": _cursor(raw)})
        assert r.status_code == 422 and r.json()["parameter"] == "after"


async def test_fields_select_data_paths(store: Store) -> None:
    async with client(store) as (c, _):
        r = await c.get("/metrics", params={"session": "s1", "limit": 2, "fields": "cpu.percent"})
        items = r.json()["items"]
        assert [d["data"] for d in items] == [{"cpu": {"percent": 0.0}}, {"cpu": {"percent": 1.0}}]
        r = await c.get("/metrics", params={"fields": "a..b"})
        assert r.status_code == 422 and r.json()["parameter"] == "fields"


async def test_byte_budget_pages_with_next(store: Store) -> None:
    async with client(store, ApiConfig(page_bytes=2000)) as (c, _):
        seen: list[str] = []
        params: dict[str, Any] = {"session": "s1", "limit": 10_000}
        pages = 0
        while True:
            r = await c.get("/metrics", params=params)
            assert len(r.content) <= 2000 + 400  # the budget, plus one item at most
            page = r.json()
            seen += [d["id"] for d in page["items"]]
            pages += 1
            if page["next"] is None:
                break
            params["after"] = page["next"]
        assert len(seen) == len(set(seen)) == 50 and pages >= 5


async def test_keys_and_roles(store: Store) -> None:
    keys = parse_keys("r1:read,w1:write,a1:admin")
    async with client(store, ApiConfig(keys=keys)) as (c, _):
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/openapi.json")).status_code == 200
        r = await c.get("/metrics")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert (await c.get("/metrics", headers=bearer("nope"))).status_code == 401
        assert (await c.get("/metrics", headers={"x-api-key": "r1"})).status_code == 200
        r = await c.post("/metrics", json={"name": "n", "value": 1}, headers=bearer("r1"))
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = await c.post("/metrics", json={"name": "n", "value": 1}, headers=bearer("w1"))
        assert r.status_code == 201
        mine = r.json()["id"]
        assert (
            await c.patch(f"/metrics/{mine}", json={"value": 2}, headers=bearer("w1"))
        ).status_code == 200
        streamed = (await c.get("/metrics", params={"session": "s1", "limit": 1},
                                headers=bearer("r1"))).json()["items"][0]  # fmt: skip
        for method in ("PUT", "PATCH", "DELETE"):
            body = {"name": "x", "value": 1.0} if method != "DELETE" else None
            r = await c.request(
                method, f"/metrics/{streamed['id']}", json=body, headers=bearer("w1")
            )
            assert r.status_code == 403, (method, r.text)
        again = (await c.get(f"/metrics/{streamed['id']}", headers=bearer("r1"))).json()
        assert again == streamed
        r = await c.patch(f"/metrics/{streamed['id']}", json={"value": 1.0}, headers=bearer("a1"))
        assert r.status_code == 200
        assert (await c.delete(f"/metrics/{mine}", headers=bearer("w1"))).status_code == 204


async def test_rate_limit_is_429_with_retry_after(store: Store) -> None:
    async with client(store, ApiConfig(rate_limit=0.01, rate_burst=3)) as (c, _):
        codes = [(await c.get("/metrics", params={"limit": 1})).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await c.get("/metrics")
        assert r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        assert (await c.get("/healthz")).status_code == 200  # never limited


async def test_sessions_filters_cursor_and_one(store: Store) -> None:
    async with client(store) as (c, _):
        page = (await c.get("/sessions")).json()
        assert [s["session"] for s in page["items"]] == ["s1", "s2"] and page["next"] is None
        assert [
            s["session"]
            for s in (await c.get("/sessions", params={"ended": "true"})).json()["items"]
        ] == ["s2"]
        assert [
            s["session"]
            for s in (await c.get("/sessions", params={"exit_code": 3})).json()["items"]
        ] == ["s2"]
        assert [
            s["session"]
            for s in (await c.get("/sessions", params={"host": "web-1"})).json()["items"]
        ] == ["s1"]
        assert [
            s["session"]
            for s in (await c.get("/sessions", params={"tag": "env=prod"})).json()["items"]
        ] == ["s1"]
        r = await c.get("/sessions", params={"connected": "true"})
        assert {s["session"] for s in r.json()["items"]} == {"s1", "s2"}
        first = (await c.get("/sessions", params={"limit": 1})).json()
        assert len(first["items"]) == 1 and first["next"]
        rest = (await c.get("/sessions", params={"limit": 1, "after": first["next"]})).json()
        assert [s["session"] for s in first["items"] + rest["items"]] == ["s1", "s2"]
        one = await c.get("/sessions/s2")
        assert one.status_code == 200 and one.json()["exit_code"] == 3
        assert (await c.get("/sessions/nope")).status_code == 404
        assert (await c.get("/sessions", params={"connected": "maybe"})).status_code == 422


class _SlowStore(SqliteStore):
    """A real SQLite store whose aggregations wait until released: a query
    that runs long, without depending on the machine's speed."""

    release = threading.Event()
    entered = threading.Event()

    def aggregate(self, q: Any) -> list[dict[str, Any]]:
        self.entered.set()
        self.release.wait(10)
        return super().aggregate(q)

    def rollup_read(self, req: Any) -> Any:  # what /query's engine reads
        self.entered.set()
        self.release.wait(10)
        return super().rollup_read(req)


async def test_query_deadline_and_readiness_under_load(tmp_path: Path) -> None:
    store = _SlowStore(f"sqlite:///{tmp_path / 'slow.db'}")
    store.open()
    config = ApiConfig(query_timeout=0.5, heavy_queries=1)
    statuses: list[int] = []
    try:
        async with client(store, config) as (c, _):

            async def ask(i: int) -> None:
                r = await c.get("/query", params={"prompt": f"top {i + 1} events today"})
                statuses.append(r.status_code)
                assert r.status_code != 503 or r.json()["error"] == "query_timeout"

            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(ask, i)
                assert await trio.to_thread.run_sync(_SlowStore.entered.wait, 10)
                for path in ("/healthz", "/readyz"):
                    start = time.monotonic()
                    r = await c.get(path)
                    assert r.status_code == 200 and time.monotonic() - start < 1.0
            assert statuses == [503] * 6
    finally:
        _SlowStore.release.set()
        store.close()


async def test_openapi_lists_every_endpoint(store: Store) -> None:
    async with client(store) as (c, _):
        spec = (await c.get("/openapi.json")).json()
        got = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
        for want in [("GET", "/metrics"), ("POST", "/metrics"), ("PATCH", "/metrics/{id}"),
                     ("PUT", "/metrics/{id}"), ("DELETE", "/metrics/{id}"), ("GET", "/sessions"),
                     ("GET", "/sessions/{session}"), ("GET", "/stream"), ("GET", "/query"),
                     ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/stats"),
                     ("GET", "/openapi.json"), ("GET", "/docs")]:  # fmt: skip
            assert want in got
        assert "PointCreate" in spec["components"]["schemas"]
        r = await c.get("/docs")
        assert r.status_code == 200 and "PATCH /metrics/{id}" in r.text


async def test_every_error_is_json(store: Store) -> None:
    async with client(store) as (c, _):
        for method, path in [("GET", "/nope"), ("DELETE", "/metrics"), ("POST", "/sessions")]:
            r = await c.request(method, path)
            assert r.headers["content-type"].startswith("application/json"), path
            assert orjson.loads(r.content)["error"]


async def test_aggregate_route(store: Store) -> None:
    async with client(store) as (c, _):
        r = await c.get("/aggregate", params={"fn": "count", "by": "session"})
        assert r.status_code == 200, r.text
        rows = {row["group"]: row["count"] for row in r.json()["rows"]}
        assert rows == {"s1": 50, "s2": 1}
        r = await c.get("/aggregate", params={"fn": "max", "field": "cpu.percent",
                                              "session": "s1"})  # fmt: skip
        assert r.json()["rows"][0]["value"] == 49.0
        for params, bad in [({"fn": "median"}, "fn"), ({"fn": "avg", "bucket": "7x"}, "bucket"),
                            ({"fn": "count", "limit": 0}, "limit")]:  # fmt: skip
            r = await c.get("/aggregate", params=params)
            assert r.status_code == 422 and r.json()["parameter"] == bad, r.text
