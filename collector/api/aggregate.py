"""``GET /aggregate``: the structured aggregation (``deltawire.collector.aggregate``).

Parameters: ``fn`` (count, avg, min, max, sum, p50, p90, p95, p99, rate),
``field`` (``value`` or a data path; optional for count), ``by`` (host,
session, name), ``bucket`` (seconds or 30s, 1m, 10m, 1h, 1d), ``order``
(group, value, -value), ``limit`` (rows), and the filters of ``GET /metrics``
(session, name, kind, host, tag, from, to). Answer:
``{"interpreted": {...}, "rows": [{"group"?, "bucket"?, "value", "count"}]}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, get_args

import orjson
from starlette.requests import Request
from starlette.responses import Response

from deltawire.collector.aggregate import (
    AggregateError,
    AggregateQuery,
    AggregateRow,
    Order,
    parse_bucket,
    run_aggregate,
)

from .app import MAX_LIMIT, ApiError, _int, _params, metric_query, rfc3339
from .cache import scope_for

__all__ = ["AGGREGATE_PARAMS", "aggregate_endpoint", "aggregate_query", "interpreted", "row_json"]

_FILTER_PARAMS: Final = frozenset({"session", "name", "kind", "host", "tag", "from", "to"})
AGGREGATE_PARAMS: Final = _FILTER_PARAMS | {"fn", "field", "by", "bucket", "order", "limit"}


def aggregate_query(params: dict[str, list[str]]) -> AggregateQuery:
    """The validated ``GET /aggregate`` parameters; ``ApiError`` 422 naming
    the first bad one."""
    where = metric_query({k: v for k, v in params.items() if k in _FILTER_PARAMS})
    first = {k: v[0] for k, v in params.items() if v}
    try:
        if "fn" not in first:
            raise AggregateError("fn", "required: count, avg, min, max, sum, p50..p99 or rate")
        order = first.get("order", "group")
        if order not in get_args(Order):
            raise AggregateError("order", f"must be group, value or -value, not {order!r}")
        return AggregateQuery(
            fn=first["fn"],  # type: ignore[arg-type]  # checked by AggregateQuery
            field=first.get("field"),
            where=where,
            by=first.get("by"),  # type: ignore[arg-type]
            bucket=parse_bucket(first["bucket"]) if "bucket" in first else None,
            order=order,  # type: ignore[arg-type]
            limit=_int(params, "limit", MAX_LIMIT, 1, MAX_LIMIT),
        )
    except AggregateError as e:
        raise ApiError(422, "bad_parameter", str(e), parameter=e.parameter) from None


def interpreted(q: AggregateQuery) -> dict[str, Any]:
    """The query as the answer echoes it."""
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
        out["from"] = rfc3339(w.ts_from)
    if w.ts_to is not None:
        out["to"] = rfc3339(w.ts_to)
    if q.order != "group":
        out["order"] = q.order
    if q.limit is not None and q.limit != MAX_LIMIT:
        out["limit"] = q.limit
    return out


def row_json(q: AggregateQuery, row: AggregateRow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if q.by is not None:
        out["group"] = row.group
    if q.bucket is not None and row.bucket is not None:
        out["bucket"] = rfc3339(row.bucket)
    out["value"] = row.value
    out["count"] = row.count
    return out


StoreCall = Callable[..., Awaitable[Any]]
Cached = Callable[[str, str, Callable[[], Awaitable[bytes]]], Awaitable[Response]]


def aggregate_endpoint(
    store: Any, store_call: StoreCall, cached: Cached
) -> Callable[[Request], Awaitable[Response]]:
    """The handler, over the app's ``store_call`` (worker threads, 503 on a
    failing store) and ``cached`` (the query cache)."""

    async def aggregate(request: Request) -> Response:
        q = aggregate_query(_params(request, AGGREGATE_PARAMS, frozenset({"tag"})))
        key = "a:" + orjson.dumps(
            [q.fn, q.field, q.by, q.bucket, q.order, q.limit, q.where.session, q.where.name,
             q.where.kind, q.where.host, q.where.tags, q.where.ts_from, q.where.ts_to]
        ).decode()  # fmt: skip

        async def compute() -> bytes:
            rows = await store_call(run_aggregate, store, q)
            return orjson.dumps(
                {"interpreted": interpreted(q), "rows": [row_json(q, r) for r in rows]}
            )

        return await cached(key, scope_for(q.where.session, q.where.name), compute)

    return aggregate
