"""A small telemetry data set with known answers, for /query tests and the bench.

Four sessions on three hosts, process and system samples, four kinds of
events and three API metrics, all at fixed times before ``NOW`` (a Monday
noon, UTC). ``load(store)`` writes it; ``catalog()`` is the vocabulary it
produces, for parser tests that need no store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from deltawire.collector.api.nl_vocab import Vocabulary
from deltawire.collector.api.nlquery import Plan, PromptError, parse_prompt
from deltawire.collector.stores.base import Store
from deltawire.collector.stores.catalog import Catalog
from deltawire.protocol import Document, Hello

__all__ = ["ANY", "NOW", "SESSIONS", "Dataset", "build", "catalog", "check", "load"]

NOW: Final = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
T: Final = NOW.timestamp()
MIN: Final = 60.0


@dataclass(frozen=True, slots=True)
class SessionSpec:
    session: str
    host: str
    tags: tuple[str, ...]
    start: float  # seconds before NOW
    stop: float  # seconds before NOW of the last sample
    exit_code: int | None  # None: still connected
    cpu_base: float
    rss_base: int


SESSIONS: Final = (
    SessionSpec("sess-a", "web-1", ("prod",), 120 * MIN, 30 * MIN, 0, 10.0, 200_000_000),
    SessionSpec("sess-b", "web-2", ("prod", "canary"), 120 * MIN, 60 * MIN, 1, 40.0, 500_000_000),
    SessionSpec("sess-c", "db-1", ("staging",), 180 * MIN, 0.0, None, 70.0, 900_000_000),
    SessionSpec("sess-d", "web-1", ("prod",), 50 * MIN, 0.0, None, 20.0, 300_000_000),
)


@dataclass(frozen=True, slots=True)
class Dataset:
    docs: list[Document]
    hellos: list[tuple[Hello, float]]
    now: float
    #: API points: (name, value, ts, tags)
    points: list[tuple[str, float, float, tuple[str, ...]]]


def build(now: datetime = NOW) -> Dataset:
    """The data set, its times relative to ``now``."""
    T = now.timestamp()
    docs: list[Document] = []
    hellos: list[tuple[Hello, float]] = []
    for spec in SESSIONS:
        hellos.append(
            (
                Hello(spec.session, host=spec.host, agent="watchdog/1", tags=spec.tags),
                T - spec.start,
            )
        )
        seq = 0
        i = 0
        t = T - spec.start
        while t <= T - spec.stop - 1e-9 or (spec.stop == 0 and t < T):
            proc: dict[str, Any] = {
                "pid": 100 + i,
                "cpu": {"percent": spec.cpu_base + (i % 5), "user": i * 0.5, "system": i * 0.1},
                "mem": {"rss": spec.rss_base + i * 1000, "vms": 2 * spec.rss_base},
                "threads": 8 + (i % 3),
                "status": "running",
            }
            docs.append(
                Document(spec.session, seq, "sample", "process", t, spec.host, spec.tags, proc)
            )
            seq += 1
            if spec.session == "sess-c":
                system = {
                    "cpu": {"percent": 50.0 + (i % 2)},
                    "mem": {"used": 4_000_000_000, "percent": 50.0, "available": 4_000_000_000},
                    "load": [1.0, 0.5, 0.2],
                }
                docs.append(
                    Document(spec.session, seq, "sample", "system", t, spec.host, spec.tags, system)
                )
                seq += 1
            if spec.host.startswith("web") and i % 10 == 0:
                docs.append(
                    Document(
                        spec.session,
                        seq,
                        "event",
                        "request_failed",
                        t + 1,
                        spec.host,
                        spec.tags,
                        {"duration_ms": 100 + 50 * (i // 10), "status": 500},
                    )
                )
                seq += 1
            if spec.host == "db-1" and i % 30 == 0:
                docs.append(
                    Document(
                        spec.session,
                        seq,
                        "event",
                        "job_error",
                        t + 2,
                        spec.host,
                        spec.tags,
                        {"attempts": 1 + i // 30},
                    )
                )
                seq += 1
            if i == 0:
                docs.append(
                    Document(
                        spec.session,
                        seq,
                        "event",
                        "user_login",
                        t + 3,
                        spec.host,
                        spec.tags,
                        {"user_id": 7},
                    )
                )
                seq += 1
            i += 1
            t += MIN
        if spec.exit_code is not None:
            docs.append(
                Document(
                    spec.session,
                    seq,
                    "event",
                    "deploy_finished",
                    T - spec.stop + 5,
                    spec.host,
                    spec.tags,
                    {"version": 3},
                )
            )
            seq += 1
            docs.append(
                Document(
                    spec.session,
                    seq,
                    "session",
                    "end",
                    T - spec.stop + 10,
                    spec.host,
                    spec.tags,
                    {"exit_code": spec.exit_code},
                )
            )
    # Yesterday: a few job errors on db-1, in a session that ended then.
    y = T - 86400
    hellos.append((Hello("sess-y", host="db-1", agent="watchdog/1", tags=("staging",)), y))
    for k in range(3):
        docs.append(
            Document(
                "sess-y",
                k,
                "event",
                "job_error",
                y + k * MIN,
                "db-1",
                ("staging",),
                {"attempts": 1},
            )
        )
    docs.append(
        Document(
            "sess-y", 3, "session", "end", y + 10 * MIN, "db-1", ("staging",), {"exit_code": 0}
        )
    )
    points: list[tuple[str, float, float, tuple[str, ...]]] = []
    for k in range(20):
        points.append(("http_latency_ms", 10.0 * (k + 1), T - (40 - k) * MIN, ("api",)))
        points.append(("queue_depth", float(k % 7), T - (40 - k) * MIN, ("api",)))
    for k in range(6):
        points.append(("errors_total", float(k * 3), T - (60 - 10 * k) * MIN, ("api",)))
    return Dataset(docs, hellos, T, points)  # fmt: skip


def load(store: Store, data: Dataset | None = None) -> Dataset:
    """Write the data set to an open store: hellos, documents, API points."""
    data = data or build()
    T = data.now
    for hello, ts in data.hellos:
        store.session_connected(hello, ts)
    store.write_batch(sorted(data.docs, key=lambda d: (d.session, d.seq)))
    for spec in SESSIONS:
        if spec.exit_code is not None:
            store.session_disconnected(spec.session, T - spec.stop + 10)
    store.session_disconnected("sess-y", T - 86400 + 600)
    for name, value, ts, tags in data.points:
        store.create({"name": name, "value": value, "ts": ts, "tags": list(tags), "data": None})
    return data


def catalog() -> Catalog:
    """The catalog ``load`` produces, without a store."""
    return Catalog(
        names={
            "metric": frozenset({"http_latency_ms", "queue_depth", "errors_total"}),
            "event": frozenset({"request_failed", "job_error", "user_login", "deploy_finished"}),
            "sample": frozenset({"process", "system"}),
            "session": frozenset({"end"}),
        },
        paths={
            "process": frozenset({"pid", "cpu.percent", "cpu.user", "cpu.system", "mem.rss",
                                  "mem.vms", "threads"}),
            "system": frozenset({"cpu.percent", "mem.used", "mem.percent", "mem.available"}),
            "request_failed": frozenset({"duration_ms", "status"}),
            "job_error": frozenset({"attempts"}),
            "user_login": frozenset({"user_id"}),
            "deploy_finished": frozenset({"version"}),
        },
        hosts=frozenset({"web-1", "web-2", "db-1"}),
        sessions=frozenset({"sess-a", "sess-b", "sess-c", "sess-d", "sess-y"}),
        tags=frozenset({"prod", "staging", "canary", "api"}),
    )  # fmt: skip


#: In an expectation: the parameter is present, with any value.
ANY: Final = "*"


def check(
    prompt: str, expect: dict[str, Any], vocab: Vocabulary, now: datetime = NOW
) -> str | None:
    """None if ``prompt`` is understood as ``expect``, else what differs.

    ``expect``: ``endpoint`` and the request's params (``ANY`` = present), or
    ``status: 422`` with the name that must be among the suggestions.
    """
    try:
        plan = parse_prompt(prompt, now, vocab)
    except PromptError as e:
        if expect.get("status") == 422:
            want = expect.get("suggest")
            return None if want is None or want in e.suggestions else f"suggested {e.suggestions}"
        return f"422: {e.reason}"
    if expect.get("status") == 422:
        return f"200: {plan.interpreted()}"
    return _compare(plan, expect)


def _compare(plan: Plan, expect: dict[str, Any]) -> str | None:
    got = dict(plan.params, endpoint=plan.endpoint, answer=plan.answer)
    if plan.endpoint.startswith("/sessions/"):  # one session, by name
        got.update(endpoint="/sessions", session=plan.endpoint.rsplit("/", 1)[1])
    if plan.group is not None:
        got.setdefault("by", plan.group)
    if plan.project is not None:
        got.setdefault("field", plan.project)
    if plan.names and "name" not in got:
        got["name"] = list(plan.names)
    if plan.only:
        got["only"] = list(plan.only)
    for key, want in expect.items():
        if key == "status":
            continue
        have = got.get(key)
        if want == ANY and have is not None:
            continue
        if isinstance(have, list) and len(have) == 1 and have[0] == want:
            continue  # a repeatable parameter given once ("tag")
        if have != want:
            return f"{key}: {have!r} != {want!r} in {plan.interpreted()}"
    return None
