"""The HTTP API end to end: a real ``python -m collector.api`` process on a free
127.0.0.1 port, over a real SQLite file (and real redis-servers for the Redis
cache), driven with httpx. Control messages go down the child's real stdin.

Every wait is for a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

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

pytestmark = pytest.mark.slow

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


# -- a real API process --------------------------------------------------------------------


class ApiServer:
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
        """Sum of the samples of ``name`` in /stats whose labels include ``labels``."""
        total = 0.0
        for line in self.get("/stats").text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            if all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
                total += float(m.group(3))
        return total

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
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    return seed(tmp_path_factory.mktemp("seeded") / "store.db")


@pytest.fixture(scope="module")
def api(seeded: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A read-only server shared by the tests that do not write."""
    server = start_api(tmp_path_factory.mktemp("api"), seeded, "--cache-ttl", "60")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fresh_uri(tmp_path: Path) -> str:
    return seed(tmp_path / "store.db")


@pytest.fixture
def rw_api(fresh_uri: str, tmp_path: Path) -> Iterator[ApiServer]:
    """A server over its own copy of the data, for tests that write."""
    server = start_api(tmp_path, fresh_uri, "--cache-ttl", "60")
    try:
        yield server
    finally:
        server.close()


def walk(api: ApiServer, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    pages = []
    after = None
    for _ in range(10_000):
        p = dict(params)
        if after is not None:
            p["after"] = after
        r = api.get("/metrics", params=p)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["items"])
        after = body["next"]
        if after is None:
            return pages
    raise AssertionError("pagination does not end")


def all_keys(api: ApiServer, params: dict[str, Any]) -> list[tuple[str, int]]:
    items = [d for page in walk(api, {**params, "limit": 10000}) for d in page]
    return [(d["session"], d["seq"]) for d in items]


# -- GET /metrics ----------------------------------------------------------------------------


def test_list_default_page_shape(api: ApiServer) -> None:
    r = api.get("/metrics")
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
def test_filters(api: ApiServer, params: dict[str, Any], pred: Callable[[Document], bool]) -> None:
    got = all_keys(api, params)
    assert len(got) == len(set(got))
    assert set(got) == keys(pred)


@pytest.mark.parametrize("sort", ["timestamp", "-timestamp"])
@pytest.mark.parametrize("limit", [1, 7, 225, 226, 500])
def test_pagination_walks_every_doc_once(api: ApiServer, sort: str, limit: int) -> None:
    pages = walk(api, {"sort": sort, "limit": limit})
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
def test_pagination_through_equal_timestamps(api: ApiServer, sort: str) -> None:
    pages = walk(api, {"session": "s3", "limit": 4, "sort": sort})
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    got = [d["seq"] for p in pages for d in p]
    assert sorted(got) == list(range(15)) and len(set(got)) == 15


def test_get_one_and_404s(api: ApiServer) -> None:
    first = api.get("/metrics", params={"limit": 1}).json()["items"][0]
    r = api.get(f"/metrics/{first['id']}")
    assert r.status_code == 200 and r.json() == first
    for missing in ("999999", "abc", "0", "-1", "9" * 40):
        r = api.get(f"/metrics/{missing}")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
    r = api.get("/no/such/path")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = api.client.patch("/metrics")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    r = api.client.head("/metrics/" + first["id"])
    assert r.status_code == 200 and r.content == b""


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
def test_bad_parameters_are_422_naming_them(
    api: ApiServer, path: str, params: str, param: str
) -> None:
    r = api.client.get(f"{path}?{params}")
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
def test_bad_bodies(api: ApiServer, body: bytes, status: int, param: str | None) -> None:
    for method, path in (("POST", "/metrics"), ("PUT", "/metrics/1")):
        r = api.client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == status, (method, r.text)
        err = r.json()
        assert err["error"] in ("bad_json", "bad_parameter", "bad_body") and err["detail"]
        if param is not None:
            assert err["parameter"] == param


