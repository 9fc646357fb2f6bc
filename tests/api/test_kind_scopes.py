"""The cache's kind scopes (cache.py, ``kind:K``): an answer filtered on a
kind (and on no session or name) is dropped only by writes of documents of
that kind, so "the events of today" stays cached while agents stream samples.
Sound for every write and filter (a property test), through the API's own
writes, the control pipe, and a real collector end to end."""

from __future__ import annotations

import pathlib
import re
import time
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.api.cache import KINDS, Span, bump_scopes, scope_for
from deltawire.collector.api.control import ControlError, parse_control
from deltawire.collector.api_process import _Worker
from deltawire.collector.pipeline import Chunk
from deltawire.collector.stores import Store
from deltawire.collector.writer import Item
from deltawire.protocol import Document
from deltawire.testing.harness import Client, collector_process, wait_until

from .inproc import client, sqlite_store

# -- the rule: a write that can change an answer bumps the answer's scope -------------------------

_words = st.sampled_from(["a", "b"])
_docs = st.tuples(_words, _words, st.sampled_from(KINDS))  # session, name, kind
_filters = st.tuples(st.none() | _words, st.none() | _words, st.none() | st.sampled_from(KINDS))


@given(written=st.lists(_docs, min_size=1, max_size=6), query=_filters, known=st.booleans())
def test_a_write_that_matches_a_filter_bumps_its_scope(
    written: list[tuple[str, str, str]], query: tuple[str | None, ...], known: bool
) -> None:
    """For every write and every filter on session, name and kind: if one of
    the written documents matches the filter, the filter's one scope is
    among those the write bumps (with its kinds known, or not)."""
    session, name, kind = query
    matches = any(
        (session is None or s == session) and (name is None or n == name)
        and (kind is None or k == kind)
        for s, n, k in written
    )  # fmt: skip
    kinds = [k for _s, _n, k in written] if known else None
    bumped = bump_scopes([s for s, _n, _k in written], [n for _s, n, _k in written], kinds)
    if matches:
        assert scope_for(session, name, kind) in bumped


def test_only_the_kinds_written_are_bumped_when_they_are_known() -> None:
    assert bump_scopes(["s"], ["cpu"], ["sample"]) == [
        "session:s",
        "name:cpu",
        "kind:sample",
        "all",
    ]
    every = [f"kind:{k}" for k in KINDS]
    assert bump_scopes(["s"], ["cpu"]) == ["session:s", "name:cpu", *every, "all"]
    assert bump_scopes([], [], ["sample", None]) == [*every, "all"]  # one not known: all
    assert scope_for(None, None, "event") == "kind:event"
    assert scope_for(None, "deploy", "event") == "name:deploy"  # the narrower one
    assert scope_for("s", None, "event") == "session:s"


# -- through the API ------------------------------------------------------------------------------

T0 = 1_790_000_000.0


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Store:
    s = sqlite_store(tmp_path)
    s.write_batch(
        [Document("s1", i, "sample", "proc", T0 + i, "h", (), {"v": i}) for i in range(10)]
        + [Document("s1", 10 + i, "event", "deploy", T0 + 10 + i, "h", (), {"i": i})
           for i in range(3)]
    )  # fmt: skip
    return s


async def _kept(c: httpx.AsyncClient, url: str) -> bytes:
    """Ask until the answer is kept (a listing is kept once asked again:
    admission.py); its bytes."""
    for want in ("miss", "miss", "hit"):
        r = await c.get(url)
        assert r.status_code == 200 and r.headers["x-cache"] == want, (want, r.headers)
    return r.content


async def test_an_event_listing_outlives_sample_writes(store: Store) -> None:
    url = "/metrics?kind=event&limit=5&sort=-timestamp"
    async with client(store) as (c, deps):
        first = await _kept(c, url)
        # Ingest writes samples at "now", of the listing's session even.
        await deps.bump(["s1"], ["proc"], Span(T0 + 99, T0 + 99), ["sample"])
        r = await c.get(url)
        assert r.headers["x-cache"] == "hit" and r.content == first
        # An event, of another session and name: the listing is recomputed.
        store.write_batch([Document("s2", 0, "event", "crash", T0 + 99, "h", (), None)])
        await deps.bump(["s2"], ["crash"], Span(T0 + 99, T0 + 99), ["event"])
        r = await c.get(url)
        assert r.headers["x-cache"] == "miss" and r.json()["items"][0]["name"] == "crash"
        # A write whose kinds are not known drops it too.
        assert (await c.get(url)).headers["x-cache"] == "hit"  # kept again at once
        await deps.bump(["s3"], ["x"], Span(T0 + 99, T0 + 99))
        assert (await c.get(url)).headers["x-cache"] == "miss"


