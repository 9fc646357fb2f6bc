"""Natural prompts and what they must be understood as (the tuning table).

Written as support engineers write: lower case, typos, filler, ambiguity.
``expect`` is a subset of the plan: ``endpoint`` and the request's params
("*" = present, any value; None = absent), or ``status: 422`` with the name
that must be suggested.
"""

from __future__ import annotations

from typing import Any

from deltawire.testing.nl_dataset import ANY

A, M, S = "/aggregate", "/metrics", "/sessions"

PROMPTS: list[tuple[str, dict[str, Any]]] = [
    # -- plain aggregates of metric names (the metric is a noun: its value)
    (
        "average http_latency_ms",
        {"endpoint": A, "fn": "avg", "field": "value", "name": "http_latency_ms"},
    ),
    (
        "avg http_latency_ms",
        {"endpoint": A, "fn": "avg", "field": "value", "name": "http_latency_ms"},
    ),
    ("mean http latency", {"endpoint": A, "fn": "avg", "name": "http_latency_ms"}),
    (
        "average queue_depth in the last hour",
        {"endpoint": A, "fn": "avg", "name": "queue_depth", "from": ANY},
    ),
    ("avg queue depth last hour", {"endpoint": A, "fn": "avg", "name": "queue_depth", "from": ANY}),
    (
        "sum of errors_total by host",
        {"endpoint": A, "fn": "sum", "name": "errors_total", "by": "host"},
    ),
    ("total errors_total", {"endpoint": A, "fn": "sum", "name": "errors_total"}),
    ("max queue_depth", {"endpoint": A, "fn": "max", "field": "value", "name": "queue_depth"}),
    (
        "maximum http_latency_ms today",
        {"endpoint": A, "fn": "max", "name": "http_latency_ms", "from": ANY},
    ),
    ("min latency", {"endpoint": A, "fn": "min", "name": "http_latency_ms"}),
    ("what's the lowest queue depth", {"endpoint": A, "fn": "min", "name": "queue_depth"}),
    (
        "avg value of name http_latency_ms",
        {"endpoint": A, "fn": "avg", "field": "value", "name": "http_latency_ms"},
    ),
    ("queue_depth average", {"endpoint": A, "fn": "avg", "name": "queue_depth"}),
    (
        "whats the average http_latency_ms over the past 2 hours?",
        {"endpoint": A, "fn": "avg", "name": "http_latency_ms", "from": ANY},
    ),
    (
        "peak queue_depth yesterday",
        {"endpoint": A, "fn": "max", "name": "queue_depth", "from": ANY, "to": ANY},
    ),
    # -- percentiles and median
    (
        "p95 of http_latency_ms",
        {"endpoint": A, "fn": "p95", "field": "value", "name": "http_latency_ms"},
    ),
    ("p99 latency", {"endpoint": A, "fn": "p99", "name": "http_latency_ms"}),
    ("p50 http_latency_ms last 30 minutes", {"endpoint": A, "fn": "p50", "from": ANY}),
    ("median latency", {"endpoint": A, "fn": "p50", "name": "http_latency_ms"}),
    ("median http_latency_ms by hour", {"endpoint": A, "fn": "p50", "bucket": "1h"}),
    (
        "95th percentile latency today",
        {"endpoint": A, "fn": "p95", "name": "http_latency_ms", "from": ANY},
    ),
    ("90th percentile of queue_depth", {"endpoint": A, "fn": "p90", "name": "queue_depth"}),
    ("99 percentile http_latency_ms", {"endpoint": A, "fn": "p99"}),
    ("percentile 95 of latency", {"endpoint": A, "fn": "p95"}),
    ("p95 cpu on web-1", {"endpoint": A, "fn": "p95", "field": "cpu.percent", "host": "web-1"}),
    (
        "median memory of sess-c",
        {"endpoint": A, "fn": "p50", "field": "mem.rss", "session": "sess-c"},
    ),
    (
        "p95 duration_ms of request_failed",
        {"endpoint": A, "fn": "p95", "field": "duration_ms", "name": "request_failed"},
    ),
    ("p75 latency", {"status": 422}),
    # -- cpu and memory synonyms
    (
        "avg cpu of web-1",
        {"endpoint": A, "fn": "avg", "field": "cpu.percent", "host": "web-1", "name": "process"},
    ),
    ("average cpu", {"endpoint": A, "fn": "avg", "field": "cpu.percent", "name": "process"}),
    (
        "average cpu.percent of host web-1 in the last hour",
        {"endpoint": A, "fn": "avg", "field": "cpu.percent", "host": "web-1", "from": ANY},
    ),
    ("cpu usage on db-1", {"endpoint": A, "fn": "avg", "field": "cpu.percent", "host": "db-1"}),
    (
        "system cpu on db-1",
        {"endpoint": A, "field": "cpu.percent", "name": "system", "host": "db-1"},
    ),
    ("avg system cpu", {"endpoint": A, "fn": "avg", "field": "cpu.percent", "name": "system"}),
    ("memory usage of db-1", {"endpoint": A, "field": "mem.rss", "host": "db-1"}),
    (
        "what was the peak memory of session sess-a",
        {"endpoint": A, "fn": "max", "field": "mem.rss", "session": "sess-a"},
    ),
    (
        "max mem.rss of session sess-b since yesterday",
        {"endpoint": A, "fn": "max", "field": "mem.rss", "session": "sess-b", "from": ANY},
    ),
    ("max ram on web-2", {"endpoint": A, "fn": "max", "field": "mem.rss", "host": "web-2"}),
    ("avg rss per host", {"endpoint": A, "fn": "avg", "field": "mem.rss", "by": "host"}),
    (
        "system memory on db-1",
        {"endpoint": A, "field": "mem.used", "name": "system", "host": "db-1"},
    ),
    ("max threads", {"endpoint": A, "fn": "max", "field": "threads"}),
    (
        "average cpu.user for sess-d",
        {"endpoint": A, "fn": "avg", "field": "cpu.user", "session": "sess-d"},
    ),
    (
        "sum of cpu.system by session",
        {"endpoint": A, "fn": "sum", "field": "cpu.system", "by": "session"},
    ),
    ("avg mem.percent", {"endpoint": A, "fn": "avg", "field": "mem.percent", "name": "system"}),
    (
        "cpu of sess-c per 10 minutes",
        {"endpoint": A, "field": "cpu.percent", "session": "sess-c", "bucket": "10m"},
    ),
    # -- events and errors
    (
        "how many request_failed events in the last 30 minutes",
        {"endpoint": A, "fn": "count", "name": "request_failed", "from": ANY},
    ),
    ("count request_failed", {"endpoint": A, "fn": "count", "name": "request_failed"}),
    ("number of job_error events", {"endpoint": A, "fn": "count", "name": "job_error"}),
    (
        "errors per host today",
        {"endpoint": A, "fn": "count", "by": "host", "from": ANY, "kind": "event"},
    ),
    ("how many errors today", {"endpoint": A, "fn": "count", "kind": "event", "from": ANY}),
    ("failures by session", {"endpoint": A, "fn": "count", "by": "session", "kind": "event"}),
    (
        "count of failures on web-2",
        {"endpoint": A, "fn": "count", "host": "web-2", "kind": "event"},
    ),
    (
        "user_login count by host",
        {"endpoint": A, "fn": "count", "name": "user_login", "by": "host"},
    ),
    ("how many logins", {"status": 200}),
    (
        "request_failed per hour",
        {"endpoint": A, "fn": "count", "name": "request_failed", "bucket": "1h"},
    ),
    (
        "request_failed events every 10 minutes",
        {"endpoint": A, "fn": "count", "name": "request_failed", "bucket": "10m"},
    ),
    ("hourly errors", {"endpoint": A, "fn": "count", "bucket": "1h"}),
    ("job_error daily", {"endpoint": A, "fn": "count", "name": "job_error", "bucket": "1d"}),
    ("count events by name", {"endpoint": A, "fn": "count", "by": "name", "kind": "event"}),
    ("top 5 events today", {"endpoint": A, "fn": "count", "by": "name", "limit": "5", "from": ANY}),
    ("most common events", {"endpoint": A, "fn": "count", "by": "name", "order": "-value"}),
    (
        "how many deploy_finished events this week",
        {"endpoint": A, "fn": "count", "name": "deploy_finished", "from": ANY},
    ),
    (
        "avg duration_ms of request_failed",
        {"endpoint": A, "fn": "avg", "field": "duration_ms", "name": "request_failed"},
    ),
    (
        "max attempts of job_error",
        {"endpoint": A, "fn": "max", "field": "attempts", "name": "job_error"},
    ),
    (
        "request_failed on web-1 yesterday",
        {"endpoint": A, "fn": "count", "name": "request_failed", "host": "web-1", "to": ANY},
    ),
    (
        "count samples by host in the last 15 minutes",
        {"endpoint": A, "fn": "count", "by": "host", "from": ANY},
    ),
    ("how many samples from sess-d", {"endpoint": A, "fn": "count", "session": "sess-d"}),
    # -- rate
    (
        "rate of errors_total",
        {"endpoint": A, "fn": "rate", "field": "value", "name": "errors_total"},
    ),
    ("errors_total per second", {"endpoint": A, "fn": "rate", "name": "errors_total"}),
    ("rate of errors_total per 10 minutes", {"endpoint": A, "fn": "rate", "bucket": "10m"}),
    ("request rate of cpu.user", {"endpoint": A, "fn": "rate", "field": "cpu.user"}),
    ("rate of io for sess-a", {"status": 422}),
    (
        "errors_total rate in the last hour by host",
        {"endpoint": A, "fn": "rate", "by": "host", "from": ANY},
    ),
    # -- buckets
    ("avg cpu per hour", {"endpoint": A, "fn": "avg", "field": "cpu.percent", "bucket": "1h"}),
    (
        "average cpu every 10 minutes on web-1",
        {"endpoint": A, "fn": "avg", "bucket": "10m", "host": "web-1"},
    ),
    ("max memory per 5 min", {"endpoint": A, "fn": "max", "field": "mem.rss", "bucket": "5m"}),
    ("avg latency in 15 minute buckets", {"endpoint": A, "fn": "avg", "bucket": "15m"}),
    ("hourly avg queue_depth", {"endpoint": A, "fn": "avg", "bucket": "1h", "name": "queue_depth"}),
    (
        "daily max http_latency_ms this week",
        {"endpoint": A, "fn": "max", "bucket": "1d", "from": ANY},
    ),
    ("p95 latency per minute last hour", {"endpoint": A, "fn": "p95", "bucket": "1m", "from": ANY}),
    ("count samples every 30 mins", {"endpoint": A, "fn": "count", "bucket": "30m"}),
    ("average cpu per 2 hours today", {"endpoint": A, "bucket": "2h", "from": ANY}),
    # -- top / bottom / which
    (
        "which host had the highest cpu",
        {"endpoint": A, "field": "cpu.percent", "by": "host", "order": "-value", "limit": "1"},
    ),
    (
        "which host has the lowest cpu",
        {"endpoint": A, "by": "host", "order": "value", "limit": "1"},
    ),
    (
        "top 3 hosts by avg cpu.percent this week",
        {
            "endpoint": A,
            "fn": "avg",
            "field": "cpu.percent",
            "by": "host",
            "limit": "3",
            "from": ANY,
        },
    ),
    (
        "top 5 sessions by memory",
        {"endpoint": A, "field": "mem.rss", "by": "session", "limit": "5"},
    ),
    (
        "bottom 2 sessions by cpu",
        {"endpoint": A, "field": "cpu.percent", "by": "session", "order": "value", "limit": "2"},
    ),
    (
        "which session used the most cpu",
        {"endpoint": A, "field": "cpu.percent", "by": "session", "limit": "1", "order": "-value"},
    ),
    (
        "host with the most errors",
        {"endpoint": A, "fn": "count", "by": "host", "limit": "1", "kind": "event"},
    ),
    (
        "which host had the most request_failed events yesterday",
        {
            "endpoint": A,
            "fn": "count",
            "name": "request_failed",
            "by": "host",
            "limit": "1",
            "to": ANY,
        },
    ),
    ("busiest host", {"endpoint": A, "fn": "count", "by": "host", "limit": "1"}),
    (
        "which sessions have the highest memory",
        {"endpoint": A, "field": "mem.rss", "by": "session", "order": "-value"},
    ),
    (
        "top hosts by request_failed",
        {"endpoint": A, "fn": "count", "by": "host", "name": "request_failed"},
    ),
    ("worst latency by host", {"endpoint": A, "name": "http_latency_ms", "by": "host"}),
    ("highest cpu on web-1", {"endpoint": A, "fn": "max", "field": "cpu.percent", "host": "web-1"}),
    (
        "lowest memory of sess-d",
        {"endpoint": A, "fn": "min", "field": "mem.rss", "session": "sess-d"},
    ),
    (
        "top 10 sessions by request_failed count",
        {"endpoint": A, "fn": "count", "by": "session", "limit": "10"},
    ),
    (
        "which host used the least memory",
        {"endpoint": A, "field": "mem.rss", "by": "host", "order": "value", "limit": "1"},
    ),
    ("top 3 hosts by p95 cpu", {"endpoint": A, "fn": "p95", "by": "host", "limit": "3"}),
    # -- thresholds
    (
        "request_failed longer than 100 ms",
        {"endpoint": A, "fn": "count", "name": "request_failed", "where": "duration_ms > 100"},
    ),
    (
        "how many request_failed took longer than 200ms",
        {"endpoint": A, "fn": "count", "where": "duration_ms > 200"},
    ),
    (
        "count request_failed slower than 1 s",
        {"endpoint": A, "fn": "count", "where": "duration_ms > 1000"},
    ),
    (
        "http_latency_ms over 500",
        {"endpoint": A, "fn": "count", "name": "http_latency_ms", "where": "value > 500"},
    ),
    (
        "how many times was queue_depth above 5",
        {"endpoint": A, "fn": "count", "name": "queue_depth", "where": "value > 5"},
    ),
    ("samples with cpu over 90", {"endpoint": A, "fn": "count", "where": "cpu.percent > 90"}),
    (
        "count cpu > 50 by host",
        {"endpoint": A, "fn": "count", "by": "host", "where": "cpu.percent > 50"},
    ),
    (
        "sessions where memory exceeded 500 mb",
        {"endpoint": A, "by": "session", "where": "mem.rss > 500000000"},
    ),
    ("latency under 20", {"endpoint": A, "name": "http_latency_ms", "where": "value < 20"}),
    ("queue_depth at least 6 today", {"endpoint": A, "where": "value >= 6", "from": ANY}),
    ("avg cpu when cpu is over 40", {"endpoint": A, "fn": "avg", "where": "cpu.percent > 40"}),
    (
        "job_error with more than 1 attempts",
        {"endpoint": A, "name": "job_error", "where": "attempts > 1"},
    ),
    # -- filters: host, session, tag
    ("avg cpu for tag prod", {"endpoint": A, "tag": ["prod"]}),
    ("average cpu of hosts tagged canary", {"endpoint": A, "tag": ["canary"]}),
    ("count request_failed with tag prod by host", {"endpoint": A, "tag": ["prod"], "by": "host"}),
    ("avg cpu host=db-1", {"endpoint": A, "host": "db-1"}),
    ("mean memory session=sess-a", {"endpoint": A, "session": "sess-a"}),
    ("avg cpu of staging", {"endpoint": A, "tag": ["staging"]}),
    ("max cpu for sess-b on web-2", {"endpoint": A, "session": "sess-b", "host": "web-2"}),
    ("count events from db-1", {"endpoint": A, "fn": "count", "host": "db-1", "kind": "event"}),
    ('avg "queue_depth"', {"endpoint": A, "name": "queue_depth"}),
    # -- time windows
    ("avg cpu since 2026-11-23", {"endpoint": A, "from": "2026-11-23T00:00:00Z"}),
    (
        "count job_error between 2026-11-22 and 2026-11-23",
        {"endpoint": A, "from": "2026-11-22T00:00:00Z", "to": "2026-11-23T00:00:00Z"},
    ),
    ("avg cpu over the last day", {"endpoint": A, "from": "2026-11-22T12:00:00Z"}),
    ("max memory in the past 6 hours", {"endpoint": A, "from": "2026-11-23T06:00:00Z"}),
    ("job_error count 2 days ago", {"endpoint": A, "from": "2026-11-21T12:00:00Z"}),
    ("avg cpu last 24h", {"endpoint": A, "from": "2026-11-22T12:00:00Z"}),
    ("avg cpu this hour", {"endpoint": A, "from": "2026-11-23T12:00:00Z"}),
    ("count errors this month", {"endpoint": A, "from": "2026-11-01T00:00:00Z"}),
    (
        "max queue_depth on 2026-11-23",
        {"endpoint": A, "from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"},
    ),
    # -- sessions
    (
        "sessions that ended with a non-zero exit code",
        {"endpoint": S, "ended": "true", "where": "exit_code != 0"},
    ),
    ("how many sessions are live", {"endpoint": S, "connected": "true", "answer": "count"}),
    ("when did session sess-a end", {"endpoint": S, "session": "sess-a", "answer": "one"}),
    ("sessions per host", {"endpoint": S, "by": "host", "answer": "count_by_host"}),
    ("live sessions", {"endpoint": S, "connected": "true"}),
    ("which sessions are still running", {"endpoint": S, "connected": "true"}),
    ("active sessions on web-1", {"endpoint": S, "connected": "true", "host": "web-1"}),
    ("ended sessions", {"endpoint": S, "ended": "true"}),
    ("sessions that crashed today", {"endpoint": S, "where": "exit_code != 0", "from": ANY}),
    ("failed sessions", {"endpoint": S, "where": "exit_code != 0"}),
    ("sessions with exit code 1", {"endpoint": S, "exit_code": "1"}),
    ("sessions that exited cleanly", {"endpoint": S, "exit_code": "0"}),
    ("how many sessions per host", {"endpoint": S, "answer": "count_by_host"}),
    ("how many sessions on db-1", {"endpoint": S, "host": "db-1", "answer": "count"}),
    ("when did sess-b start", {"endpoint": S, "session": "sess-b"}),
    ("exit code of session sess-b", {"endpoint": S, "session": "sess-b"}),
    ("is sess-c still connected", {"endpoint": S, "session": "sess-c"}),
    ("list sessions", {"endpoint": S}),
    ("sessions tagged prod", {"endpoint": S, "tag": ["prod"]}),
    ("count sessions by host", {"endpoint": S, "answer": "count_by_host"}),
    ("number of ended sessions", {"endpoint": S, "ended": "true", "answer": "count"}),
    ("disconnected sessions", {"endpoint": S, "connected": "false"}),
    # -- latest / current / listings
    (
        "current memory of session sess-c",
        {
            "endpoint": M,
            "session": "sess-c",
            "limit": "1",
            "sort": "-timestamp",
            "field": "mem.rss",
        },
    ),
    ("latest cpu of db-1", {"endpoint": M, "host": "db-1", "limit": "1", "field": "cpu.percent"}),
    ("what is the cpu of sess-d right now", {"endpoint": M, "session": "sess-d", "limit": "1"}),
    ("current queue_depth", {"endpoint": M, "name": "queue_depth", "limit": "1", "field": "value"}),
    ("latest http_latency_ms", {"endpoint": M, "name": "http_latency_ms", "limit": "1"}),
    (
        "show the last 10 request_failed events",
        {"endpoint": M, "name": "request_failed", "limit": "10", "sort": "-timestamp"},
    ),
    (
        "latest 10 events of session sess-a",
        {"endpoint": M, "session": "sess-a", "limit": "10", "kind": "event"},
    ),
    ("list events on web-2", {"endpoint": M, "host": "web-2", "kind": "event"}),
    ("show me recent errors", {"endpoint": M, "kind": "event", "sort": "-timestamp"}),
    (
        "first 5 job_error events",
        {"endpoint": M, "name": "job_error", "limit": "5", "sort": "timestamp"},
    ),
    ("last 3 user_login", {"endpoint": M, "name": "user_login", "limit": "3"}),
    ("show samples from sess-c", {"endpoint": M, "session": "sess-c", "kind": "sample"}),
    (
        "show 5 most recent deploy_finished",
        {"endpoint": M, "name": "deploy_finished", "limit": "5"},
    ),
    # -- misspellings: keywords are corrected, names are refused with a suggestion
    ("avrage cpu of web-1", {"endpoint": A, "fn": "avg", "host": "web-1"}),
    ("maxmum memory", {"endpoint": A, "fn": "max", "field": "mem.rss"}),
    ("avg cpu.pecent", {"status": 422, "suggest": "cpu.percent"}),
    ("avg cpu of host web1", {"status": 422, "suggest": "web-1"}),
    ("avg cpu of web1", {"status": 422, "suggest": "web-1"}),
    ("how many request_faild events", {"status": 422, "suggest": "request_failed"}),
    ("count request_faild", {"status": 422, "suggest": "request_failed"}),
    ("avg http_latncy_ms", {"status": 422, "suggest": "http_latency_ms"}),
    ("max memory of session sess-q", {"status": 422}),
    ("average cpu on web-9", {"status": 422, "suggest": "web-1"}),
    ("avg queue_deph", {"status": 422, "suggest": "queue_depth"}),
    ("events tagged prd", {"status": 422, "suggest": "prod"}),
    ("avg gpu.util", {"status": 422}),
    ("p95 of foo", {"status": 422}),
    ("", {"status": 422}),
    ("hello", {"status": 422}),
    ("blah blah blah", {"status": 422}),
    # -- session 5: verbs that are no typos, exclusions and value ranges refused,
    # times of day, "and a half"
    (
        "which host uses the most cpu",
        {"endpoint": A, "field": "cpu.percent", "by": "host", "order": "-value", "limit": "1"},
    ),
    ("what does sess-a use for memory", {"endpoint": A, "field": "mem.rss", "session": "sess-a"}),
    ("avg cpu excluding web-1", {"status": 422}),
    ("avg cpu not on web-2", {"status": 422}),
    ("memory of everything other than sess-c", {"status": 422}),
    ("cpu between 50 and 60", {"status": 422}),
    (
        "cpu on web-1 between 10:00 and 11:00",
        {
            "endpoint": A,
            "host": "web-1",
            "from": "2026-11-23T10:00:00Z",
            "to": "2026-11-23T11:00:00Z",
        },
    ),
    ("errors since 9am", {"endpoint": A, "fn": "count", "from": "2026-11-23T09:00:00Z"}),
    # a time of day still ahead today is yesterday's
    ("count job_error after 14:30", {"endpoint": A, "from": "2026-11-22T14:30:00Z"}),
    (
        "avg cpu in the last hour and a half",
        {"endpoint": A, "fn": "avg", "from": "2026-11-23T10:30:00Z"},
    ),
    (
        "avg queue_depth over the past two and a half hours",
        {"endpoint": A, "name": "queue_depth", "from": "2026-11-23T09:30:00Z"},
    ),
    # -- fixed after held-out set 8: "used by" is a verb, qualifiers before
    # "memory", gone/up sessions, counts per bucket, "N busiest", a stream by name
    ("memory used by sess-c", {"endpoint": A, "field": "mem.rss", "session": "sess-c"}),
    ("memory used on db-1", {"endpoint": A, "field": "mem.used", "host": "db-1"}),
    ("available memory on db-1", {"endpoint": A, "field": "mem.available", "host": "db-1"}),
    ("virtual memory of sess-a", {"endpoint": A, "field": "mem.vms", "session": "sess-a"}),
    ("sessions that went down", {"endpoint": S, "connected": "false"}),
    ("list disconnected sessions", {"endpoint": S, "connected": "false"}),
    ("how many sessions are up", {"endpoint": S, "connected": "true", "answer": "count"}),
    (
        "3 quietest hosts",
        {"endpoint": A, "fn": "count", "by": "host", "order": "value", "limit": "3"},
    ),
    (
        "user_login events per hour today",
        {"endpoint": A, "fn": "count", "name": "user_login", "bucket": "1h", "from": ANY},
    ),
    ("count samples of the process stream", {"endpoint": A, "fn": "count", "name": "process"}),
    # -- and after set 6: failures as exit codes, "exit status", one named event
    (
        "number of sessions that ended in failure",
        {"endpoint": S, "where": "exit_code != 0", "answer": "count"},
    ),
    ("exit status for sess-b", {"endpoint": S, "session": "sess-b"}),
    ("the latest deploy_finished", {"endpoint": M, "name": "deploy_finished", "limit": "1"}),
    # -- found after held-out set 9 (50 of 50 untouched), by asking more
    # questions of the same kinds: real words "corrected" into keywords,
    # vague counts, "N min buckets", "top host", session life, a day's time
    (
        "request_failed in the last four hours",
        {"endpoint": A, "name": "request_failed", "from": "2026-11-23T08:00:00Z"},
    ),
    (
        "whats the cpu looking like on web-1 over the last couple of hours",
        {
            "endpoint": A,
            "fn": "avg",
            "field": "cpu.percent",
            "host": "web-1",
            "from": "2026-11-23T10:00:00Z",
        },
    ),
    (
        "what does the cpu look like on db-1",
        {"endpoint": A, "field": "cpu.percent", "host": "db-1"},
    ),
    (
        "how many times did job_error fire in the past 24h",
        {"endpoint": A, "fn": "count", "name": "job_error", "from": "2026-11-22T12:00:00Z"},
    ),
    ("how fast is errors_total growing", {"endpoint": A, "fn": "rate", "name": "errors_total"}),
    (
        "avg cpu over the trailing 2 hours",
        {
            "endpoint": A,
            "fn": "avg",
            "field": "cpu.percent",
            "name": "process",
            "from": "2026-11-23T10:00:00Z",
        },
    ),
    (
        "which session is burning the most cpu",
        {"endpoint": A, "field": "cpu.percent", "by": "session", "order": "-value", "limit": "1"},
    ),
    (
        "avg latency from 10:00 till 11:00",
        {
            "endpoint": A,
            "name": "http_latency_ms",
            "from": "2026-11-23T10:00:00Z",
            "to": "2026-11-23T11:00:00Z",
        },
    ),
    ("slow requests today", {"endpoint": A, "name": "request_failed", "field": "duration_ms"}),
    (
        "latency over the past couple hours",
        {"endpoint": A, "name": "http_latency_ms", "from": "2026-11-23T10:00:00Z"},
    ),
    (
        "errors in the last several minutes",
        {"endpoint": A, "fn": "count", "from": "2026-11-23T11:57:00Z"},
    ),
    (
        "avg cpu in the past couple of days",
        {"endpoint": A, "fn": "avg", "from": "2026-11-21T12:00:00Z"},
    ),
    (
        "sess-c cpu 10 min buckets last hour",
        {"endpoint": A, "fn": "avg", "field": "cpu.percent", "session": "sess-c", "bucket": "10m"},
    ),
    (
        "cpu 10 min intervals for db-1",
        {"endpoint": A, "fn": "avg", "host": "db-1", "bucket": "10m"},
    ),
    ("p95 latency in 30 min windows", {"endpoint": A, "fn": "p95", "bucket": "30m"}),
    ("avg cpu at 15 minute intervals", {"endpoint": A, "fn": "avg", "bucket": "15m"}),
    ("min cpu in the last 10 min", {"endpoint": A, "fn": "min", "from": "2026-11-23T11:50:00Z"}),
    (
        "top host by request_failed",
        {"endpoint": A, "fn": "count", "by": "host", "order": "-value", "limit": "1"},
    ),
    ("top hosts by errors", {"endpoint": A, "by": "host", "order": "-value", "limit": "10"}),
    ("uptime of sess-a", {"endpoint": S, "session": "sess-a", "answer": "one"}),
    ("how old is sess-c", {"endpoint": S, "session": "sess-c", "answer": "one"}),
    (
        "how much memory was sess-a using at the end",
        {"endpoint": M, "answer": "latest", "field": "mem.rss", "session": "sess-a"},
    ),
    ("final memory of sess-b", {"endpoint": M, "answer": "latest", "field": "mem.rss"}),
    ("avg cpu since yesterday noon", {"endpoint": A, "from": "2026-11-22T12:00:00Z"}),
    (
        "job_error since yesterday at 3pm",
        {"endpoint": A, "name": "job_error", "from": "2026-11-22T15:00:00Z"},
    ),
    (
        "errors between yesterday 10am and yesterday 2pm",
        {"endpoint": A, "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T14:00:00Z"},
    ),
    ("cpu yesterday at 3pm", {"status": 422}),
    # hosts asked about as such: their sessions say whether they are up
    ("is db-1 up", {"endpoint": S, "host": "db-1", "connected": "true"}),
    ("is web-2 still reporting", {"endpoint": S, "host": "web-2", "connected": "true"}),
    ("is web-1 down", {"endpoint": S, "host": "web-1", "connected": "false"}),
    ("list all hosts", {"endpoint": S, "answer": "count_by_host"}),
    ("how many servers are live", {"endpoint": S, "connected": "true", "answer": "count_by_host"}),
    (
        "how many sessions exited non zero today",
        {"endpoint": S, "where": "exit_code != 0", "answer": "count"},
    ),
    ("p 95 latency", {"endpoint": A, "fn": "p95", "name": "http_latency_ms"}),
    ("latency 95th", {"endpoint": A, "fn": "p95", "name": "http_latency_ms"}),
    (
        "how long do failed requests take",
        {"endpoint": A, "fn": "avg", "field": "duration_ms", "name": "request_failed"},
    ),
    # "sort/rank/order by" keeps the group; ">=" stays one operator; a size
    # with nothing named is memory; "how many <path>" is its value; equality refused
    (
        "sort sessions by memory",
        {"endpoint": A, "field": "mem.rss", "by": "session", "order": "-value"},
    ),
    (
        "hosts ordered by cpu",
        {"endpoint": A, "field": "cpu.percent", "by": "host", "order": "-value"},
    ),
    ("rank sessions by request_failed", {"endpoint": A, "fn": "count", "by": "session"}),
    ("queue_depth >= 5 in the last hour", {"endpoint": A, "where": "value >= 5"}),
    ("latency <= 50", {"endpoint": A, "name": "http_latency_ms", "where": "value <= 50"}),
    (
        "sessions using more than 400mb",
        {"endpoint": A, "field": "mem.rss", "by": "session", "where": "mem.rss > 400000000"},
    ),
    ("how many threads does sess-c have", {"endpoint": A, "fn": "avg", "field": "threads"}),
    ("how many request_failed with status 500", {"status": 422}),
    # "%" is a word ("cpu%", "mem usage in %"); "the last <one>" is one, "the
    # last <name> events" a page
    ("cpu% on web-1", {"endpoint": A, "field": "cpu.percent", "host": "web-1"}),
    ("mem usage in % on db-1", {"endpoint": A, "field": "mem.percent", "host": "db-1"}),
    ("cpu over 50 % on db-1", {"endpoint": A, "where": "cpu.percent > 50"}),
    ("when was the last deploy", {"endpoint": M, "name": "deploy_finished", "limit": "1"}),
    ("last request_failed on web-2", {"endpoint": M, "host": "web-2", "limit": "1"}),
    (
        "show the last request_failed events",
        {"endpoint": M, "name": "request_failed", "limit": "20"},
    ),
    ("longest running session", {"endpoint": S, "connected": "true"}),
    # named days and parts of days were ignored (answered over all time)
    ("job_error since friday", {"endpoint": A, "from": "2026-11-20T00:00:00Z", "to": None}),
    (
        "errors last night",
        {"endpoint": A, "from": "2026-11-22T18:00:00Z", "to": "2026-11-23T06:00:00Z"},
    ),
    (
        "cpu yesterday afternoon",
        {"endpoint": A, "from": "2026-11-22T12:00:00Z", "to": "2026-11-22T18:00:00Z"},
    ),
    (
        "job_error last monday",
        {"endpoint": A, "from": "2026-11-16T00:00:00Z", "to": "2026-11-17T00:00:00Z"},
    ),
    (
        "errors on saturday",
        {"endpoint": A, "from": "2026-11-21T00:00:00Z", "to": "2026-11-22T00:00:00Z"},
    ),
    ("errors since the weekend", {"endpoint": A, "from": "2026-11-21T00:00:00Z"}),
    ("cpu this morning", {"endpoint": A, "from": "2026-11-23T00:00:00Z"}),
    # "slowest"/"fastest" measure time, ranked or not
    (
        "which host has the slowest requests",
        {"endpoint": A, "field": "duration_ms", "by": "host", "order": "-value", "limit": "1"},
    ),
    ("slowest request_failed", {"endpoint": A, "fn": "max", "field": "duration_ms"}),
    ("fastest request_failed on web-1", {"endpoint": A, "fn": "min", "field": "duration_ms"}),
    # held-out set 11's misses (written blind), and more of their kinds:
    # how a host or session is doing; what changed; chat around a question;
    # events named by their verb; a path's last part; units of size and time
    ("how's db-1 doing", {"endpoint": S, "host": "db-1", "connected": None, "ended": None}),
    ("how's web-2 looking", {"endpoint": S, "host": "web-2"}),
    ("how are things on web-1", {"endpoint": S, "host": "web-1"}),
    ("status of sess-c", {"endpoint": S, "session": "sess-c"}),
    ("is db-1 ok", {"endpoint": S, "host": "db-1", "ended": None, "exit_code": None}),
    ("sessions that exited ok", {"endpoint": S, "exit_code": "0"}),
    (
        "what changed on web-1 in the last hour",
        {"endpoint": M, "kind": "event", "host": "web-1", "from": "2026-11-23T11:00:00Z"},
    ),
    ("anything unusual on db-1", {"endpoint": M, "kind": "event", "host": "db-1"}),
    ("what's going on with sess-b", {"endpoint": M, "kind": "event", "session": "sess-b"}),
    (
        "hey, quick one - a customer says things got really slow around lunchtime, could you"
        " pull the 99th percentile of http_latency_ms for the last 3 hours, broken down per"
        " hour? thanks!",
        {
            "endpoint": A,
            "fn": "p99",
            "name": "http_latency_ms",
            "bucket": "1h",
            "from": "2026-11-23T09:00:00Z",
        },
    ),
    (
        "hi there, I'm on call and got paged... which host had the most request_failed events"
        " in the last hour? cheers",
        {"endpoint": A, "fn": "count", "by": "host", "order": "-value", "limit": "1"},
    ),
    (
        "ok so I need the max memory for sess-b, it might have leaked \u2014 thank you",
        {"endpoint": A, "fn": "max", "field": "mem.rss", "session": "sess-b", "from": None},
    ),
    (
        "how many users logged in today",
        {"endpoint": A, "fn": "count", "name": "user_login", "from": "2026-11-23T00:00:00Z"},
    ),
    ("did anyone log in on web-1", {"endpoint": A, "fn": "count", "name": "user_login"}),
    ("how many times did web-1 deploy", {"endpoint": A, "name": "deploy_finished"}),
    ("sess-c vms", {"endpoint": A, "field": "mem.vms", "session": "sess-c"}),
    ("sess-c user cpu", {"endpoint": A, "field": "cpu.user", "session": "sess-c"}),
    ("system cpu on db-1", {"endpoint": A, "field": "cpu.percent", "name": "system"}),
    ("memory > 300M", {"endpoint": A, "field": "mem.rss", "where": "mem.rss > 314572800"}),
    ("request_failed longer than 2m", {"endpoint": A, "where": "duration_ms > 120000"}),
    ("request_failed over 2 minutes", {"endpoint": A, "where": "duration_ms > 120000"}),
    (
        "avg cpu over 2 hours",
        {"endpoint": A, "fn": "avg", "where": None, "from": "2026-11-23T10:00:00Z"},
    ),
    ("job_error over 2 days", {"endpoint": A, "where": None, "from": "2026-11-21T12:00:00Z"}),
    ("request_failed status over 400", {"endpoint": A, "where": "status > 400"}),
    # real words one edit from a keyword are left alone ("leaking" is no "eating",
    # "including" no "excluding"); a restart is a session's start
    ("is memory leaking on sess-c", {"endpoint": A, "field": "mem.rss", "session": "sess-c"}),
    ("avg cpu including web-1", {"endpoint": A, "fn": "avg", "host": "web-1"}),
    ("rate of the errors_total counter", {"endpoint": A, "fn": "rate", "name": "errors_total"}),
    (
        "did db-1 restart today",
        {"endpoint": S, "host": "db-1", "from": "2026-11-23T00:00:00Z"},
    ),
    # -- set 12's misses and their siblings (fixed by category, not by prompt)
    # "at the moment", "as of now": the latest value, never an average
    (
        "what's the memory of sess-d at the moment",
        {"endpoint": M, "answer": "latest", "session": "sess-d", "field": "mem.rss"},
    ),
    ("cpu of web-1 at the moment", {"endpoint": M, "answer": "latest", "host": "web-1"}),
    ("sess-b memory as of now", {"endpoint": M, "answer": "latest", "field": "mem.rss"}),
    ("queue_depth at present", {"endpoint": M, "answer": "latest", "name": "queue_depth"}),
    # a session that fails is one that exited non-zero; "errors by session" stay events
    ("any sessions fail?", {"endpoint": S, "where": "exit_code != 0"}),
    ("did any session fail today", {"endpoint": S, "where": "exit_code != 0", "from": ANY}),
    ("which sessions failed", {"endpoint": S, "where": "exit_code != 0"}),
    ("sessions that fail", {"endpoint": S, "where": "exit_code != 0"}),
    ("failures per session", {"endpoint": A, "fn": "count", "by": "session", "kind": "event"}),
    # a window in the story of a ticket ("a ticket from this morning"), then one in
    # its ask, in another sentence: the ask's; in one sentence, still refused
    (
        "Hi team, I'm looking into a ticket from this morning where jobs kept failing on the"
        " database host; can you count how many job_error events db-1 had in the last 24"
        " hours and split them per hour so I can see when it started?",
        {
            "endpoint": A,
            "fn": "count",
            "name": "job_error",
            "host": "db-1",
            "bucket": "1h",
            "from": "2026-11-22T12:00:00Z",
        },
    ),
    (
        "Got a ticket from yesterday. Show avg cpu on web-1 in the last hour",
        {"endpoint": A, "fn": "avg", "host": "web-1", "from": "2026-11-23T11:00:00Z", "to": None},
    ),
    ("avg cpu today and yesterday", {"status": 422}),
    # two sessions compared, as two hosts are
    (
        "compare memory of sess-a and sess-d",
        {"endpoint": A, "field": "mem.rss", "by": "session", "only": ["sess-a", "sess-d"]},
    ),
    (
        "avg cpu of sess-b vs sess-c",
        {"endpoint": A, "fn": "avg", "by": "session", "only": ["sess-b", "sess-c"]},
    ),
    ("is sess-a or sess-b live", {"status": 422}),
    # a data path named in the singular
    ("thread count on web-2", {"field": "threads", "host": "web-2"}),
    ("avg thread for sess-c", {"endpoint": A, "fn": "avg", "field": "threads"}),
    # hedges are filler, not names
    (
        "what's the average cpu across all prod hosts for roughly the last few hours",
        {
            "endpoint": A,
            "fn": "avg",
            "field": "cpu.percent",
            "tag": "prod",
            "from": "2026-11-23T09:00:00Z",
        },
    ),
    ("approximately how many job_error today", {"endpoint": A, "fn": "count", "from": ANY}),
    (
        "avg memory of web-1 over roughly the last 2 hours",
        {"endpoint": A, "fn": "avg", "host": "web-1", "from": "2026-11-23T10:00:00Z"},
    ),
    # sizes: MB/GB decimal, MiB/GiB and a bare M/G (as top and psutil print) binary
    ("sessions using over 0.5 GB", {"endpoint": A, "where": "mem.rss > 500000000"}),
    ("hosts where memory is above 800 MB", {"endpoint": A, "where": "mem.rss > 800000000"}),
    ("hosts with memory over 1 gig", {"endpoint": A, "where": "mem.rss > 1000000000"}),
    ("memory above 2 GiB", {"endpoint": A, "where": "mem.rss > 2147483648"}),
    ("memory over 512 MiB by host", {"endpoint": A, "where": "mem.rss > 536870912"}),
    ("memory > 2G", {"endpoint": A, "where": "mem.rss > 2147483648"}),
    # -- set 14's kinds (its first measurement: 45 of 50), each with siblings
    # a time of day before its day, and "am"/"pm" written apart from the hour
    (
        "avg cpu per host since 9pm yesterday",
        {"endpoint": A, "fn": "avg", "by": "host", "from": "2026-11-22T21:00:00Z"},
    ),
    (
        "count job_error between 1pm yesterday and 9am today",
        {
            "endpoint": A,
            "fn": "count",
            "from": "2026-11-22T13:00:00Z",
            "to": "2026-11-23T09:00:00Z",
        },
    ),
    ("user logins since 9 am", {"endpoint": A, "fn": "count", "from": "2026-11-23T09:00:00Z"}),
    (
        "p95 latency since 7:30 p.m. yesterday",
        {"endpoint": A, "fn": "p95", "name": "http_latency_ms", "from": "2026-11-22T19:30:00Z"},
    ),
    # N of a group before "with the highest/lowest"
    (
        "2 hosts with the lowest avg cpu",
        {"endpoint": A, "fn": "avg", "by": "host", "order": "value", "limit": "2"},
    ),
    (
        "4 sessions with the most job errors",
        {"endpoint": A, "fn": "count", "by": "session", "order": "-value", "limit": "4"},
    ),
    # "any host over X": which hosts (with a threshold; "did any session crash" is not)
    (
        "is any host above 90% cpu",
        {"endpoint": A, "fn": "count", "by": "host", "where": "cpu.percent > 90"},
    ),
    (
        "any session using more than 500MB?",
        {"endpoint": A, "by": "session", "where": "mem.rss > 500000000"},
    ),
    # the people and programs around a ticket are not names
    (
        "a customer on web-1 says the app is slow: avg latency in the last hour",
        {
            "endpoint": A,
            "fn": "avg",
            "name": "http_latency_ms",
            "host": "web-1",
            "from": "2026-11-23T11:00:00Z",
        },
    ),
    (
        "question from our support team: how many user logins today",
        {"endpoint": A, "fn": "count", "name": "user_login", "from": "2026-11-23T00:00:00Z"},
    ),
]
