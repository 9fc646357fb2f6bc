"""The HTTP API over a real SQLite file (and real redis-servers for the Redis
cache), driven with httpx.

Most tests run the real app in-process through ``httpx.ASGITransport``: no
socket, no subprocess; control messages (stats, bump) are applied as the
control pipe applies them. A few smoke tests run a real
``python -m deltawire.collector.api`` process on a free 127.0.0.1 port, for what
only a process has: its stdin control pipe, its exit, its signals, its port,
HTTP framing (HEAD).

Every wait is for an event or a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from deltawire.collector.api import Deps, create_app, make_cache
from deltawire.collector.api.cache import cache_namespace
from deltawire.collector.api.control import apply_control, parse_control
from deltawire.collector.stores import open_store
from deltawire.collector.stores.base import encode_cursor
from deltawire.protocol import Document, Hello
from deltawire.testing.harness import wait_until
from deltawire.testing.servers import (
    HOST,
    REPO_ROOT,
    free_port,
    redis_binary,
    stop_process,
    wait_port,
)

BASE = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DEADLINE_S = 15.0
# Variables the child would otherwise pick up from the developer's environment.
_SCRUB = ("REDIS_URI", "CACHE_TTL", "CACHE_SIZE", "STORE_URI", "COLLECTOR_HTTP", "LOG_LEVEL")


# -- the data set ------------------------------------------------------------------------


def make_docs() -> list[Document]:
    docs: list[Document] = []
    s1_tags = ("env=prod", "team=a")
    for i in range(120):
        docs.append(Document("s1", i, "sample", "proc", BASE + i * 30 + 0.123, "web-1", s1_tags,
                             {"cpu": {"percent": float(i % 10)}, "mem": {"rss": 1000 + i}}))  # fmt: skip
    for j in range(20):
        name = "deploy" if j % 2 == 0 else "crash"
        docs.append(Document("s1", 120 + j, "event", name, BASE + 15 + j * 100, "web-1", s1_tags,
                             {"msg": f"e{j}"}))  # fmt: skip
    s2_tags = ("env=dev", "team=a")
    for i in range(60):
        docs.append(Document("s2", i, "sample", "proc", BASE + i * 60 + 0.5, "web-2", s2_tags,
                             {"cpu": {"percent": 50.0 + i % 5}}))  # fmt: skip
    for j in range(10):
        docs.append(Document("s2", 60 + j, "event", "deploy", BASE + 7 + j * 300, "web-2", s2_tags,
                             None))  # fmt: skip
    docs.append(
        Document("s2", 70, "session", "end", BASE + 4000, "web-2", s2_tags, {"exit_code": 3})
    )
    # Same timestamp on purpose: pages must break ties by id.
    for i in range(15):
        docs.append(Document("s3", i, "sample", "tick", BASE + 1000.0, "web-1", (), {"n": i}))
    return docs


DOCS = make_docs()


def keys(pred: Callable[[Document], bool] = lambda d: True) -> set[tuple[str, int]]:
    return {(d.session, d.seq) for d in DOCS if pred(d)}


def seed(path: Path) -> str:
    uri = f"sqlite:///{path}"
    store = open_store(uri)
    store.open()
    try:
        store.session_connected(
            Hello(session="s1", host="web-1", agent="wd/1", tags=("env=prod",)), BASE - 1
        )
        store.session_connected(Hello(session="s2", host="web-2", agent="wd/1"), BASE - 1)
        store.write_batch(DOCS)
    finally:
        store.close()
    return uri


# -- the app in-process ----------------------------------------------------------------------


def stats_metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in a /stats text whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        if all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            total += float(m.group(3))
    return total


class Api:
    """The real app over a real store, in-process; ``client`` is an
    ``httpx.AsyncClient`` on ``httpx.ASGITransport``."""

    def __init__(self, client: httpx.AsyncClient, deps: Deps) -> None:
        self.client, self.deps = client, deps

    async def get(self, path: str, params: Any = None) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def send(self, msg: dict[str, Any]) -> None:
        """A control message, parsed and applied as the API process applies
        what its control pipe reads (``__main__``): done when this returns."""
        parsed = parse_control(orjson.dumps(msg))
        await apply_control(parsed, self.deps.cache, self.deps.ingest)
        if parsed["op"] == "bump":
            self.deps.hub.wake()

    async def metric(self, name: str, **labels: str) -> float:
        return stats_metric((await self.get("/stats")).text, name, **labels)


@asynccontextmanager
async def in_process(
    store_uri: str, *, redis: str | None = None, ttl: float = 60.0, size: int = 1024
) -> AsyncIterator[Api]:
    """The app as ``python -m deltawire.collector.api`` assembles it (store,
    cache, Deps, routes), served through ``httpx.ASGITransport``."""
    store = open_store(store_uri)
    store.open()
    cache = make_cache(redis, ttl=ttl, size=size, namespace=cache_namespace(store_uri, ""))
    try:
        deps = Deps(store, cache)
        transport = httpx.ASGITransport(app=create_app(deps))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, deps)
    finally:
        await cache.aclose()
        store.close()


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Until ``check()`` returns something truthy (a TTL running out, a Redis
    coming back: time and another process, which no event announces)."""
    with anyio.move_on_after(DEADLINE_S):
        while not (value := await check()):
            await anyio.sleep(0.02)
        return value
    raise AssertionError(f"timed out after {DEADLINE_S}s waiting for {what}")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    return seed(tmp_path_factory.mktemp("seeded") / "store.db")