async def test_api_writes_bump_their_own_kind(store: Store) -> None:
    """The API writes documents of kind ``metric``: a POST drops the cached
    ``kind=metric`` answers, and leaves the event ones."""
    events, metrics = "/metrics?kind=event&limit=5", "/metrics?kind=metric&limit=5"
    async with client(store) as (c, _deps):
        kept = await _kept(c, events)
        assert (await _kept(c, metrics)) == b'{"items":[],"next":null}'
        r = await c.post("/metrics", json={"name": "bench.point", "value": 1.5})
        assert r.status_code == 201
        again = await c.get(events)
        assert again.headers["x-cache"] == "hit" and again.content == kept
        after = await c.get(metrics)
        assert after.headers["x-cache"] == "miss" and len(after.json()["items"]) == 1


async def test_a_question_about_events_outlives_sample_writes(store: Store) -> None:
    """``/query``: its plan's kind is its scope, so "top 5 events today"
    (a window that ends now) stays cached through sample ingest."""
    url = "/query?prompt=top+5+events+today"
    async with client(store) as (c, deps):
        first = await c.get(url)
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        assert first.json()["interpreted"]["params"]["kind"] == "event"
        now = time.time()
        await deps.bump(["s1"], ["proc"], Span(now, now), ["sample"])
        r = await c.get(url)
        assert r.headers["x-cache"] == "hit" and r.content == first.content
        await deps.bump(["s1"], ["deploy"], Span(now, now), ["event"])
        assert (await c.get(url)).headers["x-cache"] == "miss"


# -- the control pipe ------------------------------------------------------------------------------


def _chunk(*kinds: str | None) -> Chunk:
    items = [Item("s", i, "n", T0 + i, None, kind) for i, kind in enumerate(kinds)]
    return Chunk(None, items, None)  # type: ignore[arg-type]


def test_the_ingest_process_says_which_kinds_it_wrote() -> None:
    worker = _Worker(["true"])
    worker.note([_chunk("sample", "sample"), _chunk("event")])
    line = worker.bump_line()
    assert line is not None
    msg = parse_control(line)
    assert msg["kinds"] == ["event", "sample"] and msg["span"] == [T0, T0 + 1]
    # An item whose kind is not known: the line leaves kinds out (every kind's scope).
    worker.note([_chunk("sample", None)])
    line = worker.bump_line()
    assert line is not None and "kinds" not in parse_control(line)
    assert worker.bump_line() is None  # nothing new


def test_a_bump_with_bad_kinds_is_refused() -> None:
    with pytest.raises(ControlError, match="kinds"):
        parse_control(b'{"op": "bump", "sessions": [], "names": [], "kinds": "sample"}')


# -- end to end: a real collector, an agent streaming -------------------------------------------


def _bumps(http: httpx.Client) -> float:
    m = re.search(r"^deltawire_api_cache_bumps_total\S* (\S+)$", http.get("/stats").text, re.M)
    assert m is not None
    return float(m.group(1))


async def _stream(port: int, session: str, *frames: dict[str, Any]) -> None:
    agent = await Client.connect(port)
    await agent.send({"t": "hello", "v": 1, "session": session}, *frames)
    last = max(f["seq"] for f in frames)
    await agent.until(lambda c: c.acked >= last)
    await agent.stream.aclose()


@pytest.mark.slow
def test_streamed_samples_leave_event_answers_cached(tmp_path: pathlib.Path) -> None:
    now = time.time()
    with collector_process(tmp_path, http=True, env={"API_WORKERS": "1"}) as cp:
        stream = partial(trio.run, _stream, cp.port)
        url = "/metrics?kind=event&limit=5&sort=-timestamp"
        with httpx.Client(base_url=f"http://127.0.0.1:{cp.http_port}", timeout=10) as http:
            bumps = _bumps(http)
            stream("app-1", {"t": "event", "seq": 0, "ts": now, "name": "deploy", "data": {"v": 1}})
            # The event's bump is applied, then its answer kept (once asked
            # again: admission.py).
            wait_until(lambda: _bumps(http) > bumps, what="the event's bump")
            kept = wait_until(
                lambda: (r := http.get(url)).headers["x-cache"] == "hit" and r.content,
                what="the event listing kept",
            )
            bumps = _bumps(http)
            samples = [{"t": "snap", "seq": i, "ts": now + i, "name": "process",
                        "data": {"cpu": i}} for i in range(3)]  # fmt: skip
            stream("app-2", *samples)
            wait_until(lambda: _bumps(http) > bumps, what="the samples' bump")
            r = http.get(url)
            assert r.headers["x-cache"] == "hit" and r.content == kept
            stream("app-3", {"t": "event", "seq": 0, "ts": now + 9, "name": "crash", "data": {}})
            got = wait_until(
                lambda: (items := http.get(url).json()["items"]) and items[0]["name"] == "crash",
                what="the second event listed",
            )
            assert got
    assert orjson.loads(kept)["items"][0]["name"] == "deploy"
