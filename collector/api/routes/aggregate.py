"""``GET /aggregate``: the structured aggregation (engine: ``deltawire.collector.aggregate``).

Parameters: ``fn`` (count, avg, min, max, sum, p50, p90, p95, p99, rate),
``field`` (``value`` or a data path; optional for count), ``by`` (host,
session, name), ``bucket`` (seconds or 30s, 1m, 10m, 1h, 1d), ``order``
(group, value, -value), ``limit`` (rows), ``where`` (a threshold on the field,
``duration_ms > 200``), and the filters of ``GET /metrics``.
Answer: ``{"interpreted": {...}, "rows": [{"group"?, "bucket"?, "value", "count"}]}``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from deltawire.collector.aggregate import (
    AggregateError,
    AggregateQuery,
    AggregateRow,
    Fn,
    Group,
    Order,
    parse_bucket,
    parse_where,
    run_aggregate,
)

from ..cache import Answer, CacheKey, Span, scope_for
from ..deps import CachedGet, Deps, KnownQueries
from ..errors import ApiError
from ..params import MAX_LIMIT, DocFilters, parse
from ..schemas import AggregateAnswer
from ..spec import Endpoint
from ..views import rfc3339

__all__ = ["AggregateParams", "endpoints", "interpreted", "row_json"]


class AggregateParams(DocFilters):
    fn: Fn = Field(description="the function")
    field: str | None = Field(
        None, min_length=1, max_length=256, description="value or a data path (cpu.percent)"
    )
    by: Group | None = Field(None, description="one row per host, session or name")
    bucket: str | None = Field(
        None, max_length=32, description="bucket width: seconds, or 30s, 1m, 10m, 1h, 1d"
    )
    order: Order = "group"
    limit: int = Field(MAX_LIMIT, ge=1, le=MAX_LIMIT, description="rows at most")
    where: str | None = Field(
        None,
        max_length=300,
        description="only values passing a threshold on the field: 'duration_ms > 200' "
        "(with count and no field: documents whose path passes); ops > >= < <=",
    )

    def query(self) -> AggregateQuery:
        try:
            return AggregateQuery(
                fn=self.fn,
                field=self.field,
                where=self.metric_query(),
                by=self.by,
                bucket=parse_bucket(self.bucket) if self.bucket is not None else None,
                order=self.order,
                limit=self.limit,
                threshold=parse_where(self.where) if self.where is not None else None,
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
    if q.threshold is not None:
        out["where"] = q.threshold.text()
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


def endpoints(deps: Deps) -> list[Endpoint]:
    store = deps.store
    # Validating the parameters (pydantic, the bucket and the threshold) was
    # most of a cached answer's CPU: 115-177 µs a request (bench.api,
    # 2026-12-01) against 22-29 for a cached listing, which the HTTP fast
    # path answers from a query string it has seen (fast.py). The parse is a
    # pure function of the string (times are absolute: no "now" in them), so
    # the key it gave is the key it would give again. A miss takes the full
    # path (``read`` None): an aggregate is computed on a heavy thread anyway.
    known: KnownQueries[CacheKey] = KnownQueries()
    deps.cached_gets["/aggregate"] = CachedGet(known.get, None)

    async def aggregate(request: Request) -> Response:
        q = parse(request, AggregateParams).query()
        w = q.where
        key = "a:" + orjson.dumps(
            [q.fn, q.field, q.by, q.bucket, q.order, q.limit, w.session, w.name, w.kind, w.host,
             w.tags, w.ts_from, w.ts_to, q.threshold and q.threshold.text()]
        ).decode()  # fmt: skip

        # The answer depends on the documents of its window only (the engine
        # is exact: rollups equal raw), so a write outside it, as all of
        # ingest's are for a window in the past, leaves it cached.
        lo = -math.inf if w.ts_from is None else w.ts_from
        span = Span(lo, math.inf if w.ts_to is None else w.ts_to)

        async def compute() -> Answer:
            rows = await deps.heavy_call(run_aggregate, store, q)
            payload = orjson.dumps(
                {"interpreted": interpreted(q), "rows": [row_json(q, r) for r in rows]}
            )
            return Answer(payload, span)

        read = known.remember(
            request.scope["query_string"], CacheKey(key, scope_for(w.session, w.name, w.kind))
        )
        return await deps.cached(read.key, read.scope, compute)

    return [
        Endpoint(
            "GET",
            "/aggregate",
            aggregate,
            "Aggregate documents: fn of field, by a group, in time buckets",
            params=AggregateParams,
            answer=AggregateAnswer,
            tags=("query",),
            description="Rows are {group?, bucket?, value, count}; 503 query_timeout past "
            "the deadline.",
        )
    ]