def test_oversize_bodies_are_413(api: ApiServer) -> None:
    big = b'{"name": "x", "value": 1, "data": {"pad": "' + b"x" * (1 << 20) + b'"}}'
    r = api.client.post("/metrics", content=big)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b"x" * 65536

    r = api.client.post("/metrics", content=chunks())
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert api.get("/healthz").status_code == 200


def test_create_read_replace_delete(rw_api: ApiServer) -> None:
    api = rw_api
    before = api.get("/metrics", params={"session": "api"}).json()["items"]
    assert before == []
    r = api.client.post("/metrics", json={"name": "requests", "value": 5, "tags": ["a", "b"],
                                          "timestamp": "2026-11-21T10:00:00.5Z", "data": {"path": "/x"}})  # fmt: skip
    assert r.status_code == 201, r.text
    doc = r.json()
    assert r.headers["location"] == f"/metrics/{doc['id']}"
    assert doc["session"] == "api" and doc["kind"] == "metric" and doc["name"] == "requests"
    assert doc["value"] == 5 and doc["tags"] == ["a", "b"] and doc["data"] == {"path": "/x"}
    assert doc["timestamp"] == "2026-11-21T10:00:00.500Z"
    assert api.get(f"/metrics/{doc['id']}").json() == doc
    # The API's own write invalidated the cached (empty) listing at once.
    assert [d["id"] for d in api.get("/metrics", params={"session": "api"}).json()["items"]] == [
        doc["id"]
    ]

    r = api.client.put(
        f"/metrics/{doc['id']}", json={"name": "latency", "value": 0.25, "timestamp": BASE}
    )
    assert r.status_code == 200, r.text
    new = r.json()
    assert (new["id"], new["session"], new["seq"]) == (doc["id"], "api", doc["seq"])
    assert (new["name"], new["value"], new["tags"]) == ("latency", 0.25, [])
    assert new["timestamp"] == "2026-11-20T00:00:00.000Z" and "data" not in new
    assert api.get(f"/metrics/{doc['id']}").json() == new
    names = [d["name"] for d in api.get("/metrics", params={"session": "api"}).json()["items"]]
    assert names == ["latency"]
    assert api.get("/metrics", params={"name": "requests"}).json()["items"] == []

    # A document read back from GET can be sent back as the PUT body.
    r = api.client.put(f"/metrics/{doc['id']}", json={**new, "value": 1})
    assert r.status_code == 200 and r.json()["value"] == 1

    r = api.client.delete(f"/metrics/{doc['id']}")
    assert r.status_code == 204 and r.content == b""
    assert api.get(f"/metrics/{doc['id']}").status_code == 404
    assert api.client.delete(f"/metrics/{doc['id']}").status_code == 404
    r = api.client.put(f"/metrics/{doc['id']}", json={"name": "x", "value": 1})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert api.get("/metrics", params={"session": "api"}).json()["items"] == []

    # Epoch timestamps and the default "now".
    r = api.client.post("/metrics", json={"name": "n", "value": -1.5, "timestamp": BASE + 1.25})
    assert r.json()["timestamp"] == "2026-11-20T00:00:01.250Z"
    t0 = time.time()
    r = api.client.post("/metrics", json={"name": "n", "value": 2})
    stamp = datetime.fromisoformat(r.json()["timestamp"]).timestamp()
    assert t0 - 1 <= stamp <= time.time() + 1


# -- /query, /sessions, health, stats ----------------------------------------------------------


def q(api: ApiServer, prompt: str) -> dict[str, Any]:
    r = api.get("/query", params={"prompt": prompt})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt"] == prompt and isinstance(body["interpreted"], dict)
    return body


