"""``/openapi.json`` and ``/docs``: the reference, generated from the endpoints' types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..deps import Deps
from ..spec import Endpoint, docs_page

__all__ = ["endpoints"]


def endpoints(deps: Deps, spec: Callable[[], dict[str, Any]]) -> list[Endpoint]:
    """``spec()`` builds the document (once, on first use: it covers every endpoint)."""
    built: dict[str, bytes | str] = {}

    async def openapi_json(request: Request) -> Response:
        if "json" not in built:
            built["json"] = orjson.dumps(spec())
        return Response(built["json"], media_type="application/json")

    async def docs(request: Request) -> Response:
        if "html" not in built:
            built["html"] = docs_page(spec())
        return HTMLResponse(built["html"])

    tags = ("reference",)
    return [
        Endpoint(
            "GET",
            "/openapi.json",
            openapi_json,
            "This API's OpenAPI 3 document",
            role=None,
            errors=(),
            tags=tags,
        ),
        Endpoint(
            "GET",
            "/docs",
            docs,
            "This API's reference, for people",
            role=None,
            media_type="text/html",
            errors=(),
            tags=tags,
        ),
    ]
