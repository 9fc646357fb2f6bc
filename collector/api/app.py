"""The collector's HTTP API (see /work/shared/HTTP_API.md for the pinned contract).

Starlette on uvicorn, in a process of its own (``python -m collector.api``); it
reads and writes through the ``Store`` protocol and caches list and query
answers (``cache.py``). Store calls block, so they run on worker threads, at
most ``store_threads`` at once.

Error policy: every bad input is a 4xx JSON ``{"error", "detail", ...}`` — a bad
query parameter or body field is a 422 that also names it in ``"parameter"``.
A failing store is a 503 ``{"error": "store_unavailable"}``, logged once per
outage. Nothing a client sends can produce a 500 or a traceback.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import anyio.to_thread
import orjson
from anyio import CapacityLimiter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deltawire.collector.stores.base import (
    MetricQuery,
    Store,
    StoreError,
    StoreUnavailable,
    decode_cursor,
    encode_cursor,
)
from deltawire.formats import rfc3339

from .cache import QueryCache, scope_for
from .dashboard import dashboard_routes
from .nl_run import answer as nl_answer
from .nl_vocab import VocabCache
from .nlquery import EXAMPLES, PromptError, parse_prompt
from .stats import IngestStats, RequestStats, render_stats

__all__ = [
    "DEFAULT_LIMIT",
    "KINDS",
    "MAX_BODY_BYTES",
    "MAX_LIMIT",
    "ApiError",
    "ORJSONResponse",
    "create_app",
    "metric_query",
    "parse_time",
    "point_fields",
    "rfc3339",
]

log = logging.getLogger("deltawire.collector.api")

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_BODY_BYTES = 1 << 20
KINDS = frozenset({"sample", "event", "session", "metric"})
_MAX_TEXT = 256  # longest session/name/host/tag accepted in filters and bodies
_MAX_TAGS = 64
_MAX_TS = 253402300800.0  # 10000-01-01: datetime cannot format beyond
_INT64 = 1 << 63
_PARSED_QUERIES = 4096  # memoized GET /metrics query strings

_METRICS_PARAMS = frozenset(
    {"session", "name", "kind", "host", "tag", "from", "to", "limit", "sort", "after"}
)
_BODY_FIELDS = frozenset({"name", "value", "tags", "timestamp", "data"})
# Server-assigned fields of a document: accepted (and ignored) in a PUT/POST body
# so a client can send back what it got from GET.
_READ_ONLY_FIELDS = frozenset({"id", "session", "seq", "kind", "host"})
_EPOCH_RE = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$")

T = TypeVar("T")


class ApiError(Exception):
    """Becomes a JSON error answer: ``{"error": code, "detail": detail, **extra}``."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra

    def response(self) -> Response:
        return ORJSONResponse(
            {"error": self.code, "detail": self.detail, **self.extra}, self.status
        )


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _bad_param(param: str, detail: str) -> NoReturn:
    raise ApiError(422, "bad_parameter", f"{param}: {detail}", parameter=param)


# -- time ---------------------------------------------------------------------


def parse_time(text: str, param: str) -> float:
    """RFC 3339 (naive means UTC) or epoch seconds -> epoch seconds; 422 otherwise."""
    value = text.strip()
    if _EPOCH_RE.match(value):
        ts = float(value)
    else:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            hint = " (a '+' in a URL means a space: encode it as %2B)" if " " in value else ""
            _bad_param(param, f"{text!r} is not an RFC 3339 time or epoch seconds{hint}")
        ts = (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).timestamp()
    if not 0 <= ts < _MAX_TS:
        _bad_param(param, f"{text!r} is out of range (1970 to 9999)")
    return ts


def _doc_out(d: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": d["id"],
        "session": d.get("session"),
        "seq": d.get("seq"),
        "kind": d.get("kind"),
        "name": d.get("name"),
        "host": d.get("host"),
        "tags": list(d.get("tags") or ()),
        "timestamp": rfc3339(d["ts"]),
    }
    if d.get("value") is not None:
        out["value"] = d["value"]
    if d.get("data") is not None:
        out["data"] = d["data"]
    return out


