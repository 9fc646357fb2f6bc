"""The near cache in front of Redis (cache.NearCache), with a real redis-server:
repeated lookups are answered in-process, and no write (through this API
process, through the ingest's control pipe, or through another API process
sharing the Redis) leaves a stale answer served once it has been applied."""

from __future__ import annotations

import asyncio
import fcntl
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltawire.collector.api import Deps, create_app
from deltawire.collector.api.cache import (
    EVERYTHING,
    NearCache,
    RedisCache,
    Span,
    make_cache,
    redis_channel,
)
from deltawire.collector.api.control import apply_control, parse_control
from deltawire.collector.api.edits import MAX_FLUSHES
from deltawire.collector.stores import open_store
from deltawire.collector.stores.sqlite_lock import LOCK_SUFFIX
from deltawire.protocol import Document
from tests.strategies import examples

pytestmark = pytest.mark.redis

DEADLINE_S = 10.0
T0 = 1_790_000_000.0


def _near(redis_uri: str, namespace: str, ttl: float = 60.0) -> NearCache:
    return NearCache(RedisCache(redis_uri, ttl=ttl, namespace=namespace), size=64)


async def _until(check: Callable[[], bool], what: str) -> None:
    """Until ``check()`` (pub/sub news from another process: nothing to await)."""
    async with asyncio.timeout(DEADLINE_S):
        while not check():
            await asyncio.sleep(0.005)
    assert check(), what


async def _both(redis_uri: str, body: Callable[[NearCache, NearCache], Awaitable[None]]) -> None:
    """Two near caches on one namespace: two API processes sharing one Redis."""
    ns = uuid.uuid4().hex
    a, b = _near(redis_uri, ns), _near(redis_uri, ns)
    try:
        await asyncio.wait_for(asyncio.gather(a.wait_subscribed(), b.wait_subscribed()), DEADLINE_S)
        await body(a, b)
    finally:
        await a.aclose()
        await b.aclose()


def test_repeated_lookups_are_answered_in_process(redis_uri: str) -> None:
    async def body(a: NearCache, b: NearCache) -> None:
        payload, gen = await a.get("k", "name:n")
        assert payload is None and gen is not None
        await a.put("k", gen, b"answer", EVERYTHING)
        for _ in range(5):
            assert (await a.get("k", "name:n"))[0] == b"answer"
        assert a.stats.near_hits == 5 and a.stats.hits == 5
        # b has it from Redis once, then in-process.
        assert (await b.get("k", "name:n"))[0] == b"answer"
        assert b.stats.near_hits == 0
        assert (await b.get("k", "name:n"))[0] == b"answer"
        assert b.stats.near_hits == 1

    asyncio.run(_both(redis_uri, body))


def test_a_bump_here_is_a_miss_at_once_and_elsewhere_once_heard(redis_uri: str) -> None:
    async def body(a: NearCache, b: NearCache) -> None:
        _, gen = await a.get("k", "session:s")
        await a.put("k", gen, b"old")
        for cache in (a, b):  # b: from Redis once, then near
            for _ in range(2):
                assert (await cache.get("k", "session:s"))[0] == b"old"
        assert a.stats.near_hits == 2 and b.stats.near_hits == 1
        await a.bump(["s"], ["n"])
        assert (await a.get("k", "session:s"))[0] is None  # no waiting here
        await _until(lambda: b.heard >= 1, "b to hear a's bump")
        assert (await b.get("k", "session:s"))[0] is None
        # Other scopes stay cached; a's own bump is not applied twice.
        assert a.heard == 0

    asyncio.run(_both(redis_uri, body))


def test_a_lone_api_process_never_hears_its_own_bumps(redis_uri: str) -> None:
    """The bump script publishes only when another near cache listens (its
    presence channel, see _BUMP_LUA): alone on a Redis, a process's bumps
    cost it no pub/sub message; once a second one subscribes, it hears them."""

    async def body() -> None:
        from redis.asyncio import Redis

        ns = uuid.uuid4().hex
        a, raw = _near(redis_uri, ns), Redis.from_url(redis_uri)
        b: NearCache | None = None
        try:
            await asyncio.wait_for(a.wait_subscribed(), DEADLINE_S)
            for i in range(5):
                await a.bump(["s"], ["n"], Span(T0 + i, T0 + i))
            # Published after the bumps: it arrives after anything they published.
            await raw.publish(redis_channel(ns), b"marker")
            await _until(lambda: a.received >= 1, "the marker")
            assert a.received == 1  # the marker alone
            b = _near(redis_uri, ns)
            await asyncio.wait_for(b.wait_subscribed(), DEADLINE_S)
            await a.bump(["s"], ["n"], Span(T0, T0))
            await _until(lambda: b is not None and b.heard == 1, "b to hear a's bump")
            assert a.heard == 0
        finally:
            await a.aclose()
            await raw.aclose()
            if b is not None:
                await b.aclose()

    asyncio.run(body())


