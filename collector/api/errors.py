"""Every error answer is JSON ``{"error": "<code>", "detail": "...", ...}``.

``ApiError`` is raised by handlers and parsers; the route dispatcher turns it
into its answer. A bad query parameter or body field is a 422 that also names
it in ``"parameter"``. Starlette's own errors (404, 405) and anything
unexpected go through ``exception_handlers`` below; the HTTP server's parser
errors are answered as JSON by ``http.py``.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from deltawire.collector.point import PointError

__all__ = [
    "ApiError",
    "JSONResponse",
    "bad_param",
    "error_body",
    "exception_handlers",
    "from_validation",
]

log = logging.getLogger("deltawire.collector.api")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(code: str, detail: str, **extra: Any) -> bytes:
    return orjson.dumps({"error": code, "detail": detail, **extra})


class ApiError(Exception):
    """Becomes a JSON error answer: ``{"error": code, "detail": detail, **extra}``."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra
        self.headers = headers

    def response(self) -> Response:
        return Response(
            error_body(self.code, self.detail, **self.extra),
            self.status,
            headers=self.headers,
            media_type="application/json",
        )


def bad_param(param: str, detail: str) -> NoReturn:
    raise ApiError(422, "bad_parameter", f"{param}: {detail}", parameter=param)


def from_validation(exc: ValidationError, where: str = "") -> ApiError:
    """The first error of a pydantic validation, as a 422 naming its field."""
    err = exc.errors(include_url=False)[0]
    loc = [str(part) for part in err["loc"]]
    param = loc[0] if loc else "body"
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, PointError):
        detail = cause.detail
    elif err["type"] == "extra_forbidden":
        detail = "unknown field"
    elif err["type"] == "missing":
        detail = "required"
    else:
        detail = str(err["msg"]).removeprefix("Value error, ")
        if len(loc) > 1:
            detail = f"{'.'.join(loc[1:])}: {detail}"
    return ApiError(422, "bad_parameter", f"{param}: {detail}{where}", parameter=param)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return Response(
        error_body(code, str(exc.detail)),
        exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


async def _crash(request: Request, exc: Exception) -> Response:
    # Logged with its traceback here; the client only learns that it failed.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        error_body("internal", "unexpected server error"), 500, media_type="application/json"
    )


exception_handlers: dict[Any, Any] = {HTTPException: _http_error, Exception: _crash}