def test_query_prompts(api: ApiServer) -> None:
    body = q(api, "count events between 2026-11-20 and 2026-11-21")
    assert body["rows"] == [{"value": 30, "count": 30}]
    assert body["interpreted"]["params"] == {
        "fn": "count", "kind": "event", "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z",
    }  # fmt: skip

    rows = q(api, "top 2 events")["rows"]
    assert [(r["group"], r["value"]) for r in rows] == [("deploy", 20), ("crash", 10)]

    rows = q(api, "average cpu.percent of host web-1")["rows"]
    assert rows[0]["value"] == pytest.approx(4.5) and rows[0]["count"] == 120

    rows = q(api, "max mem.rss of session s1 since 2026-11-19")["rows"]
    assert rows[0]["value"] == 1119

    rows = q(api, "count samples by host")["rows"]
    assert {r["group"]: r["value"] for r in rows} == {"web-1": 135, "web-2": 60}

    rows = q(api, "top 1 hosts by avg cpu.percent")["rows"]
    assert rows[0]["group"] == "web-2" and rows[0]["value"] == pytest.approx(52.0)

    body = q(api, "latest 3 events of session s1")
    assert body["interpreted"]["endpoint"] == "/metrics"
    assert [d["seq"] for d in body["rows"]] == [139, 138, 137]
    assert all(RFC3339_MS.match(d["timestamp"]) for d in body["rows"])

    # Relative windows run against the real clock: only their shape is checked.
    body = q(api, "top 5 events today")
    assert body["interpreted"]["params"]["by"] == "name"
    assert body["interpreted"]["params"]["limit"] == "5"


