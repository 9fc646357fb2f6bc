"""``/sessions``: the sessions seen, filtered and paged, and one by name."""

from __future__ import annotations

from dataclasses import replace

import orjson
from starlette.requests import Request
from starlette.responses import Response

from deltawire.collector.stores.base import encode_cursor

from ..deps import Deps
from ..errors import ApiError, JSONResponse
from ..params import NoParams, SessionFilters, parse
from ..schemas import Session, SessionPage
from ..spec import Endpoint
from ..views import session_out

__all__ = ["endpoints"]


def endpoints(deps: Deps) -> list[Endpoint]:
    store = deps.store

    async def list_sessions(request: Request) -> Response:
        q = parse(request, SessionFilters).query()
        # One more than asked: "next" is set exactly when another page exists.
        rows = await deps.store_call(store.find_sessions, replace(q, limit=q.limit + 1))
        nxt = None
        if len(rows) > q.limit:
            rows = rows[: q.limit]
            nxt = encode_cursor(rows[-1]["last_seen"], rows[-1]["session"])
        body = orjson.dumps({"items": [session_out(s) for s in rows], "next": nxt})
        return Response(body, media_type="application/json")

    async def get_session(request: Request) -> Response:
        parse(request, NoParams)
        name = request.path_params["session"]
        row = await deps.store_call(store.get_session, name)
        if row is None:
            raise ApiError(404, "not_found", f"no session {name[:256]!r}")
        return JSONResponse(session_out(row))

    tags = ("sessions",)
    return [
        Endpoint("GET", "/sessions", list_sessions, "Sessions seen, most recently seen first",
                 params=SessionFilters, answer=SessionPage, tags=tags,
                 description="from/to bound last_seen. A session that reports while you page "
                 "moves to the front: it may show up twice or not at all in one walk."),
        Endpoint("GET", "/sessions/{session}", get_session, "One session", answer=Session,
                 errors=(404, 422, 503), tags=tags),
    ]  # fmt: skip