@pytest.fixture
async def api(seeded: str) -> AsyncIterator[Api]:
    """The app over the shared data, for the tests that do not write."""
    async with in_process(seeded) as app:
        yield app


@pytest.fixture
def fresh_uri(tmp_path: Path) -> str:
    return seed(tmp_path / "store.db")


@pytest.fixture
async def rw_api(fresh_uri: str) -> AsyncIterator[Api]:
    """The app over its own copy of the data, for tests that write."""
    async with in_process(fresh_uri) as app:
        yield app


async def walk(api: Api, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    pages = []
    after = None
    for _ in range(10_000):
        p = dict(params)
        if after is not None:
            p["after"] = after
        r = await api.get("/metrics", params=p)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["items"])
        after = body["next"]
        if after is None:
            return pages
    raise AssertionError("pagination does not end")


async def all_keys(api: Api, params: dict[str, Any]) -> list[tuple[str, int]]:
    items = [d for page in await walk(api, {**params, "limit": 10000}) for d in page]
    return [(d["session"], d["seq"]) for d in items]


# -- GET /metrics ----------------------------------------------------------------------------


async def test_list_default_page_shape(api: Api) -> None:
    r = await api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"items", "next"}
    assert len(body["items"]) == 100 and body["next"] is not None
    first = body["items"][0]
    assert set(first) >= {"id", "session", "seq", "kind", "name", "host", "tags", "timestamp"}
    assert isinstance(first["id"], str)
    for d in body["items"]:
        assert RFC3339_MS.match(d["timestamp"]), d["timestamp"]
    stamps = [d["timestamp"] for d in body["items"]]
    assert stamps == sorted(stamps)
    assert first["timestamp"] == "2026-11-20T00:00:00.123Z"  # s1 seq 0, the oldest
    assert (first["session"], first["seq"], first["tags"]) == ("s1", 0, ["env=prod", "team=a"])
    assert first["data"] == {"cpu": {"percent": 0.0}, "mem": {"rss": 1000}}
    assert "value" not in first


@pytest.mark.parametrize(
    ("params", "pred"),
    [
        ({"session": "s1"}, lambda d: d.session == "s1"),
        ({"name": "deploy"}, lambda d: d.name == "deploy"),
        ({"kind": "event"}, lambda d: d.kind == "event"),
        ({"kind": "session"}, lambda d: d.kind == "session"),
        ({"host": "web-1"}, lambda d: d.host == "web-1"),
        ({"tag": "env=prod"}, lambda d: "env=prod" in d.tags),
        ({"tag": ["team=a", "env=dev"]}, lambda d: {"team=a", "env=dev"} <= set(d.tags)),
        ({"tag": ["env=prod", "env=dev"]}, lambda d: False),
        ({"from": "2026-11-20T01:00:00Z"}, lambda d: d.ts >= BASE + 3600),
        ({"from": "2026-11-20T02:00:00+01:00"}, lambda d: d.ts >= BASE + 3600),
        ({"to": str(BASE + 600)}, lambda d: d.ts < BASE + 600),
        ({"from": str(BASE + 600), "to": "2026-11-20T00:20:00.000Z"}, lambda d: BASE + 600 <= d.ts < BASE + 1200),
        (
            {"session": "s1", "kind": "event", "name": "crash", "from": "2026-11-20T00:10:00Z"},
            lambda d: (d.session, d.kind, d.name) == ("s1", "event", "crash") and d.ts >= BASE + 600,
        ),
        ({"session": "nope"}, lambda d: False),
    ],
)  # fmt: skip
async def test_filters(api: Api, params: dict[str, Any], pred: Callable[[Document], bool]) -> None:
    got = await all_keys(api, params)
    assert len(got) == len(set(got))
    assert set(got) == keys(pred)


