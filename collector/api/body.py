"""Request bodies: read within a byte limit, parsed as JSON, validated as a model."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from deltawire.collector.point import DATA_MAX_DEPTH, PointError, check_data

from .errors import ApiError, from_validation

__all__ = ["merge_patch", "parse_json", "read_json", "too_large", "validate"]

M = TypeVar("M", bound=BaseModel)


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")


async def read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    # Counted while streaming: a chunked body has no Content-Length to trust.
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; this only keeps it out of the error log.
        raise ApiError(400, "client_disconnected", "the client left mid-body") from None
    return parse_json(b"".join(chunks))


def parse_json(body: bytes) -> Any:
    """A request body as JSON: 400 ``bad_json`` (or 422 for a too-deep one) if not."""
    if not body.strip():
        raise ApiError(400, "bad_json", "the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "depth" in str(e) or "recursion" in str(e):  # maybe valid JSON, far too deep
            raise ApiError(
                422,
                "bad_parameter",
                f"body: nests deeper than {DATA_MAX_DEPTH} levels",
                parameter="body",
            ) from None
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {e}") from None


def validate(model: type[M], body: Any) -> M:
    if not isinstance(body, dict):
        raise ApiError(422, "bad_body", "the body must be a JSON object", parameter="body")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise from_validation(e) from None
    except (TypeError, ValueError) as e:  # a validator's own failure: still the body's fault
        raise ApiError(
            422, "bad_body", f"the body is not a valid point: {e}", parameter="body"
        ) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch (``patch`` depth-checked by the caller)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def patch_body(body: Any) -> dict[str, Any]:
    """A merge patch's body: an object no deeper than a point's data allows."""
    if not isinstance(body, dict):
        raise ApiError(422, "bad_body", "a merge patch is a JSON object", parameter="body")
    try:
        check_data(body, "body", max_depth=DATA_MAX_DEPTH + 1)  # data sits one level down
    except PointError as e:
        raise ApiError(422, "bad_parameter", str(e), parameter="body") from None
    return body


__all__ += ["patch_body"]
