"""The metric writes (POST, PUT, PATCH, DELETE ``/metrics``) as functions of
plain inputs: the parsed body, the document id and the caller's role.

Two callers share them, so each rule is written once: the Starlette routes
(routes/metrics.py, the documented endpoints) and the HTTP protocol's write
fast path (``FastWrites`` in fast.py), which answers a plain keep-alive write
from the parser's callbacks without uvicorn's request cycle, Starlette's
middlewares, router, ``Request`` and ``Response``. Flat out at c=100 that
machinery was most of a write's CPU; the edit itself is committed in a group
with the others pending (edits.py), as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from deltawire.collector.point_models import PointBody, PointCreate
from deltawire.collector.stores.base import API_SESSION, Change, Changed, Create, Refused

from .auth import Role, require
from .body import merge_patch, patch_body, validate
from .deps import Deps
from .errors import ApiError
from .views import doc_out

__all__ = ["MetricWrites", "Reply", "not_found"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A write's answer: status, JSON body (empty for 204) and extra headers."""

    status: int
    payload: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def not_found(doc_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no document with id {doc_id!r}")


def _writable(doc: dict[str, Any]) -> dict[str, Any]:
    """A document's writable fields, in the API's form (what PATCH applies
    to). Its timestamp stays out: a patch that does not name one keeps the
    stored ``ts`` as it is (``store_fields(old["ts"])``), where a round trip
    through RFC 3339 text rounded it to the microsecond (and so rewrote its
    index entries) and was ~5% of a PATCH's CPU."""
    out = {k: doc.get(k) for k in ("name", "value", "tags", "host", "data")}
    return {k: v for k, v in out.items() if v is not None}


class MetricWrites:
    """POST/PUT/PATCH/DELETE of one document; ``ApiError`` for a refusal."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def create(self, body: Any) -> Reply:
        point = validate(PointCreate, body)
        # Every field was validated above, so a StoreError here is the store's
        # failure (e.g. a corrupt file), not the client's: 503 like any other.
        doc = await self.deps.edit(Create(point.store_fields(time.time())))  # bumps the cache
        assert isinstance(doc, dict)
        self.deps.hub.publish([doc])
        return Reply(201, orjson.dumps(doc_out(doc)), {"location": f"/metrics/{doc['id']}"})

    async def _change(
        self,
        doc_id: str,
        role: Role,
        what: str,
        fields_of: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> Changed:
        """PUT, PATCH and DELETE: ``fields_of(old)`` gives the new store fields
        (None: delete). It runs in the edit's own transaction, on the store's
        thread (one hop, one transaction: no read beforehand), so its refusals
        (403, 422, or any error of its own) travel back as ``Refused``."""

        def decide(old: dict[str, Any]) -> dict[str, Any] | None:
            try:
                if old.get("session") != API_SESSION:
                    require(role, Role.admin, f"{what} a streamed document")
                return fields_of(old)
            except Exception as e:  # this edit's alone (a bug too), never its group's
                raise Refused(e) from None

        done = await self.deps.edit(Change(doc_id, decide))  # the cache is bumped too
        if not isinstance(done, Changed):
            raise not_found(doc_id)
        return done

    async def replace(self, doc_id: str, role: Role, body: Any) -> Reply:
        done = await self._change(
            doc_id,
            role,
            "changing",
            lambda old: validate(PointCreate, body).store_fields(time.time()),
        )
        return Reply(200, orjson.dumps(doc_out(done.new or {})))

    async def patch(self, doc_id: str, role: Role, body: Any) -> Reply:
        def fields_of(old: dict[str, Any]) -> dict[str, Any]:
            merged = merge_patch(_writable(old), patch_body(body))
            return validate(PointBody, merged).store_fields(old["ts"])

        done = await self._change(doc_id, role, "changing", fields_of)
        return Reply(200, orjson.dumps(doc_out(done.new or {})))

    async def delete(self, doc_id: str, role: Role) -> Reply:
        await self._change(doc_id, role, "deleting", lambda old: None)
        return Reply(204)
