"""``GET /stream``: server-sent events of newly stored documents (see ``hub.py``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..deps import Deps
from ..errors import ApiError
from ..params import StreamFilters, parse
from ..spec import Endpoint

__all__ = ["endpoints"]


def endpoints(deps: Deps) -> list[Endpoint]:
    async def stream(request: Request) -> Response:
        f = parse(request, StreamFilters)
        q = f.metric_query()
        if deps.hub.full():
            raise ApiError(
                503, "too_many_subscribers", "the stream has all the subscribers it takes"
            )
        sub = deps.hub.subscribe(q, f.fields)
        deps.hub.wake()  # start the tail now, not at the next commit
        return StreamingResponse(
            deps.hub.events(sub),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return [
        Endpoint(
            "GET",
            "/stream",
            stream,
            "Newly stored documents as server-sent events",
            params=StreamFilters,
            media_type="text/event-stream",
            tags=("stream",),
            description="Each document is one data: line of JSON; a comment line at least "
            "every 15 s. A subscriber that falls too far behind gets a last event "
            "'dropped' and is disconnected.",
        ),
    ]
