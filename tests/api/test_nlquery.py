"""The /query parser and vocabulary: pure functions of (prompt, now, vocabulary)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.collector.api.nl_lexicon import ENGLISH, NUMBER_WORDS
from deltawire.collector.api.nl_vocab import Vocabulary, edit_distance
from deltawire.collector.api.nlquery import EXAMPLES, Plan, PromptError, parse_prompt
from deltawire.collector.stores.catalog import Catalog
from deltawire.testing import nl_dataset
from tests.strategies import examples

NOW = nl_dataset.NOW  # a Monday noon: "this week" starts today
VOCAB = Vocabulary(nl_dataset.catalog())


def plan(prompt: str, now: datetime = NOW) -> Plan:
    return parse_prompt(prompt, now, VOCAB)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_examples_parse() -> None:
    vocab = Vocabulary(
        Catalog(
            names={"metric": frozenset({"http_latency_ms"}), "event": frozenset({"request_failed"}),
                   "sample": frozenset({"process"})},
            paths={"process": frozenset({"cpu.percent", "mem.rss"}),
                   "request_failed": frozenset({"duration_ms"})},
            hosts=frozenset({"web-1"}), sessions=frozenset({"abc"}),
        )
    )  # fmt: skip
    for prompt in EXAMPLES:
        parse_prompt(prompt, NOW, vocab)


@pytest.mark.parametrize(
    ("window", "since"),
    [
        ("in the last hour", NOW - timedelta(hours=1)),
        ("last 15 minutes", NOW - timedelta(minutes=15)),
        ("past 2 days", NOW - timedelta(days=2)),
        ("last 24h", NOW - timedelta(hours=24)),
        ("over the last week", NOW - timedelta(weeks=1)),
        ("today", NOW.replace(hour=0)),
        ("this week", NOW.replace(hour=0)),
        ("this month", NOW.replace(day=1, hour=0)),
        ("since yesterday", NOW.replace(hour=0) - timedelta(days=1)),
        ("since 3 hours ago", NOW - timedelta(hours=3)),
        ("since 2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
    ],
)
def test_windows(window: str, since: datetime) -> None:
    p = plan(f"avg cpu {window}").params
    assert p["from"] == iso(since) and "to" not in p


def test_closed_windows() -> None:
    p = plan("count job_error yesterday").params
    assert (p["from"], p["to"]) == (
        iso(NOW.replace(hour=0) - timedelta(days=1)),
        iso(NOW.replace(hour=0)),
    )
    p = plan("count job_error between 2026-11-20 and 2026-11-21T06:00:00Z").params
    assert (p["from"], p["to"]) == ("2026-11-20T00:00:00Z", "2026-11-21T06:00:00Z")
    with pytest.raises(PromptError, match="ends before it starts"):
        plan("count job_error between 2026-11-21 and 2026-11-20")


@pytest.mark.parametrize(
    ("window", "start", "rounded"),
    [
        # 1/30 of the window at most: a minute from half an hour on, an hour from 30 hours
        ("last hour", "2026-11-23T11:07:00Z", "minute"),
        ("last 30 minutes", "2026-11-23T11:37:00Z", "minute"),
        ("last 20 minutes", "2026-11-23T11:47:41Z", None),
        ("past 3 days", "2026-11-20T12:00:00Z", "hour"),
        ("since 2 hours ago", "2026-11-23T10:07:00Z", "minute"),
        ("today", "2026-11-23T00:00:00Z", None),
        ("since 2026-11-20T10:11:12Z", "2026-11-20T10:11:12Z", None),  # given: exact
    ],
)
def test_relative_windows_start_on_a_tier_edge(window: str, start: str, rounded: str) -> None:
    """A ragged start would read raw rows; the answer says the start it used."""
    now = datetime(2026, 11, 23, 12, 7, 41, tzinfo=UTC)
    p = plan(f"avg cpu {window}", now)
    assert p.params["from"] == start
    said = [n for n in p.notes if "rounded down" in n]
    assert said == ([f"the window starts {start[11:16]} UTC, rounded down to the {rounded}"]
                    if rounded else [])  # fmt: skip


def test_now_in_another_zone_is_the_same_instant() -> None:
    east = NOW.astimezone(timezone(timedelta(hours=5)))
    assert plan("avg cpu last hour", east).params == plan("avg cpu last hour").params


def test_word_order_does_not_matter() -> None:
    a = plan("avg cpu of web-1 per hour in the last day").params
    b = plan("in the last day, hourly average cpu on web-1").params
    assert a == b


def test_interpreted_is_a_copyable_request() -> None:
    i = plan("p95 latency per 10 minutes for tag api last hour").interpreted()
    json.dumps(i)
    assert i["endpoint"] == "/aggregate"
    assert i["url"].startswith("/aggregate?fn=p95&field=value&bucket=10m&name=http_latency_ms")
    assert "tag=api" in i["url"]


def test_ambiguous_cpu_says_which_samples() -> None:
    p = plan("average cpu")
    assert p.params["name"] == "process"
    assert any("process samples" in n and "system" in n for n in p.notes)


@pytest.mark.parametrize(
    ("prompt", "suggest"),
    [
        ("avg cpu.pecent", "cpu.percent"),
        ("avg cpu of web1", "web-1"),
        ("count request_faild", "request_failed"),
        ("max memory of session sess-x", "sess-a"),
        ("count events tagged stagng", "staging"),
    ],
)
def test_misspelled_names_are_refused_with_the_closest(prompt: str, suggest: str) -> None:
    with pytest.raises(PromptError) as e:
        plan(prompt)
    assert suggest in e.value.suggestions and suggest in e.value.reason


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("", "empty"),
        ("p75 latency", "95th"),
        ("what is the weather in paris", "paris"),
        ("avg of nothing", "nothing"),
        ("x" * 1001, "too long"),
        ("avg cpu today yesterday", "Two time windows"),
        # several hosts are answered by host, but not grouped otherwise nor listed
        ("avg cpu by session on web-1 on web-2", "Two different hosts"),
        ("last 5 events on web-1 and web-2", "Two different hosts"),
        ("is web-1 or web-2 up", "Two different hosts"),
    ],
)
def test_refusals_say_why(prompt: str, needle: str) -> None:
    with pytest.raises(PromptError, match=needle):
        plan(prompt)


def test_keyword_typos_are_read_and_said() -> None:
    p = plan("avrage cpu yesterdy")
    assert p.params["fn"] == "avg" and "to" in p.params
    assert any("avrage" in n for n in p.notes)


@pytest.mark.parametrize("word", sorted(ENGLISH | {w for w in NUMBER_WORDS if w.isalpha()}))
def test_real_words_are_never_corrected_into_keywords(word: str) -> None:
    # "the last four hours" once became "the last hour hours", "like" "live"
    try:
        notes = plan(f"avg cpu {word} on web-1").notes
    except PromptError as e:
        assert "read" not in e.reason
    else:
        assert not any(n.startswith(f"read {word!r} as") for n in notes), notes


def test_vague_counts_are_said() -> None:
    p = plan("max memory in the last couple of hours")
    assert p.params["from"] == "2026-11-23T10:00:00Z"
    assert "'couple' read as 2" in p.notes


def test_edit_distance() -> None:
    assert edit_distance("web1", "web-1") == 1
    assert edit_distance("cpu.pecent", "cpu.percent") == 1
    assert edit_distance("ab", "ba") == 1  # a transposition is one edit
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("a" * 30, "b" * 30, cap=4) == 4


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=120))
def test_any_text_is_a_plan_or_a_prompt_error(text: str) -> None:
    try:
        p = plan(text)
    except PromptError as e:
        assert e.reason
    else:
        json.dumps(p.interpreted())


async def test_vocabulary_cache_reloads_when_stale_and_once_at_a_time() -> None:
    from dataclasses import replace

    import trio

    from deltawire.collector.api.nl_vocab import VocabCache

    now = [0.0]
    loads: list[float] = []
    cache = VocabCache(ttl=5.0, clock=lambda: now[0])
    catalogs = [nl_dataset.catalog()]  # what load() reads (its last one)

    async def load() -> Catalog:
        loads.append(now[0])
        await trio.lowlevel.checkpoint()  # let the other callers pile up behind the reload
        return catalogs[-1]

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(cache.get, load)
    assert loads == [0.0]  # five callers, one catalog read
    now[0] = 0.2
    await cache.get(load, fresh=True)
    assert loads == [0.0]  # a refused name reloads at most twice a second
    now[0] = 0.6
    await cache.get(load, fresh=True)
    now[0] = 5.7
    await cache.get(load)
    assert loads == [0.0, 0.6, 5.7]
    # current(): what get() would give now without a reload (the HTTP fast
    # path answers a known prompt from the cache only while it is).
    vocab, generation = await cache.get(load), cache.generation
    assert cache.current(generation)
    now[0] = 10.8  # past the TTL (loaded at 5.7): the next get() reloads
    assert not cache.current(generation)
    # The same catalog again (an equal one, read anew): the same vocabulary.
    catalogs.append(nl_dataset.catalog())
    assert await cache.get(load) is vocab and loads[-1] == 10.8
    assert cache.generation == generation and cache.current(generation)
    # A new name: another vocabulary, another generation.
    old = catalogs[-1]
    catalogs.append(replace(old, hosts=old.hosts | {"brand-new-host"}))
    now[0] = 16.0
    newer = await cache.get(load)
    assert newer is not vocab and cache.generation == generation + 1
    assert cache.current(cache.generation) and not cache.current(generation)


@given(
    n=st.integers(min_value=1, max_value=4096),
    unit=st.sampled_from(["MB", "GB", "meg", "gigs", "MiB", "GiB", "G"]),
)
@settings(max_examples=40, deadline=None)
def test_sizes_follow_the_standard_and_say_both_readings(n: int, unit: str) -> None:
    """MB/GB (and "meg"/"gig") are powers of 10; MiB/GiB and a bare G are
    powers of 2 (as top and psutil print them). The note names the bytes used
    and the other convention's, so a reader who meant the other can check."""
    decimal = unit.lower().startswith(("mb", "gb", "meg", "gig"))
    power = 2 if unit.lower().startswith("m") else 3
    want = n * (10 ** (3 * power) if decimal else 1 << (10 * power))
    other = n * (1 << (10 * power) if decimal else 10 ** (3 * power))
    p = plan(f"hosts with memory over {n} {unit}")
    assert p.params["where"] == f"mem.rss > {want}"
    (note,) = [x for x in p.notes if "bytes" in x]
    assert f"{want:,} bytes" in note and f"{other:,}" in note


def test_a_window_in_the_story_gives_way_to_the_ask() -> None:
    p = plan("A ticket from this morning says web-1 was slow. Avg cpu of web-1 in the last hour?")
    assert p.params["from"] == iso(NOW - timedelta(hours=1))
    assert any("two time windows in different sentences" in n for n in p.notes)
    with pytest.raises(PromptError, match="Two time windows"):
        plan("avg cpu of web-1 this morning in the last hour")
