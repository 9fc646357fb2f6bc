"""``/healthz``, ``/readyz`` (no key needed) and ``/stats``."""

from __future__ import annotations

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from ..deps import Deps
from ..errors import ApiError, JSONResponse
from ..schemas import Health, Ready
from ..spec import Endpoint
from ..stats import counters_of, render_stats

__all__ = ["READY_TIMEOUT_S", "endpoints"]

#: /readyz answers within 1 s whatever else runs (HTTP_API.md): a ping slower
#: than this counts as "not ready".
READY_TIMEOUT_S = 0.8


def endpoints(deps: Deps) -> list[Endpoint]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        store = deps.store

        def ping() -> bool:
            try:
                return bool(store.ping())
            except Exception:  # a ping that raises is a "no"
                return False

        ok = False
        # Its own thread (never queued behind queries), abandoned if slow.
        with anyio.move_on_after(READY_TIMEOUT_S):
            ok = await anyio.to_thread.run_sync(
                ping, limiter=deps.ready_limiter, abandon_on_cancel=True
            )
        cache_doc = {"backend": deps.cache.backend, "healthy": deps.cache.healthy()}
        if not ok:
            raise ApiError(503, "store_unavailable", "the store does not answer", cache=cache_doc)
        return JSONResponse({"status": "ready", "store": "ok", "cache": cache_doc})

    async def stats(request: Request) -> Response:
        counters = counters_of(deps.stats, deps.cache, deps.edits)
        workers = 1
        if deps.peers is not None:  # the other API workers' too
            workers = deps.peers.count
            for theirs in await deps.peers.gather():
                counters.add(theirs)
        return Response(
            render_stats(deps.ingest, counters, workers),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    tags = ("operations",)
    return [
        Endpoint(
            "GET", "/healthz", healthz, "Liveness", role=None, answer=Health, errors=(), tags=tags
        ),
        Endpoint(
            "GET",
            "/readyz",
            readyz,
            "Readiness: the store answers",
            role=None,
            answer=Ready,
            errors=(503,),
            tags=tags,
        ),
        Endpoint(
            "GET",
            "/stats",
            stats,
            "The collector's counters (Prometheus text)",
            media_type="text/plain",
            errors=(),
            tags=tags,
        ),
    ]
