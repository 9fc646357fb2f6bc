"""The /query prompt parser: pure functions of (prompt, now), no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from deltawire.collector.api.nlquery import EXAMPLES, MAX_LIMIT, PromptError, parse_prompt
from deltawire.collector.stores.base import AggQuery, MetricQuery

# A Monday, so "this week" starts today.
NOW = datetime(2026, 11, 23, 8, 30, 15, tzinfo=UTC)
TODAY = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
T_NOW = NOW.timestamp()


def agg(prompt: str) -> AggQuery:
    q = parse_prompt(prompt, NOW).query
    assert isinstance(q, AggQuery), q
    return q


def listing(prompt: str) -> MetricQuery:
    q = parse_prompt(prompt, NOW).query
    assert isinstance(q, MetricQuery), q
    return q


# -- the examples the contract names --------------------------------------------------


def test_top_5_events_today() -> None:
    r = parse_prompt("top 5 events today", NOW)
    q = r.query
    assert isinstance(q, AggQuery)
    assert (q.func, q.path, q.group_by, q.limit, q.ascending) == ("count", None, "name", 5, False)
    assert q.where.kind == "event"
    assert q.where.ts_from == TODAY and q.where.ts_to is None
    assert r.interpreted == {
        "type": "aggregate",
        "func": "count",
        "path": None,
        "group_by": "name",
        "order": "descending",
        "limit": 5,
        "where": {"kind": "event", "from": "2026-11-23T00:00:00.000Z"},
        "window": "today",
    }


def test_average_of_host_in_the_last_hour() -> None:
    q = agg("average cpu.percent of host web-1 in the last hour")
    assert (q.func, q.path, q.group_by) == ("avg", "cpu.percent", None)
    assert q.where.host == "web-1"
    assert q.where.ts_from == T_NOW - 3600 and q.where.ts_to is None


def test_max_of_session_since_yesterday() -> None:
    q = agg("max mem.rss of session abc since yesterday")
    assert (q.func, q.path) == ("max", "mem.rss")
    assert q.where.session == "abc"
    assert q.where.ts_from == TODAY - 86400 and q.where.ts_to is None


def test_count_samples_by_host_last_15_minutes() -> None:
    q = agg("count samples by host in the last 15 minutes")
    assert (q.func, q.path, q.group_by) == ("count", None, "host")
    assert q.where.kind == "sample"
    assert q.where.ts_from == T_NOW - 900


def test_latest_10_events_of_session() -> None:
    r = parse_prompt("latest 10 events of session X", NOW)
    q = r.query
    assert isinstance(q, MetricQuery)
    assert (q.session, q.kind, q.limit, q.descending) == ("X", "event", 10, True)
    assert r.interpreted["type"] == "list" and r.interpreted["sort"] == "-timestamp"


def test_sum_value_of_name_last_24h() -> None:
    q = agg("sum value of name requests last 24h")
    assert (q.func, q.path) == ("sum", "value")
    assert q.where.name == "requests"
    assert q.where.ts_from == T_NOW - 86400


@pytest.mark.parametrize("prompt", EXAMPLES)
def test_every_published_example_parses(prompt: str) -> None:
    r = parse_prompt(prompt, NOW)
    assert r.interpreted["type"] in ("aggregate", "list")


# -- functions and their synonyms ------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "func"),
    [
        ("avg", "avg"), ("average", "avg"), ("mean", "avg"), ("min", "min"), ("minimum", "min"),
        ("lowest", "min"), ("max", "max"), ("maximum", "max"), ("peak", "max"), ("highest", "max"),
        ("sum", "sum"), ("total", "sum"),
    ],
)  # fmt: skip
def test_function_words(word: str, func: str) -> None:
    q = agg(f"{word} value")
    assert (q.func, q.path, q.group_by, q.limit) == (func, "value", None, 1)


@pytest.mark.parametrize(
    "prompt",
    ["count events", "count of events", "how many events", "number of events", "how many events?"],
)
def test_count_phrasings(prompt: str) -> None:
    q = agg(prompt)
    assert (q.func, q.path, q.where.kind) == ("count", None, "event")


def test_count_everything() -> None:
    q = agg("count")
    assert (q.func, q.where) == ("count", MetricQuery())


def test_aggregate_of_path_with_of_and_data_prefix() -> None:
    assert agg("average of cpu.percent").path == "cpu.percent"
    assert agg("avg data.cpu.percent").path == "cpu.percent"
    assert agg("show me the average of the value").path == "value"


# -- top / bottom -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "group", "func", "path", "kind"),
    [
        ("top 3 hosts by avg cpu.percent", "host", "avg", "cpu.percent", None),
        ("top 5 names by count", "name", "count", None, None),
        ("top 5 sessions by max mem.rss", "session", "max", "mem.rss", None),
        ("top 5 hosts by events", "host", "count", None, "event"),
        ("top 5 hosts with the most events", "host", "count", None, "event"),
        ("top 5 hosts by cpu.percent", "host", "avg", "cpu.percent", None),
        ("top 5 metrics by sum value", "name", "sum", "value", None),
        ("top 5 samples", "name", "count", None, "sample"),
        ("top 5 kinds", "kind", "count", None, None),
    ],
)
def test_top_n(prompt: str, group: str, func: str, path: str | None, kind: str | None) -> None:
    q = agg(prompt)
    assert (q.group_by, q.func, q.path, q.where.kind, q.ascending) == (
        group,
        func,
        path,
        kind,
        False,
    )
    assert q.limit == int(prompt.split()[1])


def test_top_without_number_defaults_to_ten_and_bottom_ascends() -> None:
    assert agg("top hosts").limit == 10
    q = agg("bottom 2 names by min value")
    assert (q.limit, q.ascending, q.func, q.group_by) == (2, True, "min", "name")
    assert agg("lowest 3 hosts by avg cpu.percent").ascending
    assert agg("top five hosts").limit == 5


# -- grouping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "group"),
    [
        ("count events by host", "host"),
        ("count events per name", "name"),
        ("count events grouped by session", "session"),
        ("count events for each kind", "kind"),
        ("count by hosts", "host"),
        ("avg value per metric", "name"),
    ],
)
def test_group_by(prompt: str, group: str) -> None:
    q = agg(prompt)
    assert q.group_by == group and q.limit == 100


def test_grouping_alone_implies_count() -> None:
    q = agg("events by host today")
    assert (q.func, q.group_by, q.where.kind, q.where.ts_from) == ("count", "host", "event", TODAY)


def test_limit_clause() -> None:
    assert agg("count events by host limit 3").limit == 3
    assert listing("events of host a limit 7").limit == 7


# -- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "count events of host web-1",
        "count events for host web-1",
        "count events where host is web-1",
        "count events where host = web-1",
        "count events with host web-1",
        "count events on host web-1",
        "count events host=web-1",
        "count events host:web-1",
        'count events for host "web-1"',
    ],
)
def test_host_filter_phrasings(prompt: str) -> None:
    assert agg(prompt).where.host == "web-1"


def test_every_filter_field_and_case_is_kept() -> None:
    q = agg(
        "count for session AbC and name Req.Total with tag env=prod tagged team:x kind sample host H1"
    )
    w = q.where
    assert (w.session, w.name, w.kind, w.host) == ("AbC", "Req.Total", "sample", "H1")
    assert w.tags == ("env=prod", "team:x")


def test_filter_synonyms() -> None:
    assert agg("sum value of metric requests").where.name == "requests"
    assert agg("count events named deploy").where.name == "deploy"
    assert agg("count where kind is events").where.kind == "event"
    assert agg("count tag=env=prod").where.tags == ("env=prod",)


def test_quoted_values_keep_spaces() -> None:
    assert listing("first 3 samples of session 'my session'").session == "my session"


# -- listings -------------------------------------------------------------------------------


def test_listings() -> None:
    q = listing("first 3 samples")
    assert (q.limit, q.descending, q.kind) == (3, False, "sample")
    assert listing("latest event").limit == 1
    assert listing("most recent 4 documents").descending
    q = listing("show events of host web-1 today")
    assert (q.kind, q.host, q.ts_from, q.limit, q.descending) == (
        "event",
        "web-1",
        TODAY,
        100,
        True,
    )
    q = listing("events of host web-1")  # filters alone: a listing
    assert (q.kind, q.host, q.descending) == ("event", "web-1", True)
    assert listing("oldest 2 metrics").kind is None


# -- time windows ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "seconds"),
    [
        ("last 15 minutes", 900), ("past 2 hours", 7200), ("in the last hour", 3600),
        ("over the past day", 86400), ("during the last 3 days", 3 * 86400),
        ("within the last week", 604800), ("last 2 weeks", 2 * 604800), ("last 90 seconds", 90),
        ("last 24h", 86400), ("last 15m", 900), ("last 15min", 900), ("past 2d", 172800),
        ("for the past 1.5 hours", 5400), ("last ten minutes", 600), ("previous hour", 3600),
        ("since 3 hours ago", 10800),
    ],
)  # fmt: skip
def test_relative_windows(window: str, seconds: int) -> None:
    q = agg(f"count events {window}")
    assert q.where.ts_from == pytest.approx(T_NOW - seconds)
    assert q.where.ts_to is None


def test_calendar_windows() -> None:
    w = agg("count today").where
    assert (w.ts_from, w.ts_to) == (TODAY, None)
    w = agg("count yesterday").where
    assert (w.ts_from, w.ts_to) == (TODAY - 86400, TODAY)
    assert agg("count this week").where.ts_from == TODAY  # NOW is a Monday
    assert agg("count this month").where.ts_from == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert agg("count this hour").where.ts_from == datetime(2026, 11, 23, 8, tzinfo=UTC).timestamp()
    assert agg("count since today").where.ts_from == TODAY
    w = agg("count on 2026-11-20").where
    assert (w.ts_from, w.ts_to) == (TODAY - 3 * 86400, TODAY - 2 * 86400)


def test_absolute_windows() -> None:
    d20 = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    assert agg("count since 2026-11-20").where.ts_from == d20
    assert agg("count since 2026-11-20T06:00:00Z").where.ts_from == d20 + 6 * 3600
    assert agg("count since 2026-11-20T06:00:00+02:00").where.ts_from == d20 + 4 * 3600
    assert agg("count since 2026-11-20 06:00").where.ts_from == d20 + 6 * 3600
    assert agg(f"count since {int(d20)}").where.ts_from == d20
    w = agg("count between 2026-11-20 and 2026-11-21T12:00:00Z").where
    assert (w.ts_from, w.ts_to) == (d20, d20 + 36 * 3600)
    w = agg("count from 2026-11-20 to 2026-11-21").where
    assert (w.ts_from, w.ts_to) == (d20, d20 + 86400)
    assert agg("count before 2026-11-20").where.ts_to == d20
    assert agg("count until 2026-11-20").where.ts_to == d20
    assert agg("count after 2026-11-20").where.ts_from == d20
    w = agg("count after 2026-11-20 before 2026-11-21").where
    assert (w.ts_from, w.ts_to) == (d20, d20 + 86400)


def test_naive_now_is_utc_and_other_zones_convert() -> None:
    naive = parse_prompt("count today", NOW.replace(tzinfo=None)).query
    assert isinstance(naive, AggQuery) and naive.where.ts_from == TODAY
    # 01:00 in UTC+3 is still 22:00 of the day before in UTC.
    east = datetime(2026, 11, 23, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    q = parse_prompt("count today", east).query
    assert isinstance(q, AggQuery) and q.where.ts_from == TODAY - 86400


def test_order_of_clauses_does_not_matter() -> None:
    a = agg("average cpu.percent of host web-1 in the last hour")
    b = agg("in the last hour, for host web-1: average cpu.percent")
    assert a == b


# -- what it refuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("what is the weather", "'weather'"),
        ("average", "of what"),
        ("average of host web-1", "of what"),
        ("top", "needs what to rank"),
        ("top 5 bananas", "needs what to rank"),
        ("latest 10 events by host", "not a listing"),
        ("count by colour", "group by host"),
        ("count events since", "'since' needs"),
        ("count events since banana", "'since' needs"),
        ("count events between 2026-11-20", "needs two dates"),
        ("count events between 2026-11-21 and 2026-11-20", "ends before"),
        ("count events since 2026-13-45", "not a date"),
        ("count last 0 minutes", "between 1 second"),
        ("count last 99999999 days", "between 1 second"),
        ("top 0 hosts", "between 1 and"),
        (f"top {MAX_LIMIT + 1} hosts", "between 1 and"),
        ("count events of host a of host b", "Two different hosts"),
        ("count events today yesterday", "Two starts"),
        ("count events avg value", "two questions"),
        ("count kind event kind sample", "Two different kinds"),
        ("count events limit", "'limit' needs"),
        ("count events of host", "needs a value"),
        ("hello", "'hello'"),
        ("x" * 1001, "too long"),
    ],
)
def test_refusals_say_why_and_what_is_understood(prompt: str, needle: str) -> None:
    with pytest.raises(PromptError) as e:
        parse_prompt(prompt, NOW)
    assert needle in str(e.value)
    assert "I understand" in str(e.value)
    assert e.value.examples == EXAMPLES


def test_prompt_error_is_a_value_error() -> None:
    assert issubclass(PromptError, ValueError)


def test_interpreted_is_json_able() -> None:
    import orjson

    for prompt in (*EXAMPLES, "first 3 samples with tag a tag b yesterday"):
        r = parse_prompt(prompt, NOW)
        assert orjson.loads(orjson.dumps(r.interpreted)) == r.interpreted