def test_query_not_understood_is_422_with_examples(api: ApiServer) -> None:
    r = api.get("/query", params={"prompt": "what is the weather in Paris"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "bad_prompt" and body["parameter"] == "prompt"
    assert "Paris" in body["detail"] and "hosts" in body["detail"]
    assert "top 5 events today" in body["examples"]


def test_sessions(api: ApiServer) -> None:
    r = api.get("/sessions")
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
    assert len(api.get("/sessions", params={"limit": 1}).json()["items"]) == 1


def test_health_and_readiness(api: ApiServer) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "store": "ok",
        "cache": {"backend": "memory", "healthy": True},
    }


def test_stats_joins_ingest_text_and_own_counters(api: ApiServer) -> None:
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

    before = api.metric("deltawire_api_requests_total", route="/healthz", status="200")
    api.get("/healthz")
    api.get("/metrics", params={"limit": 0})
    after = api.metric("deltawire_api_requests_total", route="/healthz", status="200")
    assert after == before + 1
    assert api.metric("deltawire_api_requests_total", route="/metrics", status="422") >= 1
    assert api.metric("deltawire_api_request_duration_seconds_count", route="/healthz") >= after
    out = api.get("/stats").text
    for family in ("deltawire_api_cache_hits_total", "deltawire_api_cache_misses_total",
                   "deltawire_api_cache_hit_ratio", 'quantile="0.99"'):  # fmt: skip
        assert family in out
    age = api.metric("deltawire_api_ingest_stats_age_seconds")
    assert 0 <= age < DEADLINE_S


def test_bad_control_messages_are_ignored(api: ApiServer) -> None:
    api.send(b"not json\n")
    api.send(b"[1]\n\n")
    api.send({"op": "explode"})
    api.send({"op": "bump", "sessions": "s1"})
    api.send({"op": "stats", "text": 5})
    api.sync_control()
    assert api.proc.poll() is None
    assert api.get("/healthz").status_code == 200


# -- the cache ---------------------------------------------------------------------------------


def _cache_roundtrip(api: ApiServer, store_uri: str, backend: str) -> None:
    params = {"session": "s1", "kind": "event", "sort": "-timestamp", "limit": 5}

    def hits() -> float:
        return api.metric("deltawire_api_cache_hits_total", backend=backend)

    def misses() -> float:
        return api.metric("deltawire_api_cache_misses_total", backend=backend)

    r1 = api.get("/metrics", params=params)
    assert r1.status_code == 200 and r1.headers["x-cache"] == "miss"
    h0, m0 = hits(), misses()
    r2 = api.get("/metrics", params=params)
    assert r2.headers["x-cache"] == "hit" and r2.json() == r1.json()
    assert hits() == h0 + 1 and misses() == m0
    # The same query with its parameters in another order is the same entry.
    r3 = api.client.get("/metrics?limit=5&sort=-timestamp&kind=event&session=s1")
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
    stale = api.get("/metrics", params=params)
    assert stale.headers["x-cache"] == "hit" and stale.json() == r1.json()

    # A bump for other sessions and names leaves this session's answers alone.
    api.send({"op": "bump", "sessions": ["zzz"], "names": ["other"]})
    api.sync_control()
    assert api.get("/metrics", params=params).headers["x-cache"] == "hit"

    api.send({"op": "bump", "sessions": ["s1"], "names": ["deploy"]})
    m1 = misses()
    fresh = wait_for(
        lambda: (r := api.get("/metrics", params=params)).headers["x-cache"] == "miss" and r,
        "the bump to invalidate the cached answer",
    )
    assert fresh.json()["items"][0]["seq"] == 900
    assert misses() == m1 + 1
    again = api.get("/metrics", params=params)
    assert again.headers["x-cache"] == "hit" and again.json() == fresh.json()

    # Unfiltered answers and /query answers depend on every write.
    for path, p in (("/metrics", {"limit": 3}), ("/query", {"prompt": "count events by host"})):
        assert api.get(path, params=p).headers["x-cache"] in ("hit", "miss")
        assert api.get(path, params=p).headers["x-cache"] == "hit"
        api.send({"op": "bump", "sessions": ["zzz"], "names": []})
        api.sync_control()
        assert api.get(path, params=p).headers["x-cache"] == "miss"
    ratio = api.metric("deltawire_api_cache_hit_ratio", backend=backend)
    assert 0 < ratio < 1


def test_cache_in_process(rw_api: ApiServer, fresh_uri: str) -> None:
    _cache_roundtrip(rw_api, fresh_uri, "memory")


@pytest.mark.redis
def test_cache_in_redis(redis_uri: str, fresh_uri: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, fresh_uri, "--redis", redis_uri, "--cache-ttl", "60")
    try:
        assert api.get("/readyz").json()["cache"] == {"backend": "redis", "healthy": True}
        _cache_roundtrip(api, fresh_uri, "redis")
        # Another store on the same Redis never sees this store's answers.
        params = {"session": "s1", "kind": "event", "sort": "-timestamp", "limit": 5}
        assert api.get("/metrics", params=params).headers["x-cache"] == "hit"
        other_uri = f"sqlite:///{tmp_path / 'other' / 'store.db'}"
        other = start_api(tmp_path, other_uri, "--redis", redis_uri, "--cache-ttl", "60")
        try:
            r = other.get("/metrics", params=params)
            assert r.headers["x-cache"] == "miss" and r.json() == {"items": [], "next": None}
        finally:
            other.close()
    finally:
        api.close()


def test_cache_sees_api_writes_and_ttl(fresh_uri: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, fresh_uri, "--cache-ttl", "0.3")
    try:
        params = {"name": "tick"}
        assert api.get("/metrics", params=params).headers["x-cache"] == "miss"
        assert api.get("/metrics", params=params).headers["x-cache"] == "hit"
        # Expiry: the same answer becomes a miss once the TTL has passed.
        wait_for(lambda: api.get("/metrics", params=params).headers["x-cache"] == "miss", "the TTL")
    finally:
        api.close()


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
def test_redis_down_answers_from_the_store(fresh_uri: str, tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (deploy/install-test-deps.sh)")
    port = free_port()
    redis = _start_redis(tmp_path, port)
    api: ApiServer | None = None
    try:
        api = start_api(
            tmp_path, fresh_uri, "--redis", f"redis://{HOST}:{port}/0", "--cache-ttl", "60"
        )
        params = {"host": "web-2", "kind": "event"}
        expected = api.get("/metrics", params=params).json()
        assert len(expected["items"]) == 10
        assert api.get("/metrics", params=params).headers["x-cache"] == "hit"

        stop_process(redis)
        for _ in range(5):
            r = api.get("/metrics", params=params)
            assert r.status_code == 200 and r.json() == expected
            assert r.headers["x-cache"] == "miss"
        assert api.get("/query", params={"prompt": "count events"}).json()["rows"][0]["value"] == 30
        assert api.metric("deltawire_api_cache_bypassed_total") >= 5
        assert api.metric("deltawire_api_cache_up") == 0
        ready = api.get("/readyz")
        assert ready.status_code == 200 and ready.json()["cache"]["healthy"] is False
        assert api.log.read_text().count("redis cache unavailable") == 1  # logged once

        # Back: after its retry interval the cache is used again.
        redis = _start_redis(tmp_path, port)
        wait_for(
            lambda: api.get("/metrics", params=params).headers["x-cache"] == "hit",
            "redis to be used again",
        )
        assert api.metric("deltawire_api_cache_up") == 1
    finally:
        if api is not None:
            api.close()
        stop_process(redis)


# -- store failures ------------------------------------------------------------------------------


def test_broken_store_is_503_not_500(tmp_path: Path) -> None:
    uri = seed(tmp_path / "store.db")
    api = start_api(tmp_path, uri, "--cache-size", "0")
    try:
        assert api.get("/metrics").status_code == 200
        # Wreck the file under the running server (what a full or failing disk looks like).
        for suffix in ("", "-wal", "-shm"):
            p = tmp_path / f"store.db{suffix}"
            if p.exists():
                p.write_bytes(b"this is not a database" * 100)
        for path in ("/metrics?limit=5", "/metrics/1", "/sessions", "/query?prompt=count"):
            r = api.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"] == "store_unavailable"
        r = api.client.post("/metrics", json={"name": "x", "value": 1})
        assert r.status_code == 503
        # /readyz is store.ping(): reachability, which a wrecked file still passes.
        assert api.get("/readyz").status_code in (200, 503)
        assert api.get("/healthz").status_code == 200
        log = api.log.read_text()
        assert "Traceback" not in r.text
        assert log.count("store call") + log.count("store unavailable") == 1  # logged once
    finally:
        api.close()


# -- the process ----------------------------------------------------------------------------------


def test_exits_cleanly_when_stdin_closes(seeded: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, seeded)
    try:
        assert api.get("/healthz").status_code == 200
        assert api.proc.stdin is not None
        api.proc.stdin.close()
        assert api.proc.wait(timeout=DEADLINE_S) == 0
    finally:
        api.close()


def test_sigterm_is_graceful(seeded: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, seeded)
    try:
        assert api.get("/healthz").status_code == 200
        api.proc.terminate()
        assert api.proc.wait(timeout=DEADLINE_S) == 0
        assert "Traceback" not in api.log.read_text()
    finally:
        api.close()


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


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def test_help_and_unsupported_workers(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "deltawire.collector.api", "--help"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60, env=_child_env())  # fmt: skip
    assert r.returncode == 0
    for flag in ("--http", "--store", "--redis", "--cache-ttl", "--cache-size", "--log-level",
                 "--workers", "--control-stdin"):  # fmt: skip
        assert flag in r.stdout
    r = subprocess.run([sys.executable, "-m", "deltawire.collector.api", "--workers", "2"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60, env=_child_env())  # fmt: skip
    assert r.returncode == 2 and "workers" in r.stderr


def test_port_in_use_fails_fast(seeded: str, tmp_path: Path) -> None:
    api = start_api(tmp_path, seeded)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "deltawire.collector.api", "--http", f"{HOST}:{api.port}", "--store", seeded],
            capture_output=True, text=True, cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL,
            env=_child_env(),
        )  # fmt: skip
        assert r.returncode != 0
    finally:
        api.close()
