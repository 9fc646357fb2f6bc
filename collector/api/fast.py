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

The served process goes one step further (``FastGets`` in http.py's protocol):
a held answer is written from the HTTP parser's callback, without uvicorn's
per-request cycle object, event, asyncio task and ASGI messages, which were
most of what a hit still cost here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import Role, require
from .body import parse_json
from .cache import Answer, CachedRead
from .deps import Deps
from .edit_jobs import EditDone, EditJob
from .errors import ApiError, error_body
from .writes import Reply

__all__ = ["CachedGets", "FastGets", "FastWrites"]

log = logging.getLogger("deltawire.collector.api")

_HEADERS = [(b"content-type", b"application/json"), (b"x-cache", b"hit")]
_MISS = {"x-cache": "miss"}


class FastGets:
    """The lookup both fast paths share: this ASGI middleware and the HTTP
    protocol's (http.py, which answers before uvicorn builds a request cycle
    and a task for it), and the protocol's path for a GET the cache does not
    hold (``submit``)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _allowed(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether a GET may skip the dispatcher's checks: no rate limit to
        count it against, and a key (if keys are on) of any role."""
        deps = self.deps
        if deps.config.rate_limit > 0:
            return False  # the limiter counts each request once, on the full path
        if deps.config.keys.enabled:
            try:  # any role may GET
                deps.config.keys.role_of(Request({"type": "http", "headers": headers}))
            except ApiError:
                return False  # the full path answers 401
        return True

    def payload(
        self, path: str, query: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> bytes | None:
        """The held answer of ``GET path?query``, or None: the full path answers."""
        cached = self.deps.cached_gets.get(path)
        if cached is None:
            return None
        keyed = cached.known(query)
        if keyed is None or not self._allowed(headers):
            return None  # not validated yet: the full path parses it (or says 422)
        return self.deps.cache.peek(keyed.key, keyed.scope)

    def answered(self, path: str, started: float) -> None:
        """Count an answer sent at once (as the full path counts its answers)."""
        self.deps.stats.observe(path, "GET", 200, time.perf_counter() - started)

    def submit(
        self,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        answer: Callable[[Reply], None],
    ) -> bool:
        """Take a GET of a cached path that ``payload`` could not answer: its
        answer (from the cache, another request's computation or its own,
        as the route's) goes to ``answer`` from a task, without Starlette's
        middlewares, router, ``Request`` and ``Response`` or uvicorn's
        request cycle (for a new listing, ~a third of the event loop's CPU).
        False (the full path answers) for a path it does not serve, a check
        it leaves to the dispatcher, or bad parameters (the full path's 422)."""
        cached = self.deps.cached_gets.get(path)
        if cached is None or cached.read is None or not self._allowed(headers):
            return False
        started = time.perf_counter()
        try:
            read = cached.read(Request({"type": "http", "query_string": query, "headers": headers}))
        except ApiError:
            return False
        deps = self.deps
        if read.store is not None and deps.uncached(read.key, read.cheap):
            # Most new listing URLs: one store read, answered from its callback.
            key = read.key

            def done(computed: Answer | None, error: BaseException | None) -> None:
                if computed is not None:
                    deps.doorkeeper.admit(key)
                    self._reply(path, Reply(200, computed.payload, _MISS), started, answer)
                else:
                    assert error is not None
                    self._reply(path, _error_reply("GET", path, error), started, answer)

            deps.read_then(read.store, done)
            return True
        deps.spawn(self._answer(path, read, started, answer))
        return True

    def _reply(
        self, path: str, reply: Reply, started: float, answer: Callable[[Reply], None]
    ) -> None:
        stats = self.deps.stats
        stats.fast_reads += 1
        stats.observe(path, "GET", reply.status, time.perf_counter() - started)
        answer(reply)

    async def _answer(
        self, path: str, read: CachedRead, started: float, answer: Callable[[Reply], None]
    ) -> None:
        try:
            payload, how = await self.deps.cached_answer(
                read.key, read.scope, read.compute, read.cheap
            )
            reply = Reply(200, payload, {"x-cache": how})
        except Exception as e:
            reply = _error_reply("GET", path, e)
        self._reply(path, reply, started, answer)


class CachedGets:
    """Pure ASGI middleware, outermost but for Starlette's error handler."""

    def __init__(self, app: ASGIApp, deps: Deps) -> None:
        self.app, self.fast = app, FastGets(deps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        payload = self.fast.payload(scope["path"], scope["query_string"], scope["headers"])
        if payload is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-length", b"%d" % len(payload)), *_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self.fast.answered(scope["path"], start)


_ITEM = "/metrics/"  # PUT/PATCH/DELETE /metrics/{id}


class FastWrites:
    """The write fast path's side of http.py: which writes it may take, and
    their answers, from writes.py's functions (the routes' own), with the
    dispatcher's checks in the same order (key and role, then the body) and
    the same counters. A write it does not take (a query string, a body over
    the limit or chunked, a rate limit to apply, ...) goes down the full
    path, which answers exactly as before."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.max_body = deps.config.max_body_bytes

    def route(self, method: bytes, path: str) -> str | None:
        """The route template of ``method path`` if this path answers it."""
        if self.deps.writes is None or self.deps.config.rate_limit > 0:
            return None  # the limiter counts each request once, on the full path
        if path == "/metrics":
            return path if method == b"POST" else None
        if method in (b"PUT", b"PATCH", b"DELETE") and path.startswith(_ITEM):
            doc_id = path[len(_ITEM) :]
            return "/metrics/{id}" if doc_id and "/" not in doc_id else None
        return None

    def submit(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        answer: Callable[[Reply], None],
    ) -> None:
        """Answer a write ``route`` accepted: ``answer(reply)`` at once if it
        is refused (key, role, body), else once its group is committed (from
        the group's task: no task per write). Never raises."""
        started = time.perf_counter()
        route = "/metrics" if path == "/metrics" else "/metrics/{id}"
        writes = self.deps.writes
        assert writes is not None

        def answered(done: EditDone | None, error: BaseException | None) -> None:
            if error is None:
                assert done is not None
                self._reply(answer, route, method, started, writes.reply(done))
            else:
                self._reply(answer, route, method, started, _error_reply(method, path, error))

        try:
            role = self.deps.config.keys.role_of(Request({"type": "http", "headers": headers}))
            require(role, Role.write, f"{method} {route}")
            doc_id = None if method == "POST" else path[len(_ITEM) :]
            parsed = None if method == "DELETE" else parse_json(body)
            job = EditJob(_OPS[method], doc_id, role, parsed)
        except Exception as e:
            self._reply(answer, route, method, started, _error_reply(method, path, e))
            return
        self.deps.edits.submit(job, answered)

    def _reply(
        self, answer: Callable[[Reply], None], route: str, method: str, started: float, reply: Reply
    ) -> None:
        stats = self.deps.stats
        stats.fast_writes += 1
        stats.observe(route, method, reply.status, time.perf_counter() - started)
        answer(reply)


#: The job of each write method (edit_jobs.OPS).
_OPS = {"POST": "create", "PUT": "replace", "PATCH": "patch", "DELETE": "delete"}


def _error_reply(method: str, path: str, e: BaseException) -> Reply:
    """An error as the answer to a write, as the full path's error handlers
    answer it: the ApiError's JSON, or a logged 500."""
    if isinstance(e, ApiError):
        return Reply(e.status, error_body(e.code, e.detail, **e.extra), e.headers or {})
    log.error("unhandled error on %s %s", method, path, exc_info=e)
    return Reply(500, error_body("internal", "unexpected server error"))
