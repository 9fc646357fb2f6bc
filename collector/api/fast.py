"""The fast path for cached GETs: an answer this process holds, sent before
Starlette's routing, request objects and response classes.

Dashboards poll the same URLs; a cached listing's answer is a few KB of bytes
already. Through the whole stack (middlewares, the router's regexes, a
``Request``, the dispatcher, a ``Response`` building its headers) one hit cost
~3x what sending it does. Here a GET whose path registered a lookup
(``Deps.cached_gets``: its query string, memoized once the full path parsed and
validated it, to the cache key) and whose answer ``QueryCache.peek`` holds is
answered at once, with the same headers and counters as the full path. Anything
else (a new URL, a miss, an answer only in Redis, a rate limit to apply, a key
that fails) goes down the full path, which answers exactly as before.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .deps import Deps
from .errors import ApiError

__all__ = ["CachedGets"]

_HEADERS = [(b"content-type", b"application/json"), (b"x-cache", b"hit")]


class CachedGets:
    """Pure ASGI middleware, outermost but for Starlette's error handler."""

    def __init__(self, app: ASGIApp, deps: Deps) -> None:
        self.app, self.deps = app, deps

    def _payload(self, scope: Scope) -> bytes | None:
        lookup = self.deps.cached_gets.get(scope["path"])
        if lookup is None:
            return None
        keyed = lookup(scope["query_string"])
        if keyed is None:
            return None  # not validated yet: the full path parses it (or says 422)
        deps = self.deps
        if deps.config.rate_limit > 0:
            return None  # the limiter counts each request once, on the full path
        if deps.config.keys.enabled:
            try:
                deps.config.keys.role_of(Request(scope))  # any role may GET
            except ApiError:
                return None  # the full path answers 401
        return deps.cache.peek(keyed.key, keyed.scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        payload = self._payload(scope)
        if payload is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-length", b"%d" % len(payload)), *_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self.deps.stats.observe(scope["path"], "GET", 200, time.perf_counter() - start)
