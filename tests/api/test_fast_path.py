"""The fast path for cached GETs (fast.py): the same answer, headers and
counters as the full path, and never a way around keys, rate limits or an
invalidation."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltawire.collector.api import ApiConfig
from deltawire.collector.api.auth import parse_keys
from deltawire.collector.stores import Store
from deltawire.protocol import Document

from .inproc import bearer, client, sqlite_store

T0 = 1_790_000_000.0
URL = "/metrics?name=proc&limit=5"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = sqlite_store(tmp_path)
    s.write_batch(
        [Document("s1", i, "sample", "proc", T0 + i, "web-1", (), {"v": i}) for i in range(20)]
    )
    return s


async def test_a_cached_get_is_the_same_answer(store: Store) -> None:
    async with client(store) as (c, deps):
        for _ in range(2):  # computed twice: a listing is kept once asked again (admission.py)
            first = await c.get(URL)
            assert first.headers["x-cache"] == "miss"
        hits = deps.cache.stats.hits
        second = await c.get(URL)
        assert second.headers["x-cache"] == "hit" and second.content == first.content
        assert second.headers["content-type"] == first.headers["content-type"]
        assert int(second.headers["content-length"]) == len(first.content)
        assert deps.cache.stats.hits == hits + 1
        # Counted like any answer of the route.
        assert deps.stats.requests[("/metrics", "GET", 200)] == 3
        # A HEAD, a new URL, and the same URL after a bump take the full path.
        assert (await c.head(URL)).status_code == 200
        assert (await c.get(URL + "&kind=sample")).headers["x-cache"] == "miss"
        await deps.bump(["s1"], ["proc"])
        assert (await c.get(URL)).headers["x-cache"] == "miss"
        # A write through the API is seen at once.
        r = await c.post("/metrics", json={"name": "proc", "value": 7.0, "timestamp": T0 + 99})
        assert r.status_code == 201
        newest = await c.get("/metrics?name=proc&limit=5&sort=-timestamp")
        assert newest.json()["items"][0]["value"] == 7.0


async def test_keys_still_apply_to_cached_answers(store: Store) -> None:
    async with client(store, ApiConfig(keys=parse_keys("r1:read"))) as (c, deps):
        for want in ("miss", "miss", "hit"):  # kept once asked again (admission.py)
            assert (await c.get(URL, headers=bearer("r1"))).headers["x-cache"] == want
        for headers in ({}, bearer("nope")):
            r = await c.get(URL, headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert deps.stats.requests[("/metrics", "GET", 401)] == 2


async def test_rate_limits_still_apply_to_cached_answers(store: Store) -> None:
    async with client(store, ApiConfig(rate_limit=0.01, rate_burst=3)) as (c, _):
        codes = [(await c.get(URL)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


async def test_a_prompt_read_before_is_answered_from_the_cache(store: Store) -> None:
    """``/query``'s answers are cached by prompt; a query string the full
    path has read is then answered from the cache by the fast path, without
    reading the prompt again, with the full path's bytes and headers, and
    never past an invalidation of its scope or a key check."""
    url, raw = "/query?prompt=count+samples+by+host", b"prompt=count+samples+by+host"
    async with client(store, ApiConfig(keys=parse_keys("r1:read"))) as (c, deps):
        known = deps.cached_gets["/query"].known
        assert known(raw) is None  # not read yet
        first = await c.get(url, headers=bearer("r1"))
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        keyed = known(raw)
        assert keyed is not None and keyed.key == "q:count samples by host"
        assert deps.cache.peek(keyed.key, keyed.scope) == first.content  # what a hit sends
        second = await c.get(url, headers=bearer("r1"))
        assert second.headers["x-cache"] == "hit" and second.content == first.content
        assert second.headers["content-type"] == first.headers["content-type"]
        assert deps.stats.requests[("/query", "GET", 200)] == 2
        # A key is still checked, and a write in its scope still invalidates it.
        assert (await c.get(url)).status_code == 401
        await deps.bump(["s1"], ["proc"])
        assert deps.cache.peek(keyed.key, keyed.scope) is None
        third = await c.get(url, headers=bearer("r1"))
        assert third.status_code == 200 and third.headers["x-cache"] == "miss"
        # Another spelling of the same prompt is another query string: read once.
        assert known(b"prompt=count%20samples%20by%20host") is None


async def test_an_aggregate_read_before_is_answered_from_the_cache(store: Store) -> None:
    """``/aggregate`` too: a query string the full path has validated is
    answered from the cache by the fast path, with the full path's bytes,
    and never past an invalidation of its scope."""
    url = f"/aggregate?fn=avg&field=v&by=host&name=proc&from={T0:.0f}&to={T0 + 50:.0f}"
    raw = url.split("?", 1)[1].encode()
    async with client(store) as (c, deps):
        known = deps.cached_gets["/aggregate"].known
        assert known(raw) is None
        assert (await c.get(url + "&bucket=nonsense")).status_code == 422
        first = await c.get(url)
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        assert first.json()["rows"] == [{"group": "web-1", "value": 9.5, "count": 20}]
        keyed = known(raw)
        assert keyed is not None and deps.cache.peek(keyed.key, keyed.scope) == first.content
        second = await c.get(url)
        assert second.headers["x-cache"] == "hit" and second.content == first.content
        assert deps.stats.requests[("/aggregate", "GET", 200)] == 2
        await deps.bump(["s1"], ["proc"])
        third = await c.get(url)
        assert third.headers["x-cache"] == "miss" and third.content == first.content


async def test_an_aggregate_of_a_past_window_outlives_writes_outside_it(store: Store) -> None:
    """An aggregate over a closed window depends on the documents in it only:
    a write after it (all of ingest's, for a window in the past) leaves it
    cached; a write inside it is seen at once."""
    from deltawire.collector.api.cache import Span

    url = f"/aggregate?fn=count&name=proc&from={T0:.0f}&to={T0 + 100:.0f}"
    async with client(store) as (c, deps):
        first = await c.get(url)
        assert first.json()["rows"] == [{"value": 20, "count": 20}]
        await deps.bump(["s1"], ["proc"], Span(T0 + 500, T0 + 600))  # after the window
        again = await c.get(url)
        assert again.headers["x-cache"] == "hit" and again.content == first.content
        r = await c.post("/metrics", json={"name": "proc", "value": 7.0, "timestamp": T0 + 50})
        assert r.status_code == 201
        inside = await c.get(url)
        assert inside.headers["x-cache"] == "miss"
        assert inside.json()["rows"] == [{"value": 21, "count": 21}]