def _session_out(s: dict[str, Any]) -> dict[str, Any]:
    out = dict(s)
    for key in ("first_seen", "last_seen", "ended", "ended_at"):
        v = out.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = rfc3339(v)
    return out


# -- query parameters -------------------------------------------------------------


def _params(
    request: Request, allowed: frozenset[str], repeatable: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            _bad_param(key, f"unknown parameter; known: {', '.join(sorted(allowed))}")
        params.setdefault(key, []).append(value)
    for key, values in params.items():
        if len(values) > 1 and key not in repeatable:
            _bad_param(key, "given more than once")
    return params


def _text(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    if not values:
        return None
    value = values[0]
    if not value or len(value) > _MAX_TEXT:
        _bad_param(key, f"must be 1 to {_MAX_TEXT} characters")
    return value


def _int(params: dict[str, list[str]], key: str, default: int, lo: int, hi: int) -> int:
    values = params.get(key)
    if not values:
        return default
    raw = values[0].strip()
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        _bad_param(key, f"must be an integer from {lo} to {hi}, not {values[0]!r}")
    return int(raw)


def metric_query(params: dict[str, list[str]]) -> MetricQuery:
    """The validated ``GET /metrics`` filters (422 naming the first bad one)."""
    kind = _text(params, "kind")
    if kind is not None and kind not in KINDS:
        _bad_param("kind", f"must be one of {', '.join(sorted(KINDS))}")
    tags = params.get("tag", [])
    if len(tags) > _MAX_TAGS:
        _bad_param("tag", f"at most {_MAX_TAGS} tags")
    for t in tags:
        if not t or len(t) > _MAX_TEXT:
            _bad_param("tag", f"each tag must be 1 to {_MAX_TEXT} characters")
    ts_from = parse_time(params["from"][0], "from") if "from" in params else None
    ts_to = parse_time(params["to"][0], "to") if "to" in params else None
    if ts_from is not None and ts_to is not None and ts_to < ts_from:
        _bad_param("to", "is before 'from'")
    sort = params.get("sort", ["timestamp"])[0]
    if sort not in ("timestamp", "-timestamp"):
        _bad_param("sort", f"must be 'timestamp' or '-timestamp', not {sort!r}")
    after = None
    if "after" in params:
        try:
            after = decode_cursor(params["after"][0])
        except ValueError as e:
            _bad_param("after", str(e))
        if not math.isfinite(after[0]):
            _bad_param("after", "not a cursor from a previous page")
    return MetricQuery(
        session=_text(params, "session"),
        name=_text(params, "name"),
        kind=kind,
        host=_text(params, "host"),
        tags=tuple(sorted(set(tags))),
        ts_from=ts_from,
        ts_to=ts_to,
        limit=_int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        descending=sort == "-timestamp",
        after=after,
    )


# -- request bodies -------------------------------------------------------------------


async def _read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    # Counted while streaming: a chunked body has no Content-Length to trust.
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; this only keeps it out of the error log.
        raise ApiError(400, "client_disconnected", "the client left mid-body") from None
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError(400, "bad_json", "the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {e}") from None


def point_fields(body: Any, now: float) -> dict[str, Any]:
    """The store fields (``name, value, tags, ts, data``) of a POST/PUT body."""
    if not isinstance(body, dict):
        raise ApiError(422, "bad_body", "the body must be a JSON object", parameter="body")
    for key in body:
        if key not in _BODY_FIELDS and key not in _READ_ONLY_FIELDS:
            _bad_param(key, f"unknown field; a point has {', '.join(sorted(_BODY_FIELDS))}")
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_TEXT:
        _bad_param("name", f"required, a string of 1 to {_MAX_TEXT} characters")
    value = body.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        _bad_param("value", "required, a number")
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        _bad_param("value", "out of the 64-bit integer range")
    if isinstance(value, float) and not math.isfinite(value):
        _bad_param("value", "must be finite")
    tags = body.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list) or len(tags) > _MAX_TAGS:
        _bad_param("tags", f"a list of at most {_MAX_TAGS} strings")
    for t in tags:
        if not isinstance(t, str) or not 0 < len(t) <= _MAX_TEXT:
            _bad_param("tags", f"each tag must be a string of 1 to {_MAX_TEXT} characters")
    ts_raw = body.get("timestamp")
    if ts_raw is None:
        ts = now
    elif isinstance(ts_raw, str):
        ts = parse_time(ts_raw, "timestamp")
    elif isinstance(ts_raw, int | float) and not isinstance(ts_raw, bool):
        ts = float(ts_raw)
        if not 0 <= ts < _MAX_TS:
            _bad_param("timestamp", "out of range (1970 to 9999)")
    else:
        _bad_param("timestamp", "an RFC 3339 string or epoch seconds")
    data = body.get("data")
    if data is not None and not isinstance(data, dict):
        _bad_param("data", "a JSON object (or null)")
    return {"name": name, "value": value, "tags": list(dict.fromkeys(tags)), "ts": ts, "data": data}


# -- instrumentation ------------------------------------------------------------------


class _Instrument:
    """Counts every answer by route template and status, and times it.

    Pure ASGI (not BaseHTTPMiddleware, which costs a task per request). It sits
    inside Starlette's error middleware, so a crash is counted as a 500.
    """

    def __init__(self, app: ASGIApp, stats: RequestStats) -> None:
        self.app, self.stats = app, stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.stats.observe(label, scope["method"], status, time.perf_counter() - start)


# -- the app -------------------------------------------------------------------------


def create_app(
    store: Store,
    cache: QueryCache,
    stats_source: IngestStats,
    *,
    store_threads: int = 4,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_stats: RequestStats | None = None,
) -> Starlette:
    """The API over ``store``; ``stats_source`` holds the ingest process's counters."""
    req_stats = request_stats or RequestStats()
    limiter = CapacityLimiter(max(1, store_threads))
    store_down = False  # for "logged once per outage"

    def store_failed(fn: Callable[..., Any], e: Exception) -> NoReturn:
        nonlocal store_down
        req_stats.store_errors += 1
        if not store_down:  # once per outage: a down store fails every request
            store_down = True
            if isinstance(e, StoreUnavailable):
                log.warning("store unavailable: %s", e)
            else:
                log.error("store call %s failed", getattr(fn, "__name__", fn), exc_info=e)
        raise ApiError(
            503, "store_unavailable", "the store failed or cannot be reached; retry later"
        )

    async def store_call(fn: Callable[..., T], *args: Any, refused: ApiError | None = None) -> T:
        """``fn(*args)`` on a worker thread. A ``StoreError`` is the client's fault
        only where the caller says so (``refused``: input the API cannot check
        itself, such as a store-specific cursor id); elsewhere the API already
        validated everything, so it means a failing store (e.g. a corrupt file)."""
        nonlocal store_down
        try:
            result = await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
        except StoreError as e:
            if refused is not None and not isinstance(e, StoreUnavailable):
                refused.detail = f"{refused.detail}: {e}"
                raise refused from None
            store_failed(fn, e)
        except Exception as e:  # a store bug or driver error must still not be a 500
            store_failed(fn, e)
        if store_down:
            store_down = False
            log.warning("store available again")
        return result

    async def cached(key: str, scope: str, compute: Callable[[], Awaitable[bytes]]) -> Response:
        payload, gen = await cache.get(key, scope)
        if payload is not None:
            return Response(payload, media_type="application/json", headers={"x-cache": "hit"})
        payload = await compute()
        if gen is not None:
            await cache.put(key, gen, payload)
        return Response(payload, media_type="application/json", headers={"x-cache": "miss"})

    async def bump(sessions: Iterable[str | None], names: Iterable[str | None]) -> None:
        await cache.bump(
            [s for s in sessions if s is not None], [n for n in names if n is not None]
        )

    # -- endpoints ----------------------------------------------------------------

    # Validated queries by raw query string: dashboards poll the same URLs, and
    # parsing and validating is most of the cost of a cache hit. The parse is a
    # pure function of the string (no "now" in it), so reusing it is exact.
    parsed: dict[bytes, tuple[MetricQuery, str, str]] = {}

    def parse_list_query(request: Request) -> tuple[MetricQuery, str, str]:
        raw: bytes = request.scope["query_string"]
        hit = parsed.get(raw)
        if hit is not None:
            return hit
        q = metric_query(_params(request, _METRICS_PARAMS, frozenset({"tag"})))
        fields = [q.session, q.name, q.kind, q.host, q.tags, q.ts_from, q.ts_to]
        key = "m:" + orjson.dumps([*fields, q.limit, q.descending, q.after]).decode()
        if len(parsed) >= _PARSED_QUERIES:
            parsed.clear()  # a crude bound; refilling costs one parse per URL
        parsed[raw] = (q, key, scope_for(q.session, q.name))
        return parsed[raw]

    async def list_metrics(request: Request) -> Response:
        q, key, scope = parse_list_query(request)

        async def compute() -> bytes:
            # One more than asked: "next" is set exactly when another page exists.
            docs = await store_call(
                store.find,
                replace(q, limit=q.limit + 1),
                refused=ApiError(
                    422, "bad_parameter", "after: not a cursor of this store", parameter="after"
                )
                if q.after is not None
                else None,
            )
            nxt = None
            if len(docs) > q.limit:
                docs = docs[: q.limit]
                nxt = encode_cursor(docs[-1]["ts"], docs[-1]["id"])
            return orjson.dumps({"items": [_doc_out(d) for d in docs], "next": nxt})

        return await cached(key, scope, compute)

    async def get_metric(request: Request) -> Response:
        _params(request, frozenset())
        doc_id = request.path_params["id"]
        doc = await store_call(store.get, doc_id)
        if doc is None:
            raise ApiError(404, "not_found", f"no document with id {doc_id!r}")
        return ORJSONResponse(_doc_out(doc))

    async def create_metric(request: Request) -> Response:
        _params(request, frozenset())
        fields = point_fields(await _read_json(request, max_body_bytes), time.time())
        # Every field was validated above, so a StoreError here is the store's
        # failure (e.g. a corrupt file), not the client's: 503 like any other.
        doc = await store_call(store.create, fields)
        await bump([doc.get("session")], [doc.get("name")])
        return ORJSONResponse(_doc_out(doc), 201, headers={"location": f"/metrics/{doc['id']}"})

    async def replace_metric(request: Request) -> Response:
        _params(request, frozenset())
        doc_id = request.path_params["id"]
        fields = point_fields(await _read_json(request, max_body_bytes), time.time())

        def do() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            # The old document's session and name are what cached answers hold.
            old = store.get(doc_id)
            return (old, store.replace(doc_id, fields)) if old is not None else (None, None)

        old, new = await store_call(do)
        if old is None or new is None:
            raise ApiError(404, "not_found", f"no document with id {doc_id!r}")
        await bump([old.get("session"), new.get("session")], [old.get("name"), new.get("name")])
        return ORJSONResponse(_doc_out(new))

    async def delete_metric(request: Request) -> Response:
        _params(request, frozenset())
        doc_id = request.path_params["id"]

        def do() -> dict[str, Any] | None:
            old = store.get(doc_id)
            return old if old is not None and store.delete(doc_id) else None

        old = await store_call(do)
        if old is None:
            raise ApiError(404, "not_found", f"no document with id {doc_id!r}")
        await bump([old.get("session")], [old.get("name")])
        return Response(status_code=204)

    vocab_cache = VocabCache()

    async def query(request: Request) -> Response:
        params = _params(request, frozenset({"prompt"}))
        if not params.get("prompt") or not params["prompt"][0].strip():
            _bad_param("prompt", "required: a question such as 'top 5 events today'")
        prompt = " ".join(params["prompt"][0].split())
        catalog = functools.partial(store_call, store.catalog)
        vocab = await vocab_cache.get(catalog)
        try:
            plan = parse_prompt(prompt, datetime.now(UTC), vocab)
        except PromptError:
            try:  # a name stored since the vocabulary was read?
                vocab = await vocab_cache.get(catalog, fresh=True)
                plan = parse_prompt(prompt, datetime.now(UTC), vocab)
            except PromptError as e:
                raise ApiError(422, "bad_prompt", e.reason, parameter="prompt",
                               suggestions=e.suggestions, examples=list(EXAMPLES)) from None  # fmt: skip

        async def compute() -> bytes:
            ans = await store_call(nl_answer, store, vocab, plan, _doc_out, _session_out)
            return orjson.dumps({"prompt": prompt, "interpreted": plan.interpreted(),
                                 "rows": ans.rows, "notes": ans.notes})  # fmt: skip

        # Keyed by the prompt, not the resolved times: "last hour" stays cacheable,
        # and its window is at most the cache TTL old.
        p = plan.params
        return await cached("q:" + prompt, scope_for(p.get("session"), p.get("name")), compute)

    async def sessions(request: Request) -> Response:
        params = _params(request, frozenset({"limit"}))
        limit = _int(params, "limit", 1000, 1, MAX_LIMIT)
        rows = await store_call(store.sessions, limit)
        return ORJSONResponse({"items": [_session_out(s) for s in rows]})

    async def healthz(request: Request) -> Response:
        return ORJSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        def ping() -> bool:
            try:
                return bool(store.ping())
            except Exception:  # a ping that raises is a "no"
                return False

        ok = await anyio.to_thread.run_sync(ping, limiter=limiter)
        cache_doc = {"backend": cache.backend, "healthy": cache.healthy()}
        if not ok:
            return ApiError(
                503, "store_unavailable", "the store does not answer", cache=cache_doc
            ).response()
        return ORJSONResponse({"status": "ready", "store": "ok", "cache": cache_doc})

    async def stats(request: Request) -> Response:
        return Response(
            render_stats(stats_source, req_stats, cache),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    Handler = Callable[[Request], Awaitable[Response]]

    def route(path: str, **by_method: Handler) -> Route:
        """One route per path, dispatching on the method, so a 405 lists every
        allowed method in its Allow header."""

        async def run(request: Request) -> Response:
            # HEAD is served by the GET handler (Starlette drops the body).
            method = "GET" if request.method == "HEAD" else request.method
            try:
                return await by_method[method](request)
            except ApiError as e:
                return e.response()

        return Route(path, run, methods=list(by_method), name=path)

    from .aggregate import aggregate_endpoint  # here: that module imports this one

    routes = [
        route("/aggregate", GET=aggregate_endpoint(store, store_call, cached)),
        route("/metrics", GET=list_metrics, POST=create_metric),
        route("/metrics/{id}", GET=get_metric, PUT=replace_metric, DELETE=delete_metric),
        route("/query", GET=query),
        route("/sessions", GET=sessions),
        route("/healthz", GET=healthz),
        route("/readyz", GET=readyz),
        route("/stats", GET=stats),
        *dashboard_routes(),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ORJSONResponse(
            {"error": code, "detail": exc.detail}, exc.status_code, headers=exc.headers
        )

    async def crash(request: Request, exc: Exception) -> Response:
        # Logged with its traceback here; the client only learns that it failed.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return ORJSONResponse({"error": "internal", "detail": "unexpected server error"}, 500)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Instrument, stats=req_stats)],
        exception_handlers={HTTPException: http_error, Exception: crash},
    )
    app.state.request_stats = req_stats
    return app