@pytest.mark.parametrize("sort", ["timestamp", "-timestamp"])
@pytest.mark.parametrize("limit", [1, 7, 225, 226, 500])
async def test_pagination_walks_every_doc_once(api: Api, sort: str, limit: int) -> None:
    pages = await walk(api, {"sort": sort, "limit": limit})
    items = [d for page in pages for d in page]
    got = [(d["session"], d["seq"]) for d in items]
    assert len(got) == len(DOCS) and set(got) == keys()
    # Every page but the last is full; "next" is null exactly when nothing follows,
    # so a last page that is exactly full still ends the walk.
    assert all(len(p) == limit for p in pages[:-1])
    assert 0 < len(pages[-1]) <= limit
    assert len(pages) == -(-len(DOCS) // limit)
    order = [(d["timestamp"], int(d["id"])) for d in items]
    assert order == sorted(order, reverse=sort == "-timestamp")


@pytest.mark.parametrize("sort", ["timestamp", "-timestamp"])
async def test_pagination_through_equal_timestamps(api: Api, sort: str) -> None:
    pages = await walk(api, {"session": "s3", "limit": 4, "sort": sort})
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    got = [d["seq"] for p in pages for d in p]
    assert sorted(got) == list(range(15)) and len(set(got)) == 15


async def test_get_one_and_404s(api: Api) -> None:
    first = (await api.get("/metrics", params={"limit": 1})).json()["items"][0]
    r = await api.get(f"/metrics/{first['id']}")
    assert r.status_code == 200 and r.json() == first
    for missing in ("999999", "abc", "0", "-1", "9" * 40):
        r = await api.get(f"/metrics/{missing}")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
    r = await api.get("/no/such/path")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await api.client.patch("/metrics")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    r = await api.client.head("/metrics/" + first["id"])
    assert r.status_code == 200  # its empty body is the server's part: test_process_smoke


_JUNK_CURSOR = encode_cursor(BASE, "not-a-rowid")


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/metrics", "limit=0", "limit"),
        ("/metrics", "limit=10001", "limit"),
        ("/metrics", "limit=ten", "limit"),
        ("/metrics", "limit=-1", "limit"),
        ("/metrics", "limit=1.5", "limit"),
        ("/metrics", "limit=1&limit=2", "limit"),
        ("/metrics", "sort=name", "sort"),
        ("/metrics", "sort=", "sort"),
        ("/metrics", "from=yesterday", "from"),
        ("/metrics", "from=2026-13-01T00:00:00Z", "from"),
        ("/metrics", "from=2026-11-20T00:00:00+01:00", "from"),  # '+' decoded as a space
        ("/metrics", "to=nan", "to"),
        ("/metrics", "to=-5", "to"),
        ("/metrics", "to=1e300", "to"),
        ("/metrics", "from=2026-11-21&to=2026-11-20", "to"),
        ("/metrics", "after=garbage", "after"),
        ("/metrics", "after=WzEsMl0", "after"),  # [1,2]: base64 JSON, but not a cursor
        ("/metrics", f"after={_JUNK_CURSOR}", "after"),  # a cursor, but not of this store
        ("/metrics", "kind=bogus", "kind"),
        ("/metrics", "session=", "session"),
        ("/metrics", "host=" + "h" * 300, "host"),
        ("/metrics", "tag=", "tag"),
        ("/metrics", "limt=5", "limt"),
        ("/metrics/1", "x=1", "x"),
        ("/sessions", "limit=0", "limit"),
        ("/sessions", "limit=x", "limit"),
        ("/query", "", "prompt"),
        ("/query", "prompt=", "prompt"),
        ("/query", "prompt=a&prompt=b", "prompt"),
    ],
)
async def test_bad_parameters_are_422_naming_them(
    api: Api, path: str, params: str, param: str
) -> None:
    r = await api.client.get(f"{path}?{params}")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "bad_parameter"
    assert body["parameter"] == param
    assert param in body["detail"]


# -- writes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{", 400, None),
        (b"", 400, None),
        (b"   ", 400, None),
        (b"\xff\xfe", 400, None),
        (b'{"name": "x", "value": 1', 400, None),
        (b"[1, 2]", 422, "body"),
        (b'"text"', 422, "body"),
        (b'{"value": 1}', 422, "name"),
        (b'{"name": "", "value": 1}', 422, "name"),
        (b'{"name": 5, "value": 1}', 422, "name"),
        (b'{"name": "x"}', 422, "value"),
        (b'{"name": "x", "value": "3"}', 422, "value"),
        (b'{"name": "x", "value": true}', 422, "value"),
        (b'{"name": "x", "value": null}', 422, "value"),
        (b'{"name": "x", "value": 9223372036854775808}', 422, "value"),
        (b'{"name": "x", "value": 1, "tags": "a"}', 422, "tags"),
        (b'{"name": "x", "value": 1, "tags": [1]}', 422, "tags"),
        (b'{"name": "x", "value": 1, "timestamp": "soon"}', 422, "timestamp"),
        (b'{"name": "x", "value": 1, "timestamp": -1}', 422, "timestamp"),
        (b'{"name": "x", "value": 1, "timestamp": true}', 422, "timestamp"),
        (b'{"name": "x", "value": 1, "data": [1]}', 422, "data"),
        (b'{"name": "x", "value": 1, "colour": "red"}', 422, "colour"),
    ],
)
async def test_bad_bodies(api: Api, body: bytes, status: int, param: str | None) -> None:
    for method, path in (("POST", "/metrics"), ("PUT", "/metrics/1")):
        r = await api.client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == status, (method, r.text)
        err = r.json()
        assert err["error"] in ("bad_json", "bad_parameter", "bad_body") and err["detail"]
        if param is not None:
            assert err["parameter"] == param


