"""``GET /aggregate``: the structured aggregation (``deltawire.collector.aggregate``).

Parameters: ``fn`` (count, avg, min, max, sum, p50, p90, p95, p99, rate),
``field`` (``value`` or a data path; optional for count), ``by`` (host,
session, name), ``bucket`` (seconds or 30s, 1m, 10m, 1h, 1d), ``order``
(group, value, -value), ``limit`` (rows), and the filters of ``GET /metrics``
(session, name, kind, host, tag, from, to). Answer:
``{"interpreted": {...}, "rows": [{"group"?, "bucket"?, "value", "count"}]}``.

The app validates the filters as ``GET /metrics`` does and hands them here
with the other parameters (this module does not import the app).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, get_args

import orjson

from deltawire.collector.aggregate import (
    AggregateError,
    AggregateQuery,
    AggregateRow,
    Order,
    parse_bucket,
)
from deltawire.collector.stores.base import MetricQuery

__all__ = [
    "AGGREGATE_PARAMS",
    "FILTER_PARAMS",
    "MAX_ROWS",
    "aggregate_query",
    "answer_json",
    "cache_key",
    "interpreted",
]

#: The filters of GET /metrics.
FILTER_PARAMS: Final = frozenset({"session", "name", "kind", "host", "tag", "from", "to"})
AGGREGATE_PARAMS: Final = FILTER_PARAMS | {"fn", "field", "by", "bucket", "order", "limit"}
#: Most rows one answer holds (``limit`` defaults to it).
MAX_ROWS: Final = 10_000

TimeText = Callable[[float], str]


def aggregate_query(params: dict[str, list[str]], where: MetricQuery) -> AggregateQuery:
    """The query of ``GET /aggregate`` parameters and the validated filters;
    ``AggregateError`` naming the first bad parameter (a 422)."""
    first = {k: v[0] for k, v in params.items() if v}
    if "fn" not in first:
        raise AggregateError("fn", "required: count, avg, min, max, sum, p50..p99 or rate")
    order = first.get("order", "group")
    if order not in get_args(Order):
        raise AggregateError("order", f"must be group, value or -value, not {order!r}")
    limit = first.get("limit", str(MAX_ROWS)).strip()
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_ROWS:
        raise AggregateError("limit", f"must be an integer from 1 to {MAX_ROWS}")
    return AggregateQuery(
        fn=first["fn"],  # type: ignore[arg-type]  # checked by AggregateQuery
        field=first.get("field"),
        where=where,
        by=first.get("by"),  # type: ignore[arg-type]
        bucket=parse_bucket(first["bucket"]) if "bucket" in first else None,
        order=order,  # type: ignore[arg-type]
        limit=int(limit),
    )


def cache_key(q: AggregateQuery) -> str:
    w = q.where
    return "a:" + orjson.dumps(
        [q.fn, q.field, q.by, q.bucket, q.order, q.limit, w.session, w.name, w.kind, w.host,
         w.tags, w.ts_from, w.ts_to]
    ).decode()  # fmt: skip


def interpreted(q: AggregateQuery, time_text: TimeText) -> dict[str, Any]:
    """The query as the answer echoes it (times as ``time_text`` formats them)."""
    w = q.where
    out: dict[str, Any] = {"fn": q.fn, "field": q.field}
    for key, value in (("by", q.by), ("bucket", q.bucket)):
        if value is not None:
            out[key] = value
    filters = {"session": w.session, "name": w.name, "kind": w.kind, "host": w.host}
    out.update({k: v for k, v in filters.items() if v is not None})
    if w.tags:
        out["tags"] = list(w.tags)
    if w.ts_from is not None:
        out["from"] = time_text(w.ts_from)
    if w.ts_to is not None:
        out["to"] = time_text(w.ts_to)
    if q.order != "group":
        out["order"] = q.order
    if q.limit is not None and q.limit != MAX_ROWS:
        out["limit"] = q.limit
    return out


def answer_json(q: AggregateQuery, rows: list[AggregateRow], time_text: TimeText) -> bytes:
    """The answer: ``{"interpreted", "rows": [{"group"?, "bucket"?, "value", "count"}]}``."""
    out = []
    for row in rows:
        item: dict[str, Any] = {}
        if q.by is not None:
            item["group"] = row.group
        if q.bucket is not None and row.bucket is not None:
            item["bucket"] = time_text(row.bucket)
        item["value"] = row.value
        item["count"] = row.count
        out.append(item)
    return orjson.dumps({"interpreted": interpreted(q, time_text), "rows": out})
