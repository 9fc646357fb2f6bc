"""The collector's HTTP API: Starlette, in a process of its own (``python -m
deltawire.collector.api``; the contract is documented in docs/api.md and served
as ``/openapi.json``).

Route modules (``routes/``) each return ``Endpoint``s built from ONE
dependencies object (``Deps``). This module puts them behind one dispatcher
per path, which does what every endpoint needs in the same order: the key and
its role (401/403), the rate limit (429), unknown query parameters (422), and
turning an ``ApiError`` into its JSON answer.

Why Starlette with our own schema generator rather than FastAPI or Litestar:
measured with wrk -c100 on this machine, a cached listing answers ~20k req/s
on Starlette, ~9k on Litestar and ~5.6k on FastAPI (docs/api.md has the
figures); the OpenAPI document still comes from the code's own types
(``spec.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import RateLimiter, Role, SharedBuckets, require
from .dashboard import dashboard_routes
from .deps import ApiConfig, Deps
from .errors import ApiError, exception_handlers
from .fast import CachedGets
from .params import NoParams, parse
from .routes import aggregate, metrics, ops, query, reference, sessions, stream
from .spec import Endpoint, openapi
from .stats import RequestStats

__all__ = ["ROUTE_MODULES", "ApiConfig", "Deps", "create_app"]

#: Each: ``endpoints(deps) -> list[Endpoint]``. Order is the order of /docs.
ROUTE_MODULES: list[Callable[[Deps], list[Endpoint]]] = [
    metrics.endpoints,
    aggregate.endpoints,
    query.endpoints,
    sessions.endpoints,
    stream.endpoints,
    ops.endpoints,
]


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


def _dispatcher(
    path: str, by_method: dict[str, Endpoint], deps: Deps, limiter: RateLimiter
) -> Route:
    """One route per path, dispatching on the method, so a 405 lists every
    allowed method in its Allow header."""
    keys = deps.config.keys

    async def run(request: Request) -> Response:
        # HEAD is served by the GET handler (Starlette drops the body).
        method = "GET" if request.method == "HEAD" else request.method
        ep = by_method[method]
        try:
            if ep.role is not None:
                if limiter.enabled:
                    who = keys.presented(request) or (request.client.host if request.client else "")
                    limiter.check(who)
                role = keys.role_of(request)
                require(role, ep.role, f"{method} {path}")
                request.scope["deltawire.role"] = role
            if ep.params is NoParams:
                parse(request, NoParams)  # unknown parameters are still a 422
            return await ep.handler(request)
        except ApiError as e:
            return e.response()

    return Route(path, run, methods=list(by_method), name=path)


def create_app(
    deps: Deps, modules: Sequence[Callable[[Deps], list[Endpoint]]] | None = None
) -> Starlette:
    """The API over ``deps``; ``modules`` defaults to ``ROUTE_MODULES``."""
    endpoints = [ep for module in (modules or ROUTE_MODULES) for ep in module(deps)]

    def spec() -> dict[str, Any]:
        return openapi(endpoints, "deltawire collector API", _version())

    endpoints += reference.endpoints(deps, spec)
    by_path: dict[str, dict[str, Endpoint]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, {})[ep.method] = ep
    # Several API workers count each client's requests in one shared table.
    shared = deps.config.shared_limits
    limiter = RateLimiter(deps.config.rate_limit, deps.config.rate_burst,
                          buckets=SharedBuckets(shared) if shared and deps.config.rate_limit > 0 else None)  # fmt: skip
    routes: list[BaseRoute] = [_dispatcher(p, eps, deps, limiter) for p, eps in by_path.items()]
    routes += dashboard_routes()  # static pages: no key needed

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(deps.hub.run)
                yield
                tg.cancel_scope.cancel()
        finally:
            deps.reads.close()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(CachedGets, deps=deps),  # before routing: answers cached GETs
            Middleware(_Instrument, stats=deps.stats),
        ],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.deps = deps
    app.state.request_stats = deps.stats
    return app


def _version() -> str:
    try:
        return version("deltawire")
    except PackageNotFoundError:
        return "0"


__all__ += ["Role"]
