"""Running a /query ``Plan``: the same store calls as /aggregate, /metrics and
/sessions, then ``notes`` that say why an answer is empty.

Blocking (store calls): the API runs ``answer`` on a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from deltawire.collector.aggregate import (
    AggregateError,
    AggregateQuery,
    parse_bucket,
    run_aggregate,
)
from deltawire.collector.stores.base import MetricQuery, SessionQuery, Store
from deltawire.formats import rfc3339

from .nl_vocab import Vocabulary
from .nlquery import Plan, Threshold

__all__ = ["Answer", "answer", "plan_where"]

#: Documents a threshold question reads at most: thresholds need each raw
#: value (no rollup can say how many values exceeded 100), so this bounds
#: the scan; the answer says when it was cut.
MAX_SCANNED: Final = 200_000
_PAGE: Final = 5000
#: Groups a "current X per host" question reads the newest document of.
_MAX_LATEST_GROUPS: Final = 50
_SESSIONS_READ: Final = 10_000

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    rows: list[Row]
    notes: list[str]


def _ts(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rfc3339(ts: float) -> str:
    """As the API writes times: milliseconds, UTC."""
    return rfc3339(ts)


def plan_where(plan: Plan, name: str | None = None, *, limit: int = 100) -> MetricQuery:
    """The /metrics filters of ``plan`` (``name`` for one of several names)."""
    p = plan.params
    return MetricQuery(
        session=p.get("session"),
        name=name if name is not None else p.get("name"),
        kind=p.get("kind"),
        host=p.get("host"),
        tags=tuple(sorted(set(p.get("tag", ())))),
        ts_from=_ts(p.get("from")),
        ts_to=_ts(p.get("to")),
        limit=limit,
        descending=p.get("sort") == "-timestamp",
    )


def _field_value(doc: dict[str, Any], fld: str | None) -> float | None:
    """The number at ``fld`` ("value" or a data path) of a stored document."""
    if fld is None:
        return 1.0
    node: Any = doc.get("value") if fld == "value" else doc.get("data")
    if fld != "value":
        for key in fld.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(key)
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node)


_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _fold(fn: str, values: list[float]) -> float | None:
    if not values:
        return None
    if fn == "count":
        return float(len(values))
    if fn == "sum":
        return math.fsum(values)
    if fn == "avg":
        return math.fsum(values) / len(values)
    if fn == "min":
        return min(values)
    if fn == "max":
        return max(values)
    # Percentiles: the value of rank q * (n - 1), as the engine defines them.
    q = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}[fn]
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


class _Run:
    def __init__(self, store: Store, vocab: Vocabulary, plan: Plan) -> None:
        self.store, self.vocab, self.plan = store, vocab, plan
        self.notes: list[str] = list(plan.notes)

    # -- /aggregate ---------------------------------------------------------------

    def aggregate(self) -> list[Row]:
        plan = self.plan
        names: Iterable[str | None] = plan.names or (None,)
        fn = plan.params["fn"]
        if plan.names and fn not in ("count", "sum", "min", "max", "avg"):
            names = plan.names[:1]
            self.notes.append(
                f"{fn} of several names cannot be merged: answered for {plan.names[0]}"
            )
        per_name = [self.aggregate_one(name) for name in names]
        rows = per_name[0] if len(per_name) == 1 else self.merge(fn, per_name)
        if plan.only:  # "web-1 and web-2": asked by host, their rows kept
            rows = [r for r in rows if r.get("group") in plan.only]
        return self.order(rows)

    def aggregate_one(self, name: str | None) -> list[Row]:
        """One /aggregate request, through the engine GET /aggregate runs."""
        plan = self.plan
        p = plan.params
        # Rows of each name, or of every host: ordered and cut once merged or kept.
        merged = bool(plan.names) or bool(plan.only)
        try:
            q = AggregateQuery(
                fn=p["fn"],
                field=p.get("field"),
                where=plan_where(plan, name),
                by=p.get("by"),
                bucket=parse_bucket(p["bucket"]) if "bucket" in p else None,
                order="group" if merged else p.get("order", "group"),
                limit=None if merged or "limit" not in p else int(p["limit"]),
                threshold=plan.threshold,
            )
        except AggregateError as e:
            if e.parameter != "where":
                raise
            return self.scan(name, plan.threshold)  # a threshold the tiers cannot answer
        rows: list[Row] = []
        for r in run_aggregate(self.store, q):
            row: Row = {"group": r.group} if q.by is not None else {}
            if q.bucket is not None and r.bucket is not None:
                row["bucket"] = _rfc3339(r.bucket)
            row["value"] = r.value
            row["count"] = r.count
            rows.append(row)
        return rows

    def scan(self, name: str | None, threshold: Threshold | None) -> list[Row]:
        """Raw documents, filtered by the threshold, folded per group and bucket."""
        plan = self.plan
        p = plan.params
        fn, fld, by = p["fn"], p.get("field"), p.get("by")
        bucket = _bucket_seconds(p.get("bucket"))
        if fn == "rate":
            raise _Unsupported("a rate with a threshold: a rate needs every value of a series")
        where = plan_where(plan, name, limit=_PAGE)
        groups: dict[tuple[Any, Any], list[float]] = {}
        seen = 0
        after = None
        while True:
            docs = self.store.find(replace(where, after=after))
            for d in docs:
                if threshold is not None:
                    tv = _field_value(d, threshold.field)
                    if tv is None or not _OPS[threshold.op](tv, threshold.number):
                        continue
                v = _field_value(d, fld if fn != "count" else None)
                if v is None:
                    continue
                key = (d.get(by) if by else None, (d["ts"] // bucket) * bucket if bucket else None)
                groups.setdefault(key, []).append(v)
            seen += len(docs)
            if len(docs) < where.limit:
                break
            if seen >= MAX_SCANNED:
                self.notes.append(f"read the first {MAX_SCANNED} matching documents only")
                break
            after = (docs[-1]["ts"], docs[-1]["id"])
        if threshold is not None:
            self.notes.append(f"threshold {threshold.text()} applied to {seen} raw documents")
        rows: list[Row] = []
        for (group, start), values in sorted(
            groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0)
        ):
            row: Row = {}
            if by:
                row["group"] = group
            if bucket:
                row["bucket"] = _rfc3339(start)
            row["value"] = _fold(fn, values)
            row["count"] = len(values)
            rows.append(row)
        return rows

    def merge(self, fn: str, parts: list[list[Row]]) -> list[Row]:
        merged: dict[tuple[Any, Any], Row] = {}
        for rows in parts:
            for r in rows:
                key = (r.get("group"), r.get("bucket"))
                m = merged.get(key)
                if m is None:
                    merged[key] = dict(r)
                    continue
                a, b, na, nb = m["value"], r["value"], m["count"], r["count"]
                if a is None or b is None:
                    m["value"] = a if b is None else b
                elif fn in ("count", "sum"):
                    m["value"] = a + b
                elif fn == "min":
                    m["value"] = min(a, b)
                elif fn == "max":
                    m["value"] = max(a, b)
                else:  # avg, weighted by the counts
                    m["value"] = (a * na + b * nb) / (na + nb)
                m["count"] = na + nb
        return list(merged.values())

    def order(self, rows: list[Row]) -> list[Row]:
        p = self.plan.params
        order, limit = p.get("order"), p.get("limit")
        if order in ("value", "-value"):
            present = [r for r in rows if r.get("value") is not None]
            present.sort(key=lambda r: (r["value"], str(r.get("group"))), reverse=order == "-value")
            rows = present
        elif p.get("bucket") or p.get("by"):
            rows.sort(key=lambda r: (str(r.get("group")), r.get("bucket") or ""))
        return rows[: int(limit)] if limit else rows

    # -- /metrics ------------------------------------------------------------------

    def listing(self, doc_out: Callable[[dict[str, Any]], Row]) -> list[Row]:
        plan = self.plan
        limit = int(plan.params.get("limit", 20))
        docs: list[dict[str, Any]] = []
        for name in plan.names or (None,):
            docs += self.store.find(plan_where(plan, name, limit=limit))
        docs.sort(key=lambda d: (d["ts"], d["id"]), reverse=plan.params.get("sort") == "-timestamp")
        return [doc_out(d) for d in docs[:limit]]

    def latest(self) -> list[Row]:
        plan = self.plan
        groups: list[str | None] = [None]
        if plan.group == "host":
            groups = [*sorted(self.vocab.hosts)[:_MAX_LATEST_GROUPS]]
        elif plan.group == "session":
            groups = [*sorted(self.vocab.sessions)[:_MAX_LATEST_GROUPS]]
        rows: list[Row] = []
        for g in groups:
            where = plan_where(plan, limit=1)
            if g is not None and plan.group == "session":
                where = replace(where, session=g)
            elif g is not None:
                where = replace(where, host=g)
            docs = self.store.find(replace(where, descending=True))
            if not docs:
                continue
            d = docs[0]
            row: Row = {"group": g} if g is not None else {}
            row.update(
                value=_field_value(d, plan.project),
                timestamp=_rfc3339(d["ts"]),
                session=d.get("session"),
                host=d.get("host"),
                name=d.get("name"),
            )
            rows.append(row)
        return rows

    # -- /sessions -----------------------------------------------------------------

    def sessions(self, session_out: Callable[[dict[str, Any]], Row]) -> list[Row]:
        plan = self.plan
        p = plan.params
        if plan.answer == "one":
            one = self.store.get_session(plan.endpoint.rsplit("/", 1)[1])
            return [] if one is None else [session_out(one)]
        code = p.get("exit_code")
        q = SessionQuery(
            host=p.get("host"),
            tags=tuple(sorted(set(p.get("tag", ())))),
            connected=None if "connected" not in p else p["connected"] == "true",
            ended=None if "ended" not in p else p["ended"] == "true",
            exit_code=None if code is None else int(code),
            seen_from=_ts(p.get("from")),
            seen_to=_ts(p.get("to")),
            limit=_SESSIONS_READ,
        )
        picked = self.store.find_sessions(q)
        if p.get("where") == "exit_code != 0":
            picked = [s for s in picked if s.get("exit_code") not in (None, 0)]
        if plan.answer == "count":
            return [{"value": len(picked)}]
        if plan.answer == "count_by_host":
            counts: dict[str, int] = {}
            for s in picked:
                counts[s.get("host") or ""] = counts.get(s.get("host") or "", 0) + 1
            return [
                {"group": h, "value": n}
                for h, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            ]
        limit = int(p.get("limit", 100))
        return [session_out(s) for s in picked[:limit]]

    # -- why nothing matched ------------------------------------------------------------

    def explain_empty(self) -> None:
        """Say which filter matched nothing: "no samples of host web-9 in the last hour".

        Hosts, sessions and tags are checked against the sessions table (their
        first and last seen), not by scanning documents: a host with no
        documents must not cost a walk through all of them.
        """
        plan = self.plan
        p = plan.params
        lo, hi = _ts(p.get("from")), _ts(p.get("to"))
        window = (
            f" between {p.get('from', 'the start')} and {p.get('to', 'now')}" if lo or hi else ""
        )
        if plan.endpoint.startswith("/sessions"):
            wanted = ", ".join(f"{k}={v}" for k, v in p.items() if k != "limit")
            seen = self.vocab.sample_of("session")
            self.notes.append(f"no session matches {wanted or 'anything'}; sessions seen: {seen}")
            return
        live = [
            s
            for s in self.store.sessions(_SESSIONS_READ)
            if (lo is None or s["last_seen"] >= lo) and (hi is None or s["first_seen"] < hi)
        ]
        if not live and not self.store.find(MetricQuery(ts_from=lo, ts_to=hi, limit=1)):
            self.notes.append(f"no documents at all{window}")
            return
        seen_in = {
            "host": sorted({s["host"] for s in live if s.get("host")}),
            "session": sorted({s["session"] for s in live}),
            "tag": sorted({t for s in live for t in s.get("tags") or ()}),
        }
        asked: list[tuple[str, str]] = [(k, p[k]) for k in ("host", "session") if k in p]
        asked += [("tag", t) for t in p.get("tag", ())]
        for what, value in asked:
            if value not in seen_in[what]:
                shown = ", ".join(seen_in[what][:8]) or "none"
                self.notes.append(f"no {what} {value} was seen{window}; {what}s seen: {shown}")
        for name in plan.names or ((p["name"],) if "name" in p else ()):
            if not self.store.find(MetricQuery(name=name, ts_from=lo, ts_to=hi, limit=1)):
                self.notes.append(f"no documents named {name}{window}")
        if plan.threshold is not None:
            self.notes.append(f"no document matched {plan.threshold.text()}")
        if not any(n.startswith("no ") for n in self.notes):
            self.notes.append(
                f"each filter matches documents, but not all of them together{window}"
            )


class _Unsupported(Exception):
    pass


def _bucket_seconds(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def answer(
    store: Store,
    vocab: Vocabulary,
    plan: Plan,
    doc_out: Callable[[dict[str, Any]], Row],
    session_out: Callable[[dict[str, Any]], Row],
) -> Answer:
    """Run ``plan`` (blocking). Empty rows always come with a note saying why."""
    run = _Run(store, vocab, plan)
    try:
        if plan.endpoint.startswith("/sessions"):
            rows = run.sessions(session_out)
        elif plan.answer == "latest":
            rows = run.latest()
        elif plan.endpoint == "/metrics":
            rows = run.listing(doc_out)
        else:
            rows = run.aggregate()
    except (_Unsupported, AggregateError) as e:
        return Answer([], [*run.notes, f"cannot answer: {e}"])
    if not rows or all(
        r.get("value") is None and "id" not in r and "session" not in r for r in rows
    ):
        run.explain_empty()
    return Answer(rows, run.notes)