async def test_oversize_bodies_are_413(api: Api) -> None:
    big = b'{"name": "x", "value": 1, "data": {"pad": "' + b"x" * (1 << 20) + b'"}}'
    r = await api.client.post("/metrics", content=big)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b"x" * 65536

    r = await api.client.post("/metrics", content=chunks())
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert (await api.get("/healthz")).status_code == 200


async def test_create_read_replace_delete(rw_api: Api) -> None:
    api = rw_api
    before = (await api.get("/metrics", params={"session": "api"})).json()["items"]
    assert before == []
    r = await api.client.post("/metrics", json={"name": "requests", "value": 5, "tags": ["a", "b"],
                                          "timestamp": "2026-11-21T10:00:00.5Z", "data": {"path": "/x"}})  # fmt: skip
    assert r.status_code == 201, r.text
    doc = r.json()
    assert r.headers["location"] == f"/metrics/{doc['id']}"
    assert doc["session"] == "api" and doc["kind"] == "metric" and doc["name"] == "requests"
    assert doc["value"] == 5 and doc["tags"] == ["a", "b"] and doc["data"] == {"path": "/x"}
    assert doc["timestamp"] == "2026-11-21T10:00:00.500Z"
    assert (await api.get(f"/metrics/{doc['id']}")).json() == doc
    # The API's own write invalidated the cached (empty) listing at once.
    assert [
        d["id"] for d in (await api.get("/metrics", params={"session": "api"})).json()["items"]
    ] == [doc["id"]]

    r = await api.client.put(
        f"/metrics/{doc['id']}", json={"name": "latency", "value": 0.25, "timestamp": BASE}
    )
    assert r.status_code == 200, r.text
    new = r.json()
    assert (new["id"], new["session"], new["seq"]) == (doc["id"], "api", doc["seq"])
    assert (new["name"], new["value"], new["tags"]) == ("latency", 0.25, [])
    assert new["timestamp"] == "2026-11-20T00:00:00.000Z" and "data" not in new
    assert (await api.get(f"/metrics/{doc['id']}")).json() == new
    names = [
        d["name"] for d in (await api.get("/metrics", params={"session": "api"})).json()["items"]
    ]
    assert names == ["latency"]
    assert (await api.get("/metrics", params={"name": "requests"})).json()["items"] == []

    # A document read back from GET can be sent back as the PUT body.
    r = await api.client.put(f"/metrics/{doc['id']}", json={**new, "value": 1})
    assert r.status_code == 200 and r.json()["value"] == 1

    r = await api.client.delete(f"/metrics/{doc['id']}")
    assert r.status_code == 204 and r.content == b""
    assert (await api.get(f"/metrics/{doc['id']}")).status_code == 404
    assert (await api.client.delete(f"/metrics/{doc['id']}")).status_code == 404
    r = await api.client.put(f"/metrics/{doc['id']}", json={"name": "x", "value": 1})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert (await api.get("/metrics", params={"session": "api"})).json()["items"] == []

    # Epoch timestamps and the default "now".
    r = await api.client.post(
        "/metrics", json={"name": "n", "value": -1.5, "timestamp": BASE + 1.25}
    )
    assert r.json()["timestamp"] == "2026-11-20T00:00:01.250Z"
    t0 = time.time()
    r = await api.client.post("/metrics", json={"name": "n", "value": 2})
    stamp = datetime.fromisoformat(r.json()["timestamp"]).timestamp()
    assert t0 - 1 <= stamp <= time.time() + 1


# -- /query, /sessions, health, stats ----------------------------------------------------------


async def q(api: Api, prompt: str) -> dict[str, Any]:
    r = await api.get("/query", params={"prompt": prompt})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt"] == prompt and isinstance(body["interpreted"], dict)
    return body


