"""Time-range-aware invalidation: a write drops only the cached answers whose
time range it touches (cache.Span), in both backends, and a listing's span
is right: a write outside it cannot change the page."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltawire.collector.api.cache import (
    EVERYTHING,
    LocalCache,
    QueryCache,
    RedisCache,
    Span,
)
from deltawire.collector.api.control import ControlError, parse_control
from deltawire.collector.api.routes.metrics import listing_span
from deltawire.collector.api.views import found_page
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.collector.stores.base import FoundPage
from deltawire.protocol import Document
from tests.strategies import examples

from .inproc import client, sqlite_store

T0 = 1_790_000_000.0
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

stamps = st.integers(0, 100).map(float)
spans = st.tuples(stamps, stamps).map(lambda p: Span(min(p), max(p)))


async def _replay(cache: QueryCache, entry: Span, bumps: list[Span]) -> bool:
    """Cache an answer of scope name:n under ``entry``, apply ``bumps`` to the
    name, and say whether the answer is still a hit."""
    payload, gen = await cache.get("k", "name:n")
    assert payload is None and gen is not None
    await cache.put("k", gen, b"answer", entry)
    for span in bumps:
        await cache.bump([], ["n"], span)
    payload, _ = await cache.get("k", "name:n")
    assert payload in (None, b"answer")
    return payload is not None


def _expected(entry: Span, bumps: list[Span]) -> bool:
    return not any(b.touches(entry) for b in bumps)


@settings(max_examples=examples(200), deadline=None)
@given(entry=spans, bumps=st.lists(spans, max_size=8))
def test_local_cache_drops_only_what_a_bump_touches(entry: Span, bumps: list[Span]) -> None:
    hit = asyncio.run(_replay(LocalCache(ttl=60), entry, bumps))
    assert hit == _expected(entry, bumps)


@pytest.mark.redis
@settings(max_examples=examples(40), deadline=None, suppress_health_check=_SUPPRESS)
@given(entry=spans, bumps=st.lists(spans, max_size=8))
def test_redis_cache_drops_only_what_a_bump_touches(
    redis_uri: str, entry: Span, bumps: list[Span]
) -> None:
    async def run() -> bool:
        cache = RedisCache(redis_uri, ttl=60, namespace=uuid.uuid4().hex)
        try:
            hit = await _replay(cache, entry, bumps)
            assert cache.healthy()
            if hit and bumps:  # re-tagged: the next lookup is a plain hit
                assert (await cache.get("k", "name:n"))[0] == b"answer"
            return hit
        finally:
            await cache.aclose()

    assert asyncio.run(run()) == _expected(entry, bumps)


async def test_an_answer_of_everything_and_a_bump_without_span_always_drop() -> None:
    assert not await _replay(LocalCache(), EVERYTHING, [Span(5, 5)])
    assert not await _replay(LocalCache(), Span(0, 1), [EVERYTHING])


async def test_a_log_that_does_not_reach_back_is_a_miss() -> None:
    # More bumps than the log keeps, all far away: the cache cannot know
    # what the forgotten ones touched, so it must not serve the answer.
    assert not await _replay(LocalCache(), Span(0, 1), [Span(50, 60)] * 65)
    assert await _replay(LocalCache(), Span(0, 1), [Span(50, 60)] * 63)


def test_control_bump_span_is_checked() -> None:
    msg = parse_control(b'{"op": "bump", "sessions": ["s"], "names": [], "span": [1, 2.5]}')
    assert msg["span"] == [1, 2.5]
    for bad in (b'"span": [2, 1]', b'"span": [1]', b'"span": ["a", "b"]', b'"span": 3'):
        with pytest.raises(ControlError):
            parse_control(b'{"op": "bump", "sessions": [], ' + bad + b"}")


# -- a listing's span ---------------------------------------------------------------------

queries = st.builds(
    lambda lo, hi, limit, desc: MetricQuery(
        name="p", ts_from=lo, ts_to=hi, limit=limit, descending=desc
    ),
    st.one_of(st.none(), stamps.map(lambda t: T0 + t)),
    st.one_of(st.none(), stamps.map(lambda t: T0 + t)),
    st.integers(1, 12),
    st.booleans(),
)


def _pages(store: Any, q: MetricQuery) -> list[FoundPage]:
    """The page both ways: as SQLite writes it, and as the API's doc_out does."""
    fetched = store.find(replace(q, limit=q.limit + 1))
    return [store.find_page(q), found_page(fetched, q.limit, None, 1 << 20)]


@settings(max_examples=examples(100), deadline=None, suppress_health_check=_SUPPRESS)
@given(
    old=st.lists(stamps, min_size=1, max_size=30),
    q=queries,
    new=st.lists(stamps, min_size=1, max_size=2),
)
def test_a_write_outside_a_listings_span_leaves_its_page_alone(
    tmp_path: pathlib.Path, old: list[float], q: MetricQuery, new: list[float]
) -> None:
    store = open_store(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    store.open()
    try:
        docs = [
            Document("s", i, "sample", "p", T0 + t, "h", (), {"v": 1}) for i, t in enumerate(old)
        ]
        store.write_batch(docs)
        before = _pages(store, q)
        assert before[0] == before[1]
        span = listing_span(q, before[0].beyond)
        late = [T0 + t for t in new]
        store.write_batch(
            [Document("s", len(old) + i, "sample", "p", t, "h", (), {"v": 2})
             for i, t in enumerate(late)]
        )  # fmt: skip
        after = _pages(store, q)
        if not Span.of(late).touches(span):
            assert after == before
    finally:
        store.close()


async def test_ingest_at_now_keeps_a_closed_listing_cached(tmp_path: pathlib.Path) -> None:
    """The API end to end: the oldest page stays a hit while ingest bumps
    its name with new documents; a write inside its range drops it."""
    store = sqlite_store(tmp_path)
    store.write_batch(
        [Document("s", i, "sample", "p", T0 + i, "h", (), {"v": i}) for i in range(20)]
    )
    async with client(store) as (c, deps):
        url = "/metrics?name=p&limit=5"
        assert (await c.get(url)).headers["x-cache"] == "miss"
        assert (await c.get(url)).headers["x-cache"] == "miss"  # kept from now (admission.py)
        assert (await c.get(url)).headers["x-cache"] == "hit"
        store.write_batch([Document("s", 20, "sample", "p", T0 + 100, "h", (), {"v": 0})])
        await deps.cache.bump(["s"], ["p"], Span(T0 + 100, T0 + 100))
        r = await c.get(url)
        assert r.headers["x-cache"] == "hit"
        recent = "/metrics?name=p&limit=5&sort=-timestamp"
        assert (await c.get(recent)).headers["x-cache"] == "miss"
        # a late document inside the first page's range
        store.write_batch([Document("s", 21, "sample", "p", T0 + 2.5, "h", (), {"v": 0})])
        await deps.cache.bump(["s"], ["p"], Span(T0 + 2.5, T0 + 2.5))
        r = await c.get(url)
        assert r.headers["x-cache"] == "miss"
        assert [d["seq"] for d in r.json()["items"]] == [0, 1, 2, 21, 3]
        # an API write (POST) carries its own timestamp's span
        created = await c.post("/metrics", json={"name": "p", "value": 1, "timestamp": T0 + 1.5})
        assert created.status_code == 201
        assert (await c.get(url)).headers["x-cache"] == "miss"
        assert (await c.get(url)).headers["x-cache"] == "hit"
        created = await c.post("/metrics", json={"name": "p", "value": 1, "timestamp": T0 + 500})
        assert (await c.get(url)).headers["x-cache"] == "hit"