def test_an_answer_fetched_across_a_bump_is_not_kept(redis_uri: str) -> None:
    """The lookup/bump race: a lookup reads the near generation, then Redis; a
    bump lands in between. What it fetched must not survive the bump."""

    async def body(a: NearCache, b: NearCache) -> None:
        _, gen = await a.get("k", "name:n")
        await a.put("k", gen, b"old")
        a.near.clear()  # as if evicted: the next lookup goes to Redis
        real_lookup = a.remote.lookup

        async def lookup_then_bump(key: str, scope: str) -> tuple[bytes | None, Span, Any]:
            found = await real_lookup(key, scope)  # the old answer, read from Redis
            await a.bump([], ["n"])  # ... and a write lands before it is kept
            return found

        a.remote.lookup = lookup_then_bump  # type: ignore[method-assign]
        assert (await a.get("k", "name:n"))[0] == b"old"  # raced: served before the write
        a.remote.lookup = real_lookup  # type: ignore[method-assign]
        assert (await a.get("k", "name:n"))[0] is None

    asyncio.run(_both(redis_uri, body))


stamps = st.integers(0, 100).map(float)
spans = st.tuples(stamps, stamps).map(lambda p: Span(min(p), max(p)))


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(entry=spans, bumps=st.lists(st.tuples(st.booleans(), spans), max_size=6))
def test_bumps_from_either_process_drop_exactly_what_they_touch(
    redis_uri: str, entry: Span, bumps: list[tuple[bool, Span]]
) -> None:
    """Whoever bumps (this process or another one), an answer stays a near hit
    exactly when no bump touched its span; never a stale one."""

    async def body(a: NearCache, b: NearCache) -> None:
        _, gen = await a.get("k", "name:n")
        await a.put("k", gen, b"answer", entry)
        for here, span in bumps:
            await (a if here else b).bump([], ["n"], span)
        elsewhere = sum(1 for here, _ in bumps if not here)
        await _until(lambda: a.heard >= elsewhere, "a to hear b's bumps")
        before = a.stats.near_hits
        payload, _ = await a.get("k", "name:n")
        expected = not any(span.touches(entry) for _, span in bumps)
        assert (payload == b"answer") == expected
        assert (a.stats.near_hits == before + 1) == expected

    asyncio.run(_both(redis_uri, body))


# -- through the API: writes and streamed documents are seen at once -------------------------------


def test_api_writes_and_streamed_documents_are_never_served_stale(
    redis_uri: str, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'near.db'}"

    async def body() -> None:
        store = open_store(uri)
        store.open()
        cache = make_cache(redis_uri, ttl=60, namespace=uuid.uuid4().hex)
        assert isinstance(cache, NearCache)
        try:
            deps = Deps(store, cache)
            transport = httpx.ASGITransport(app=create_app(deps))
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
                await asyncio.wait_for(cache.wait_subscribed(), DEADLINE_S)
                params = {"name": "cpu", "limit": 10}

                async def listing(expect: str | None = None) -> list[Any]:
                    r = await api.get("/metrics", params=params)
                    assert r.status_code == 200
                    if expect is not None:
                        assert r.headers["x-cache"] == expect
                    return [d.get("value") for d in r.json()["items"]]

                assert await listing("miss") == []
                assert await listing("miss") == []  # kept from now on (admission.py)
                assert await listing("hit") == [] and cache.stats.near_hits == 1

                # A write through the API: the next read shows it.
                r = await api.post("/metrics", json={"name": "cpu", "value": 1.0})
                assert r.status_code == 201
                doc_id = r.json()["id"]
                assert await listing("miss") == [1.0]
                assert await listing("hit") == [1.0]
                r = await api.patch(f"/metrics/{doc_id}", json={"value": 2.0})
                assert r.status_code == 200
                assert await listing("miss") == [2.0]
                assert await listing("hit") == [2.0]

                # A streamed document: stored by the ingest process, announced
                # on the control pipe; once the bump is applied, no stale answer.
                writer = open_store(uri)
                writer.open()
                try:
                    writer.write_batch([Document("agent-1", 0, "sample", "cpu", T0, "h", (), None)])
                finally:
                    writer.close()
                msg = {"op": "bump", "sessions": ["agent-1"], "names": ["cpu"], "span": [T0, T0]}
                await apply_control(parse_control(orjson.dumps(msg)), cache, deps.ingest)
                assert len(await listing("miss")) == 2

                r = await api.delete(f"/metrics/{doc_id}")
                assert r.status_code == 204
                assert len(await listing("miss")) == 1
                assert len(await listing("hit")) == 1
        finally:
            await cache.aclose()
            store.close()

    asyncio.run(body())


