"""/query end to end, in process: a data set with known answers in a real SQLite
store, questions as people ask them, and the numbers checked."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from deltawire.collector.api import Deps, LocalCache, create_app
from deltawire.collector.stores import open_store
from deltawire.testing import nl_dataset
from deltawire.testing.harness import wait_until
from deltawire.testing.nl_dataset import Dataset


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Dataset]]:
    # Half a minute off the minute: "the last 45 minutes" then has a margin on
    # both sides, whatever the seconds between loading and asking.
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=30)
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path_factory.mktemp('nl') / 'store.db'}")
    else:
        uri = request.getfixturevalue("mongo_uri")
        store = open_store(uri, app_env=f"nl{uuid.uuid4().hex[:12]}")
    store.open()
    data = nl_dataset.load(store, nl_dataset.build(now))
    app = create_app(Deps(store, LocalCache(size=0)))
    with TestClient(app) as client:
        yield client, data
    store.close()


def ask(world: tuple[TestClient, Dataset], prompt: str, status: int = 200) -> dict[str, Any]:
    r = world[0].get("/query", params={"prompt": prompt})
    assert r.status_code == status, r.text
    return r.json()


def docs(data: Dataset, **match: Any) -> list[Any]:
    return [d for d in data.docs if all(getattr(d, k) == v for k, v in match.items())]


def mean(xs: list[float]) -> float:
    return math.fsum(xs) / len(xs)


def test_average_cpu_of_a_host(world: Any) -> None:
    body = ask(world, "average cpu of web-1")
    want = mean([d.data["cpu"]["percent"] for d in docs(world[1], name="process", host="web-1")])
    assert body["rows"][0]["value"] == pytest.approx(want)
    assert body["interpreted"]["params"] == {
        "fn": "avg", "field": "cpu.percent", "name": "process", "host": "web-1"
    }  # fmt: skip
    assert any("process samples" in n for n in body["notes"])  # cpu was ambiguous: said which


def test_metric_name_as_a_noun_and_its_percentile(world: Any) -> None:
    assert ask(world, "max queue_depth")["rows"][0]["value"] == 6
    values = sorted(v for n, v, _t, _g in world[1].points if n == "http_latency_ms")
    p95 = values[round(0.95 * (len(values) - 1))]
    assert ask(world, "p95 of http latency")["rows"][0]["value"] == pytest.approx(p95, rel=0.02)


def test_event_counts_windows_and_groups(world: Any) -> None:
    data = world[1]
    n = len(docs(data, name="request_failed"))
    assert ask(world, "how many request_failed events in the last 4 hours")["rows"][0]["value"] == n
    rows = ask(world, "errors per host")["rows"]
    want: dict[str, int] = {}
    for d in data.docs:
        if d.name in ("request_failed", "job_error"):
            want[d.host] = want.get(d.host, 0) + 1
    assert {r["group"]: r["value"] for r in rows} == want


def test_superlatives_and_top(world: Any) -> None:
    rows = ask(world, "which host had the highest cpu")["rows"]
    assert [r["group"] for r in rows] == ["db-1"]
    rows = ask(world, "top 2 sessions by memory")["rows"]
    assert [r["group"] for r in rows] == ["sess-c", "sess-b"]
    top_c = max(d.data["mem"]["rss"] for d in docs(world[1], name="process", session="sess-c"))
    assert rows[0]["value"] == top_c


def test_threshold_on_an_event_path(world: Any) -> None:
    body = ask(world, "count request_failed longer than 150 ms")
    want = sum(1 for d in docs(world[1], name="request_failed") if d.data["duration_ms"] > 150)
    assert body["rows"][0]["value"] == want
    assert body["interpreted"]["params"]["where"] == "duration_ms > 150"


def test_several_hosts_are_asked_by_host(world: Any) -> None:
    body = ask(world, "avg cpu of web-1 and db-1")
    want = {
        h: mean([d.data["cpu"]["percent"] for d in docs(world[1], name="process", host=h)])
        for h in ("web-1", "db-1")
    }
    assert {r["group"]: r["value"] for r in body["rows"]} == pytest.approx(want)
    assert body["interpreted"]["params"]["by"] == "host"
    assert "host" not in body["interpreted"]["params"]
    assert body["interpreted"]["only"] == ["web-1", "db-1"]
    # the copyable request answers every host; the kept rows are among them
    every = world[0].get(body["interpreted"]["url"]).json()["rows"]
    assert [r for r in every if r["group"] in want] == body["rows"]
    assert len(every) > len(body["rows"])
    # ranked among the named hosts only, not cut before they were kept
    top = ask(world, "top host by cpu among web-1 and web-2")["rows"]
    assert [r["group"] for r in top] == [max(("web-1", "web-2"), key=lambda h: mean(
        [d.data["cpu"]["percent"] for d in docs(world[1], name="process", host=h)]))]  # fmt: skip


def test_error_rate_is_error_events_per_minute(world: Any) -> None:
    body = ask(world, "error rate on web-1")
    want: dict[float, int] = {}
    for d in world[1].docs:
        if d.name in ("request_failed", "job_error") and d.host == "web-1":
            want[d.ts // 60 * 60] = want.get(d.ts // 60 * 60, 0) + 1
    got = {
        datetime.fromisoformat(r["bucket"].replace("Z", "+00:00")).timestamp(): r["value"]
        for r in body["rows"]
    }
    assert got == want and want
    assert any("count per 1m" in n for n in body["notes"])


def test_buckets(world: Any) -> None:
    rows = ask(world, "avg cpu of sess-c per hour")["rows"]
    want: dict[float, list[float]] = {}
    for d in docs(world[1], name="process", session="sess-c"):
        want.setdefault(d.ts // 3600 * 3600, []).append(d.data["cpu"]["percent"])
    got = {
        datetime.fromisoformat(r["bucket"].replace("Z", "+00:00")).timestamp(): r["value"]
        for r in rows
    }
    assert got == pytest.approx({k: mean(v) for k, v in want.items()})


def test_sessions_questions(world: Any) -> None:
    assert ask(world, "how many sessions are live")["rows"] == [{"value": 2}]
    rows = ask(world, "sessions that ended with a non-zero exit code")["rows"]
    assert [(r["session"], r["exit_code"]) for r in rows] == [("sess-b", 1)]
    rows = ask(world, "sessions per host")["rows"]
    assert {r["group"]: r["value"] for r in rows} == {"web-1": 2, "web-2": 1, "db-1": 2}
    (row,) = ask(world, "when did sess-b end")["rows"]
    assert row["ended"] is not None and row["exit_code"] == 1


def test_current_value(world: Any) -> None:
    last = max(docs(world[1], name="process", session="sess-c"), key=lambda d: d.ts)
    body = ask(world, "current memory of session sess-c")
    assert body["rows"][0]["value"] == last.data["mem"]["rss"]
    assert body["interpreted"]["endpoint"] == "/metrics"
    # "at the moment" is the same question: the last value, never an average
    moment = ask(world, "what's the memory of sess-c at the moment")
    assert moment["rows"][0]["value"] == last.data["mem"]["rss"]


def test_two_sessions_are_compared_as_two_hosts_are(world: Any) -> None:
    body = ask(world, "compare memory of sess-a and sess-c")
    want = {
        s: mean([d.data["mem"]["rss"] for d in docs(world[1], name="process", session=s)])
        for s in ("sess-a", "sess-c")
    }
    assert {r["group"]: r["value"] for r in body["rows"]} == pytest.approx(want)
    assert body["interpreted"]["only"] == ["sess-a", "sess-c"]


def test_unknown_names_are_422_with_the_closest(world: Any) -> None:
    body = ask(world, "avg cpu of web1", 422)
    assert body["error"] == "bad_prompt" and "web-1" in body["suggestions"]
    assert "request_failed" in ask(world, "how many request_faild", 422)["suggestions"]
    assert "cpu.percent" in ask(world, "avg cpu.pecent", 422)["suggestions"]


def test_an_empty_answer_says_why(world: Any) -> None:
    body = ask(world, "avg cpu of web-2 in the last 30 minutes")
    assert body["rows"] == []
    assert any("host web-2" in n and "hosts seen: db-1, web-1" in n for n in body["notes"]), body[
        "notes"
    ]


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("max memory of sess-b in the last 20 minutes", "no session sess-b was seen"),
        ("count request_failed longer than 10 s", "no document matched duration_ms > 10000"),
        ("count job_error on web-1", "each filter matches documents, but not all"),
        ("avg cpu tagged canary in the last 10 minutes", "no tag canary was seen"),
    ],
)
def test_every_empty_answer_has_a_note(world: Any, prompt: str, needle: str) -> None:
    body = ask(world, prompt)
    assert body["rows"] == [] and any(needle in n for n in body["notes"]), body["notes"]


def test_a_name_stored_after_the_vocabulary_was_read(world: Any) -> None:
    client, _data = world
    assert ask(world, "count deploy_finished")["rows"][0]["value"] == 2
    r = client.post("/metrics", json={"name": "brand_new_metric", "value": 5})
    assert r.status_code == 201
    # Refused names reload the vocabulary (at most twice a second): it comes.
    r = wait_until(
        lambda: (
            (a := client.get("/query", params={"prompt": "max brand_new_metric"})).status_code
            == 200
            and a
        ),
        timeout=10,
        what="the new metric in the vocabulary",
    )
    assert r.json()["rows"][0]["value"] == 5


def test_current_value_per_host(world: Any) -> None:
    rows = ask(world, "cpu of each host right now")["rows"]
    want = {}
    for d in sorted(docs(world[1], name="process"), key=lambda d: d.ts):
        want[d.host] = d.data["cpu"]["percent"]
    assert {r["group"]: r["value"] for r in rows} == want


def test_several_names_are_merged(world: Any) -> None:
    body = ask(world, "errors by session")
    want: dict[str, int] = {}
    for d in world[1].docs:
        if d.name in ("request_failed", "job_error"):
            want[d.session] = want.get(d.session, 0) + 1
    assert {r["group"]: r["value"] for r in body["rows"]} == want
    assert body["interpreted"]["names"] == ["job_error", "request_failed"]
    # no one request answers it: one per name, each accepted, their counts the sum
    assert body["interpreted"]["url"] is None
    summed: dict[str, int] = {}
    for url in body["interpreted"]["urls"]:
        again = world[0].get(url)
        assert again.status_code == 200, again.text
        for r in again.json()["rows"]:
            summed[r["group"]] = summed.get(r["group"], 0) + r["value"]
    assert summed == want


@pytest.mark.parametrize("prompt", ["sessions that crashed", "any sessions fail?"])
def test_nonzero_exit_codes_say_the_filter_applied_after(world: Any, prompt: str) -> None:
    body = ask(world, prompt)
    assert [r["session"] for r in body["rows"]] == ["sess-b"]
    i = body["interpreted"]
    assert i["where"] == "exit_code != 0" and "where" not in i["url"]
    again = world[0].get(i["url"])
    assert again.status_code == 200, again.text
    assert {s["session"] for s in again.json()["items"]} >= {"sess-b"}


def test_listing_and_first(world: Any) -> None:
    rows = ask(world, "first 2 request_failed events on web-2")["rows"]
    want = sorted(docs(world[1], name="request_failed", host="web-2"), key=lambda d: d.ts)[:2]
    assert [(r["session"], r["seq"]) for r in rows] == [(d.session, d.seq) for d in want]


def test_rate_of_a_counter(world: Any) -> None:
    pts = sorted((t, v) for n, v, t, _g in world[1].points if n == "errors_total")
    want = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
    assert ask(world, "rate of errors_total")["rows"][0]["value"] == pytest.approx(want)


@pytest.mark.parametrize(
    "prompt",
    [
        "average cpu of web-1",
        "p95 of http latency",
        "max memory per session",
        "avg cpu of sess-c per hour",
        "top 2 hosts by cpu",
        "how many request_failed events",
        "count request_failed longer than 150 ms by host",
        "max memory over 500 mb by session",
        "hosts with cpu over 40",
    ],
)
def test_the_interpreted_request_gives_the_same_rows(world: Any, prompt: str) -> None:
    body = ask(world, prompt)
    assert body["interpreted"]["endpoint"] == "/aggregate"
    again = world[0].get(body["interpreted"]["url"])
    assert again.status_code == 200, again.text
    assert again.json()["rows"] == body["rows"]


@pytest.mark.parametrize(
    ("prompt", "count"),
    [("live sessions", 2), ("sessions on web-1", 2), ("when did sess-b end", None)],
)
def test_session_questions_show_a_sessions_request(world: Any, prompt: str, count: int) -> None:
    body = ask(world, prompt)
    again = world[0].get(body["interpreted"]["url"])
    assert again.status_code == 200, again.text
    got = again.json()
    items = got.get("items", [got])
    assert [s["session"] for s in items] == [s["session"] for s in body["rows"]]
    if count is not None:
        assert len(items) == count


def test_aggregate_takes_a_threshold(world: Any) -> None:
    client = world[0]
    r = client.get(
        "/aggregate", params={"fn": "count", "name": "request_failed", "where": "duration_ms>=200"}
    )
    assert r.status_code == 200, r.text
    want = sum(1 for d in docs(world[1], name="request_failed") if d.data["duration_ms"] >= 200)
    assert r.json()["rows"] == [{"value": want, "count": want}]
    assert r.json()["interpreted"]["where"] == "duration_ms >= 200"
    for where, extra in (("duration_ms = 200", {}), ("value > 1", {"field": "duration_ms"})):
        r = client.get(
            "/aggregate", params={"fn": "avg", "where": where, "field": "value", **extra}
        )
        assert r.status_code == 422, r.text
        assert r.json()["parameter"] == "where"