async def test_query_prompts(api: Api) -> None:
    body = await q(api, "count events between 2026-11-20 and 2026-11-21")
    assert body["rows"] == [{"value": 30, "count": 30}]
    assert body["interpreted"]["params"] == {
        "fn": "count", "kind": "event", "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z",
    }  # fmt: skip

    rows = (await q(api, "top 2 events"))["rows"]
    assert [(r["group"], r["value"]) for r in rows] == [("deploy", 20), ("crash", 10)]

    rows = (await q(api, "average cpu.percent of host web-1"))["rows"]
    assert rows[0]["value"] == pytest.approx(4.5) and rows[0]["count"] == 120

    rows = (await q(api, "max mem.rss of session s1 since 2026-11-19"))["rows"]
    assert rows[0]["value"] == 1119

    rows = (await q(api, "count samples by host"))["rows"]
    assert {r["group"]: r["value"] for r in rows} == {"web-1": 135, "web-2": 60}

    rows = (await q(api, "top 1 hosts by avg cpu.percent"))["rows"]
    assert rows[0]["group"] == "web-2" and rows[0]["value"] == pytest.approx(52.0)

    body = await q(api, "latest 3 events of session s1")
    assert body["interpreted"]["endpoint"] == "/metrics"
    assert [d["seq"] for d in body["rows"]] == [139, 138, 137]
    assert all(RFC3339_MS.match(d["timestamp"]) for d in body["rows"])

    # Relative windows run against the real clock: only their shape is checked.
    body = await q(api, "top 5 events today")
    assert body["interpreted"]["params"]["by"] == "name"
    assert body["interpreted"]["params"]["limit"] == "5"