def test_a_group_of_edits_bumps_redis_once_and_drops_all_it_touched(
    redis_uri: str, tmp_path: Path
) -> None:
    """Concurrent edits committed together bump the cache once per commit
    (one Redis round trip, not one per request), before any is answered, and
    every answer they touched is a miss afterwards, near and in Redis."""
    n = 12

    async def body() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'group.db'}")
        store.open()
        cache = make_cache(redis_uri, ttl=60, namespace=uuid.uuid4().hex)
        assert isinstance(cache, NearCache)
        # flock locks belong to an open file: this one excludes the store's
        # writer as the ingest writer would, so the edits pile up behind it.
        blocker = os.open(str(tmp_path / "group.db") + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT)
        try:
            deps = Deps(store, cache)
            transport = httpx.ASGITransport(app=create_app(deps))
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
                await asyncio.wait_for(cache.wait_subscribed(), DEADLINE_S)
                ids = []
                for i in range(n):
                    r = await api.post("/metrics", json={"name": f"n{i}", "value": 0.0})
                    ids.append(r.json()["id"])

                async def values(i: int) -> tuple[str, list[Any]]:
                    r = await api.get("/metrics", params={"name": f"n{i}"})
                    return r.headers["x-cache"], [d["value"] for d in r.json()["items"]]

                for i in range(n):
                    for _ in range(2):  # a listing is kept once asked again (admission.py)
                        assert (await values(i))[1] == [0.0]
                    assert await values(i) == ("hit", [0.0])
                bumps, flushes = cache.stats.bumps, deps.edits.flushes
                fcntl.flock(blocker, fcntl.LOCK_EX)
                sent = [
                    asyncio.create_task(api.patch(f"/metrics/{doc_id}", json={"value": 1.0}))
                    for doc_id in ids
                ]
                await _until(
                    lambda: (
                        deps.edits.running == MAX_FLUSHES
                        and len(deps.edits._queue) == n - MAX_FLUSHES
                    ),
                    "every edit to queue behind the held lock",
                )
                fcntl.flock(blocker, fcntl.LOCK_UN)
                assert [r.status_code for r in await asyncio.gather(*sent)] == [200] * n
                assert cache.stats.bumps - bumps == deps.edits.flushes - flushes < n
                for i in range(n):
                    assert await values(i) == ("miss", [1.0])
        finally:
            os.close(blocker)
            await cache.aclose()
            store.close()

    asyncio.run(body())


def test_a_listing_never_computed_here_does_not_ask_redis(redis_uri: str, tmp_path: Path) -> None:
    """A cheap answer (a listing page) this process has not computed lately
    is computed without a Redis round trip (it is not stored the first time
    either, admission.py); from its second time on it is looked up, stored,
    and then a hit."""

    async def body() -> None:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        store.open()
        cache = _near(redis_uri, uuid.uuid4().hex)
        deps = Deps(store, cache)
        computed = 0

        async def compute() -> bytes:
            nonlocal computed
            computed += 1
            return b"page"

        async def lookups() -> int:  # MGETs Redis has answered so far
            from redis.asyncio import Redis

            client = Redis.from_url(redis_uri)
            try:
                info = await client.info("commandstats")
            finally:
                await client.aclose()
            return int(info.get("cmdstat_mget", {}).get("calls", 0))

        try:
            before = await lookups()
            assert await deps.cached_answer("k", "name:n", compute, cheap=True) == (b"page", "miss")
            assert computed == 1 and await lookups() == before  # no round trip
            assert await deps.cached_answer("k", "name:n", compute, cheap=True) == (b"page", "miss")
            assert computed == 2 and await lookups() == before + 1  # asked, then stored
            assert await deps.cached_answer("k", "name:n", compute, cheap=True) == (b"page", "hit")
            assert computed == 2
            assert cache.stats.misses == 2 and cache.stats.hits == 1
        finally:
            await cache.aclose()
            store.close()

    asyncio.run(body())


def test_api_workers_of_one_collector_do_not_publish_to_each_other(redis_uri: str) -> None:
    """Near caches sharing an origin (one collector's API workers, which tell
    each other their bumps through their journals) cost each other no pub/sub
    message; a process of another collector still hears every bump, and the
    workers hear its own."""

    async def body() -> None:
        from redis.asyncio import Redis

        ns, origin = uuid.uuid4().hex, uuid.uuid4().hex
        w1, w2 = (NearCache(RedisCache(redis_uri, ttl=60, namespace=ns, origin=origin), size=64)
                  for _ in range(2))  # fmt: skip
        raw = Redis.from_url(redis_uri)
        other: NearCache | None = None
        try:
            await asyncio.wait_for(asyncio.gather(w1.wait_subscribed(), w2.wait_subscribed()),
                                   DEADLINE_S)  # fmt: skip
            for i in range(5):
                await w1.bump(["s"], ["n"], Span(T0 + i, T0 + i))
            await raw.publish(redis_channel(ns), b"marker")
            await _until(lambda: w2.received >= 1, "the marker")
            assert w2.received == 1 and w2.heard == 0  # the marker alone
            other = _near(redis_uri, ns)
            await asyncio.wait_for(other.wait_subscribed(), DEADLINE_S)
            await w1.bump(["s"], ["n"], Span(T0, T0))
            await _until(lambda: other is not None and other.heard == 1, "the other collector")
            assert w2.heard == 0  # published for the other one; its sibling ignores it
            await other.bump(["s"], ["n"], Span(T0, T0))
            await _until(lambda: w1.heard == 1 and w2.heard == 1, "both workers to hear it")
        finally:
            for cache in (w1, w2, other):
                if cache is not None:
                    await cache.aclose()
            await raw.aclose()

    asyncio.run(body())
