"""The metric writes (POST, PUT, PATCH, DELETE ``/metrics``) as functions of
plain inputs: the parsed body, the document id and the caller's role.

Two callers share them, so each rule is written once: the Starlette routes
(routes/metrics.py, the documented endpoints) and the HTTP protocol's write
fast path (``FastWrites`` in fast.py), which answers a plain keep-alive write
from the parser's callbacks without uvicorn's request cycle, Starlette's
middlewares, router, ``Request`` and ``Response``. Flat out at c=100 that
machinery was most of a write's CPU. Each write becomes an ``EditJob``
(edit_jobs.py), committed in a group with the others pending (edits.py) by
the edit writer process (edit_writer.py), which answers with its reply's bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .auth import Role
from .deps import Deps
from .edit_jobs import EditDone, EditJob, not_found

__all__ = ["MetricWrites", "Reply", "not_found"]


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Reply(NamedTuple):
    """A write's answer: status, JSON body (empty for 204) and extra headers.
    (A named tuple: one per write, built ~3x faster than a frozen dataclass.)"""

    status: int
    payload: bytes = b""
    headers: Mapping[str, str] = _NO_HEADERS


class MetricWrites:
    """POST/PUT/PATCH/DELETE of one document; ``ApiError`` for a failed store (503)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def write(self, job: EditJob) -> Reply:
        return self.reply(await self.deps.edit(job))

    def reply(self, done: EditDone) -> Reply:
        """A committed job's answer (the cache is bumped already); a created
        document goes to ``/stream``'s subscribers."""
        if done.created is not None:
            self.deps.hub.publish([done.created])
            if self.deps.peers is not None:  # their subscribers read it from the store
                self.deps.peers.created([done.created["id"]])
        if done.location:
            return Reply(done.status, done.payload, {"location": done.location})
        return Reply(done.status, done.payload)

    async def create(self, body: Any, role: Role = Role.write) -> Reply:
        return await self.write(EditJob("create", None, role, body))

    async def replace(self, doc_id: str, role: Role, body: Any) -> Reply:
        return await self.write(EditJob("replace", doc_id, role, body))

    async def patch(self, doc_id: str, role: Role, body: Any) -> Reply:
        return await self.write(EditJob("patch", doc_id, role, body))

    async def delete(self, doc_id: str, role: Role) -> Reply:
        return await self.write(EditJob("delete", doc_id, role))
