"""``/metrics``: list, read, create, replace, merge-patch and delete documents."""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from deltawire.collector.point_models import PointCreate, PointPatch
from deltawire.collector.stores.base import FoundPage, MetricQuery, Store, encode_cursor

from ..auth import Role
from ..body import read_json
from ..cache import Answer, CachedRead, Span, StoreRead, scope_for
from ..deps import CachedGet, Deps, KnownQueries
from ..errors import ApiError, JSONResponse
from ..params import MetricFilters, parse
from ..schemas import Document, Page
from ..spec import Endpoint
from ..views import doc_out, found_page, within
from ..writes import MetricWrites, Reply, not_found

__all__ = ["endpoints"]

_BAD_CURSOR = "after: not a cursor of this store"


class _Listing:
    """A parsed ``GET /metrics`` query string (memoized: dashboards poll the same
    URLs, and validating is most of the cost of a cache hit; the parse is a pure
    function of the string, with no "now" in it, so reusing it is exact)."""

    __slots__ = ("key", "paths", "query", "scope")

    def __init__(self, f: MetricFilters) -> None:
        q = f.query()
        self.query: MetricQuery = q
        self.paths = f.fields
        fields = [q.session, q.name, q.kind, q.host, q.tags, q.ts_from, q.ts_to]
        self.key = "m:" + orjson.dumps([*fields, q.limit, q.descending, q.after, f.fields]).decode()
        self.scope = scope_for(q.session, q.name, q.kind)


def listing_span(q: MetricQuery, beyond: float | None) -> Span:
    """The timestamps a listing's answer depends on: its window, and, once
    more documents matched than it shows, only up to ``beyond``, the first
    one past the page (in its order): a write later than that (in ingest,
    all of them: agents write at "now") cannot change the page."""
    lo = -math.inf if q.ts_from is None else q.ts_from
    hi = math.inf if q.ts_to is None else q.ts_to
    if q.after is not None:  # the cursor's page starts at its ts
        lo, hi = (lo, min(hi, q.after[0])) if q.descending else (max(lo, q.after[0]), hi)
    if beyond is not None:
        lo, hi = (max(lo, beyond), hi) if q.descending else (lo, min(hi, beyond))
    return Span(lo, hi)


def read_page(store: Store, ls: _Listing, budget: int) -> FoundPage:
    """A listing's page, on a store thread: written by the store where it
    can (``find_page``: SQLite, one statement, ``fields=`` too), else by
    ``doc_out`` here."""
    q = ls.query
    page = store.find_page(q, ls.paths)
    if page is not None and within(page, budget):
        return page
    # One more than asked: "next" is set exactly when another page exists.
    fetched = store.find(replace(q, limit=q.limit + 1))
    return found_page(fetched, q.limit, ls.paths, budget)


def endpoints(deps: Deps) -> list[Endpoint]:
    store = deps.store
    parsed: KnownQueries[_Listing] = KnownQueries()

    def listing(request: Request) -> _Listing:
        raw: bytes = request.scope["query_string"]
        hit = parsed.get(raw)
        if hit is None:
            hit = parsed.remember(raw, _Listing(parse(request, MetricFilters)))
        return hit

    def read(request: Request) -> CachedRead:
        ls = listing(request)
        q = ls.query

        def answer(page: FoundPage) -> Answer:
            nxt = None if page.next is None else encode_cursor(*page.next)
            # One copy of the page's bytes (a chain of + copied them four times).
            payload = b"".join((b'{"items":[', page.items, b'],"next":', orjson.dumps(nxt), b"}"))
            return Answer(payload, listing_span(q, page.beyond))

        refused = (
            None
            if q.after is None
            else ApiError(422, "bad_parameter", _BAD_CURSOR, parameter="after")
        )
        one = StoreRead(read_page, (store, ls, deps.config.page_bytes), answer, refused)
        compute = functools.partial(deps.compute_read, one)
        return CachedRead(ls.key, ls.scope, compute, cheap=True, store=one)  # one short read

    deps.cached_gets["/metrics"] = CachedGet(parsed.get, read)

    async def list_metrics(request: Request) -> Response:
        r = read(request)
        return await deps.cached(r.key, r.scope, r.compute, r.cheap)

    async def get_metric(request: Request) -> Response:
        doc_id = request.path_params["id"]
        doc = await deps.store_call(store.get, doc_id)
        if doc is None:
            raise not_found(doc_id)
        return JSONResponse(doc_out(doc))

    # The writes themselves are writes.py's (the HTTP fast path calls them too).
    mw = deps.writes = MetricWrites(deps)

    def answer(reply: Reply) -> Response:
        if reply.status == 204:
            return Response(status_code=204)
        return Response(reply.payload, reply.status, reply.headers, "application/json")

    async def body(request: Request) -> Any:
        return await read_json(request, deps.config.max_body_bytes)

    def target(request: Request) -> tuple[str, Role]:
        return request.path_params["id"], request.scope["deltawire.role"]

    async def create_metric(request: Request) -> Response:
        return answer(await mw.create(await body(request)))

    async def replace_metric(request: Request) -> Response:
        raw = await body(request)
        return answer(await mw.replace(*target(request), raw))

    async def patch_metric(request: Request) -> Response:
        raw = await body(request)
        return answer(await mw.patch(*target(request), raw))

    async def delete_metric(request: Request) -> Response:
        return answer(await mw.delete(*target(request)))

    # Shared parts of the declarations below.
    doc = functools.partial(Endpoint, answer=Document, tags=("metrics",))
    writes = functools.partial(doc, role=Role.write, errors=(404, 413, 422, 503))
    admin = "Streamed documents need the admin role."
    return [
        doc("GET", "/metrics", list_metrics, "List stored documents, filtered, a page at a time",
            params=MetricFilters, answer=Page, description="Answers stop at a byte budget too; "
            "follow next (after=) for the rest. fields= keeps only those paths of data."),
        doc("POST", "/metrics", create_metric, "Create a metric point", role=Role.write,
            body=PointCreate, status=201, errors=(413, 422, 503)),
        doc("GET", "/metrics/{id}", get_metric, "One document", errors=(404, 422, 503)),
        writes("PUT", "/metrics/{id}", replace_metric, "Replace a document's writable fields",
               body=PointCreate, description=admin),
        writes("PATCH", "/metrics/{id}", patch_metric, "Change a document with a JSON Merge "
               "Patch (RFC 7386) of its writable fields", body=PointPatch,
               description=f"null removes a field (value, host, data or a key of data). {admin}"),
        writes("DELETE", "/metrics/{id}", delete_metric, "Delete a document", status=204,
               answer=None, errors=(404, 422, 503),
               description=f"Its id is never handed out again. {admin}"),
    ]  # fmt: skip