async def test_query_not_understood_is_422_with_examples(api: Api) -> None:
    r = await api.get("/query", params={"prompt": "what is the weather in Paris"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "bad_prompt" and body["parameter"] == "prompt"
    assert "Paris" in body["detail"] and "hosts" in body["detail"]
    assert "top 5 events today" in body["examples"]


async def test_sessions(api: Api) -> None:
    r = await api.get("/sessions")
    assert r.status_code == 200
    items = {s["session"]: s for s in r.json()["items"]}
    assert set(items) == {"s1", "s2", "s3"}
    s1, s2 = items["s1"], items["s2"]
    assert (s1["host"], s1["agent"], s1["tags"], s1["connected"]) == (
        "web-1",
        "wd/1",
        ["env=prod"],
        True,
    )
    assert s1["ended"] is None
    assert s2["ended"] == "2026-11-20T01:06:40.000Z" and s2["exit_code"] == 3
    for s in items.values():
        assert RFC3339_MS.match(s["first_seen"]) and RFC3339_MS.match(s["last_seen"])
    assert len((await api.get("/sessions", params={"limit": 1})).json()["items"]) == 1


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    r = await api.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "store": "ok",
        "cache": {"backend": "memory", "healthy": True},
    }


async def test_stats_joins_ingest_text_and_own_counters(api: Api) -> None:
    text = "# HELP deltawire_ingest_docs_total Documents.\n# TYPE deltawire_ingest_docs_total counter\n"
    await api.send({"op": "stats", "text": text + "deltawire_ingest_docs_total 42\n"})
    r = await api.get("/stats")
    assert "deltawire_ingest_docs_total 42" in r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert text in r.text
    await api.send({"op": "stats", "text": text + "deltawire_ingest_docs_total 43\n"})
    assert "deltawire_ingest_docs_total 43" in (await api.get("/stats")).text
    assert "deltawire_ingest_docs_total 42" not in (await api.get("/stats")).text

    before = await api.metric("deltawire_api_requests_total", route="/healthz", status="200")
    await api.get("/healthz")
    await api.get("/metrics", params={"limit": 0})
    after = await api.metric("deltawire_api_requests_total", route="/healthz", status="200")
    assert after == before + 1
    assert await api.metric("deltawire_api_requests_total", route="/metrics", status="422") >= 1
    assert (
        await api.metric("deltawire_api_request_duration_seconds_count", route="/healthz") >= after
    )
    out = (await api.get("/stats")).text
    for family in ("deltawire_api_cache_hits_total", "deltawire_api_cache_misses_total",
                   "deltawire_api_cache_hit_ratio", 'quantile="0.99"'):  # fmt: skip
        assert family in out
    age = await api.metric("deltawire_api_ingest_stats_age_seconds")
    assert 0 <= age < DEADLINE_S


# -- the cache ---------------------------------------------------------------------------------


async def _cache_roundtrip(api: Api, store_uri: str, backend: str) -> None:
    params = {"session": "s1", "kind": "event", "sort": "-timestamp", "limit": 5}

    async def hits() -> float:
        return await api.metric("deltawire_api_cache_hits_total", backend=backend)

    async def misses() -> float:
        return await api.metric("deltawire_api_cache_misses_total", backend=backend)

    r1 = await api.get("/metrics", params=params)
    assert r1.status_code == 200 and r1.headers["x-cache"] == "miss"
    # A listing is kept from its second computation on (admission.py): most
    # URLs of pages are asked once.
    assert (await api.get("/metrics", params=params)).headers["x-cache"] == "miss"
    h0, m0 = await hits(), await misses()
    r2 = await api.get("/metrics", params=params)
    assert r2.headers["x-cache"] == "hit" and r2.json() == r1.json()
    assert await hits() == h0 + 1 and await misses() == m0
    # The same query with its parameters in another order is the same entry.
    r3 = await api.client.get("/metrics?limit=5&sort=-timestamp&kind=event&session=s1")
    assert r3.headers["x-cache"] == "hit"

    # Another process (the ingest) writes; until it says so, the cache answers.
    writer = open_store(store_uri)
    writer.open()
    try:
        writer.write_batch(
            [Document("s1", 900, "event", "deploy", BASE + 99_999, "web-1", (), None)]
        )
    finally:
        writer.close()
    stale = await api.get("/metrics", params=params)
    assert stale.headers["x-cache"] == "hit" and stale.json() == r1.json()

    # A bump for other sessions and names leaves this session's answers alone.
    await api.send({"op": "bump", "sessions": ["zzz"], "names": ["other"]})
    assert (await api.get("/metrics", params=params)).headers["x-cache"] == "hit"

    await api.send({"op": "bump", "sessions": ["s1"], "names": ["deploy"]})
    m1 = await misses()
    fresh = await api.get("/metrics", params=params)  # the bump is applied: a miss at once
    assert fresh.headers["x-cache"] == "miss"
    assert fresh.json()["items"][0]["seq"] == 900
    assert await misses() == m1 + 1
    again = await api.get("/metrics", params=params)
    assert again.headers["x-cache"] == "hit" and again.json() == fresh.json()

    # Unfiltered answers and /query answers depend on every write.
    for path, p in (("/metrics", {"limit": 3}), ("/query", {"prompt": "count events by host"})):
        first = (await api.get(path, params=p)).headers["x-cache"]
        assert first in ("hit", "miss")
        if path == "/metrics" and first == "miss":  # a listing: kept once asked again
            assert (await api.get(path, params=p)).headers["x-cache"] == "miss"
        assert (await api.get(path, params=p)).headers["x-cache"] == "hit"
        await api.send({"op": "bump", "sessions": ["zzz"], "names": []})
        assert (await api.get(path, params=p)).headers["x-cache"] == "miss"
    ratio = await api.metric("deltawire_api_cache_hit_ratio", backend=backend)
    assert 0 < ratio < 1


async def test_cache_in_process(rw_api: Api, fresh_uri: str) -> None:
    await _cache_roundtrip(rw_api, fresh_uri, "memory")


def on_asyncio(fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn`` on asyncio, as the API process runs: the Redis cache speaks
    ``redis.asyncio``, which trio (these tests' loop otherwise) cannot drive."""
    anyio.run(fn, backend="asyncio")


@pytest.mark.redis
def test_cache_in_redis(redis_uri: str, fresh_uri: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with in_process(fresh_uri, redis=redis_uri) as api:
            assert (await api.get("/readyz")).json()["cache"] == {
                "backend": "redis",
                "healthy": True,
            }
            await _cache_roundtrip(api, fresh_uri, "redis")
            # Another store on the same Redis never sees this store's answers.
            params = {"session": "s1", "kind": "event", "sort": "-timestamp", "limit": 5}
            assert (await api.get("/metrics", params=params)).headers["x-cache"] == "hit"
            other_uri = f"sqlite:///{tmp_path / 'other' / 'store.db'}"
            (tmp_path / "other").mkdir()
            async with in_process(other_uri, redis=redis_uri) as other:
                r = await other.get("/metrics", params=params)
                assert r.headers["x-cache"] == "miss" and r.json() == {"items": [], "next": None}

    on_asyncio(body)


async def test_cache_sees_api_writes_and_ttl(fresh_uri: str) -> None:
    async with in_process(fresh_uri, ttl=0.3) as api:
        params = {"name": "tick"}
        for want in ("miss", "miss", "hit"):  # kept once asked again (admission.py)
            assert (await api.get("/metrics", params=params)).headers["x-cache"] == want

        # Expiry: the same answer becomes a miss once the TTL has passed.
        async def missed() -> bool:
            return (await api.get("/metrics", params=params)).headers["x-cache"] == "miss"

        await eventually(missed, "the TTL")


def _start_redis(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    data = workdir / f"redis-{port}"
    data.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [redis_binary(), "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(data), "--daemonize", "no", "--loglevel", "warning"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(HOST, port, DEADLINE_S, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


@pytest.mark.redis
def test_redis_down_answers_from_the_store(
    fresh_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (deploy/install-test-deps.sh)")
    port = free_port()
    redis = _start_redis(tmp_path, port)

    async def body() -> None:
        nonlocal redis
        async with in_process(fresh_uri, redis=f"redis://{HOST}:{port}/0") as api:
            params = {"host": "web-2", "kind": "event"}
            expected = (await api.get("/metrics", params=params)).json()
            assert len(expected["items"]) == 10
            await api.get("/metrics", params=params)  # asked again: now kept (admission.py)
            assert (await api.get("/metrics", params=params)).headers["x-cache"] == "hit"

            stop_process(redis)

            async def down() -> bool:  # the near cache's subscription breaks first
                return not api.deps.cache.healthy()

            await eventually(down, "the near cache to stop answering")
            for _ in range(5):
                r = await api.get("/metrics", params=params)
                assert r.status_code == 200 and r.json() == expected
                assert r.headers["x-cache"] == "miss"
            r = await api.get("/query", params={"prompt": "count events"})
            assert r.json()["rows"][0]["value"] == 30
            assert await api.metric("deltawire_api_cache_bypassed_total") >= 5
            assert await api.metric("deltawire_api_cache_up") == 0
            ready = await api.get("/readyz")
            assert ready.status_code == 200 and ready.json()["cache"]["healthy"] is False
            logged = [r for r in caplog.records if "redis cache unavailable" in r.getMessage()]
            assert len(logged) == 1  # logged once

            # Back: after its retry interval the cache is used again.
            redis = _start_redis(tmp_path, port)

            async def hit() -> bool:
                return (await api.get("/metrics", params=params)).headers["x-cache"] == "hit"

            await eventually(hit, "redis to be used again")
            assert await api.metric("deltawire_api_cache_up") == 1

    try:
        with caplog.at_level(logging.WARNING):
            on_asyncio(body)
    finally:
        stop_process(redis)


# -- store failures ------------------------------------------------------------------------------


async def test_broken_store_is_503_not_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = seed(tmp_path / "store.db")
    caplog.set_level(logging.WARNING)
    async with in_process(uri, size=0) as api:
        assert (await api.get("/metrics")).status_code == 200
        # Wreck the file under the running app (what a full or failing disk looks like).
        for suffix in ("", "-wal", "-shm"):
            p = tmp_path / f"store.db{suffix}"
            if p.exists():
                p.write_bytes(b"this is not a database" * 100)
        for path in ("/metrics?limit=5", "/metrics/1", "/sessions", "/query?prompt=count"):
            r = await api.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"] == "store_unavailable"
        r = await api.client.post("/metrics", json={"name": "x", "value": 1})
        assert r.status_code == 503
        # /readyz is store.ping(): reachability, which a wrecked file still passes.
        assert (await api.get("/readyz")).status_code in (200, 503)
        assert (await api.get("/healthz")).status_code == 200
        assert "Traceback" not in r.text
        messages = [rec.getMessage() for rec in caplog.records]
        logged = [m for m in messages if m.startswith(("store call", "store unavailable"))]
        assert len(logged) == 1, messages  # logged once


# -- smoke tests of the real process -------------------------------------------------------------


class ApiServer:
    """A real ``python -m deltawire.collector.api`` process; control messages go
    down its real stdin."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.client = httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10)

    def get(self, path: str, params: Any = None) -> httpx.Response:
        return self.client.get(path, params=params)

    def send(self, msg: dict[str, Any] | bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(msg if isinstance(msg, bytes) else orjson.dumps(msg) + b"\n")
        self.proc.stdin.flush()

    def metric(self, name: str, **labels: str) -> float:
        return stats_metric(self.get("/stats").text, name, **labels)

    def sync_control(self) -> None:
        """Wait until every control message sent so far has been applied: they are
        applied in order, so seeing a fresh stats marker in /stats proves it."""
        marker = f"test_marker_{time.monotonic_ns()}"
        self.send({"op": "stats", "text": f"# TYPE {marker} gauge\n{marker} 1\n"})
        wait_for(lambda: marker in self.get("/stats").text, "control messages to be applied")

    def close(self) -> None:
        self.client.close()
        try:
            stop_process(self.proc)
        finally:
            if self.proc.stdin is not None:
                self.proc.stdin.close()


def wait_for(cond: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after the deadline."""
    return wait_until(cond, deadline_s, what)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def start_api(
    workdir: Path, store_uri: str, *args: str, control: bool = True, stdin: int | None = None
) -> ApiServer:
    env = _child_env()
    last: Exception | None = None
    for _attempt in range(3):  # the free port may be taken before the child binds it
        port = free_port()
        log = workdir / f"api-{port}.log"
        argv = [sys.executable, "-m", "deltawire.collector.api", "--http", f"{HOST}:{port}",
                "--store", store_uri, "--log-format", "text", *args]  # fmt: skip
        if control:
            argv.append("--control-stdin")
        with open(log, "ab") as log_f:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is None else stdin,
                stdout=log_f,
                stderr=subprocess.STDOUT,
                cwd=workdir,  # no stray .env file from the repository
                env=env,
            )
        try:
            wait_port(HOST, port, DEADLINE_S, proc)
        except (RuntimeError, TimeoutError) as e:
            stop_process(proc)
            last = RuntimeError(f"{e}\n{log.read_text(errors='replace')}")
            continue
        return ApiServer(proc, port, log)
    assert last is not None
    raise last


@pytest.fixture(scope="module")
def process(seeded: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One real API process shared by the smoke tests that leave it running."""
    server = start_api(tmp_path_factory.mktemp("api"), seeded, "--cache-ttl", "60")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow
def test_process_smoke(process: ApiServer) -> None:
    """The real server answers as the in-process app does; HEAD has no body."""
    api = process
    r = api.get("/metrics", params={"limit": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    first = r.json()["items"][0]
    assert first["timestamp"] == "2026-11-20T00:00:00.123Z"
    r = api.client.head("/metrics/" + first["id"])
    assert r.status_code == 200 and r.content == b""
    assert api.get("/no/such/path").json()["error"] == "not_found"


@pytest.mark.slow
def test_control_pipe_stats_reach_stats(process: ApiServer) -> None:
    """The ingest's stats text, sent down the real stdin, shows in /stats."""
    api = process
    text = "# HELP deltawire_ingest_docs_total Documents.\n# TYPE deltawire_ingest_docs_total counter\n"
    api.send({"op": "stats", "text": text + "deltawire_ingest_docs_total 42\n"})
    r = wait_for(
        lambda: (r := api.get("/stats")) and "deltawire_ingest_docs_total 42" in r.text and r,
        "the ingest stats text in /stats",
    )
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert text in r.text
    api.send({"op": "stats", "text": text + "deltawire_ingest_docs_total 43\n"})
    wait_for(lambda: "deltawire_ingest_docs_total 43" in api.get("/stats").text, "the newer stats")
    assert "deltawire_ingest_docs_total 42" not in api.get("/stats").text
    age = api.metric("deltawire_api_ingest_stats_age_seconds")
    assert 0 <= age < DEADLINE_S


@pytest.mark.slow
def test_control_pipe_bump_invalidates(process: ApiServer) -> None:
    """A bump sent down the real stdin invalidates the cached answer."""
    api = process
    params = {"session": "s2", "kind": "event", "limit": 3}
    assert api.get("/metrics", params=params).headers["x-cache"] in ("hit", "miss")
    api.get("/metrics", params=params)  # asked again: kept (admission.py)
    assert api.get("/metrics", params=params).headers["x-cache"] == "hit"
    api.send({"op": "bump", "sessions": ["s2"], "names": ["deploy"]})
    api.sync_control()
    assert api.get("/metrics", params=params).headers["x-cache"] == "miss"


@pytest.mark.slow
def test_bad_control_messages_are_ignored(process: ApiServer) -> None:
    api = process
    api.send(b"not json\n")
    api.send(b"[1]\n\n")
    api.send({"op": "explode"})
    api.send({"op": "bump", "sessions": "s1"})
    api.send({"op": "stats", "text": 5})
    api.sync_control()
    assert api.proc.poll() is None
    assert api.get("/healthz").status_code == 200


@pytest.mark.slow
def test_exits_cleanly_when_stdin_closes(seeded: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, seeded)
    try:
        assert api.get("/healthz").status_code == 200
        assert api.proc.stdin is not None
        api.proc.stdin.close()
        assert api.proc.wait(timeout=DEADLINE_S) == 0
    finally:
        api.close()


@pytest.mark.slow
def test_sigterm_is_graceful(seeded: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, seeded)
    try:
        assert api.get("/healthz").status_code == 200
        api.proc.terminate()
        assert api.proc.wait(timeout=DEADLINE_S) == 0
        assert "Traceback" not in api.log.read_text()
    finally:
        api.close()


@pytest.mark.slow
def test_started_by_hand_ignores_stdin_eof(seeded: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, seeded, control=False, stdin=subprocess.DEVNULL)
    try:
        # stdin is /dev/null (EOF at once); without --control-stdin it keeps serving.
        for _ in range(20):
            assert api.get("/healthz").status_code == 200
        assert api.get("/metrics", params={"limit": 1}).status_code == 200
        assert api.proc.poll() is None
    finally:
        api.close()


@pytest.mark.slow
def test_help_names_every_flag(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "deltawire.collector.api", "--help"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60, env=_child_env())  # fmt: skip
    assert r.returncode == 0
    for flag in ("--http", "--store", "--redis", "--cache-ttl", "--cache-size", "--log-level",
                 "--workers", "--worker", "--peers", "--control-stdin"):  # fmt: skip
        assert flag in r.stdout
    # --workers' own checks: tests/api/test_api_workers.py


@pytest.mark.slow
def test_port_in_use_fails_fast(process: ApiServer, seeded: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "deltawire.collector.api", "--http", f"{HOST}:{process.port}", "--store", seeded],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL,
        env=_child_env(),
    )  # fmt: skip
    assert r.returncode != 0
