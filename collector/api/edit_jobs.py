"""The metric writes (POST, PUT, PATCH, DELETE ``/metrics``) as data: an
``EditJob`` in, an ``EditDone`` (the answer's bytes) out, and ONE function,
``apply_jobs``, from a group of jobs to their answers through one
``Store.apply_edits`` call (one transaction, one fsync).

Data both ways, because the served API runs ``apply_jobs`` in its edit writer
process (edit_writer.py): the work that needs the old document (reading it,
the role check on streamed documents, the PATCH merge and validating the
result, the update, the rollup dirty marks, the JSON answer) all happens there,
off the HTTP process's GIL. What the HTTP process still does per write is
parse the request and its body, check the key and role, and send the answer.
In-process callers (tests, ``Deps`` without a writer) call the same function
on a thread, so every rule is written once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from deltawire.collector.point_models import PointBody, PointCreate
from deltawire.collector.stores import base as stores
from deltawire.collector.stores.base import Change, Changed, Create, Refused, StoreError

from .auth import Role, require
from .body import merge_patch, patch_body, validate
from .errors import ApiError, error_body
from .views import doc_out

__all__ = ["EditDone", "EditJob", "Mark", "apply_jobs", "not_found"]

log = logging.getLogger("deltawire.collector.api")

#: The operations a job may name: the HTTP method's, and what it does.
OPS = ("create", "replace", "patch", "delete")


@dataclass(frozen=True, slots=True)
class EditJob:
    """One write: ``op`` (``OPS``) of document ``doc_id`` (None for a
    create) by a caller of ``role``, with its body parsed (None for a delete)."""

    op: str
    doc_id: str | None
    role: Role
    body: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its constructor's arguments: ~3x faster both ways than
        # a slotted dataclass's default (a state dict through setstate),
        # which was ~10% of the API's GIL time a write, flat out.
        return EditJob, (self.op, self.doc_id, self.role, self.body)


@dataclass(frozen=True, slots=True)
class Mark:
    """A document version a write touched (before or after): what the cache
    bump needs of it."""

    session: str | None
    name: str | None
    ts: float | None
    kind: str | None

    def __reduce__(self) -> tuple[Any, ...]:
        return Mark, (self.session, self.name, self.ts, self.kind)  # see EditJob's


@dataclass(frozen=True, slots=True)
class EditDone:
    """A job's answer, ready to send: status, JSON body (empty for 204), the
    Location of a created document; what the cache bump needs (``marks``:
    nothing if the store is unchanged) and, for a create, the stored document
    for ``/stream`` subscribers."""

    status: int
    payload: bytes = b""
    location: str | None = None
    marks: tuple[Mark, ...] = ()
    created: dict[str, Any] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return EditDone, (self.status, self.payload, self.location, self.marks, self.created)


def not_found(doc_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no document with id {doc_id!r}")


def refusal(e: ApiError) -> EditDone:
    """An ``ApiError`` as a job's answer (nothing changed)."""
    return EditDone(e.status, error_body(e.code, e.detail, **e.extra))


def _writable(doc: dict[str, Any]) -> dict[str, Any]:
    """A document's writable fields, in the API's form (what PATCH applies
    to). Its timestamp stays out: a patch that does not name one keeps the
    stored ``ts`` as it is (``store_fields(old["ts"])``), where a round trip
    through RFC 3339 text rounded it to the microsecond (and so rewrote its
    index entries) and was ~5% of a PATCH's CPU."""
    out = {k: doc.get(k) for k in ("name", "value", "tags", "host", "data")}
    return {k: v for k, v in out.items() if v is not None}


def _fields_of(job: EditJob) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """PUT, PATCH, DELETE: the new store fields from the old document (None: delete)."""
    if job.op == "replace":
        return lambda old: validate(PointCreate, job.body).store_fields(time.time())
    if job.op == "patch":

        def patched(old: dict[str, Any]) -> dict[str, Any]:
            merged = merge_patch(_writable(old), patch_body(job.body))
            return validate(PointBody, merged).store_fields(old["ts"])

        return patched
    return lambda old: None


def _change(job: EditJob) -> Change:
    """The store edit of a PUT, PATCH or DELETE. ``decide`` runs in the
    edit's own transaction (one read of the old document, no other edit
    between it and the write), so its refusals (403, 422, or any error of
    its own) travel back as ``Refused``."""
    assert job.doc_id is not None
    fields_of = _fields_of(job)
    what = "deleting" if job.op == "delete" else "changing"

    def decide(old: dict[str, Any]) -> dict[str, Any] | None:
        try:
            if old.get("session") != stores.API_SESSION:
                require(job.role, Role.admin, f"{what} a streamed document")
            return fields_of(old)
        except Exception as e:  # this edit's alone (a bug too), never its group's
            raise Refused(e) from None

    return Change(job.doc_id, decide)


def _mark(doc: dict[str, Any]) -> Mark:
    return Mark(doc.get("session"), doc.get("name"), doc.get("ts"), doc.get("kind"))


def _done(job: EditJob, result: stores.EditResult) -> EditDone:
    """A store result as the job's answer."""
    if isinstance(result, Refused):
        if isinstance(result.reason, ApiError):
            return refusal(result.reason)
        log.error("unhandled error on %s of %s", job.op, job.doc_id, exc_info=result.reason)
        return EditDone(500, error_body("internal", "unexpected server error"))
    if isinstance(result, StoreError):
        # Every field was validated already, so a StoreError here is the
        # store's failure (e.g. a corrupt file), not the client's: 503.
        log.error("store refused an edit: %s", result)
        return EditDone(
            503,
            error_body("store_unavailable", "the store failed or cannot be reached; retry later"),
        )
    if job.op == "create":
        assert isinstance(result, dict)
        doc_id = result["id"]
        return EditDone(201, orjson.dumps(doc_out(result)), f"/metrics/{doc_id}",
                        (_mark(result),), result)  # fmt: skip
    assert job.doc_id is not None
    if not isinstance(result, Changed):
        return refusal(not_found(job.doc_id))
    old = _mark(result.old)
    if result.new is None:
        return EditDone(204, marks=(old,))
    # Most edits keep the session, name and ts: one mark then (the cache
    # bump takes them as a set), pickled and read once less.
    new = _mark(result.new)
    return EditDone(200, orjson.dumps(doc_out(result.new)),
                    marks=(old,) if new == old else (old, new))  # fmt: skip


def apply_jobs(store: stores.Store, jobs: Sequence[EditJob]) -> list[EditDone]:
    """Every job's answer, the valid ones applied in ONE ``apply_edits``
    call (blocking). A POST's body is validated first (it needs no old
    document); a refusal is its answer alone. A StoreError of the call
    itself (the store is down) is raised: every job of the group failed."""
    answers: list[EditDone | None] = []
    edits: list[stores.Edit] = []
    at: list[int] = []  # the job of each edit
    for i, job in enumerate(jobs):
        if job.op == "create":
            try:
                point = validate(PointCreate, job.body)
            except ApiError as e:
                answers.append(refusal(e))
                continue
            edits.append(Create(point.store_fields(time.time())))
        else:
            edits.append(_change(job))
        answers.append(None)
        at.append(i)
    results = store.apply_edits(edits) if edits else []
    for i, result in zip(at, results, strict=True):
        answers[i] = _done(jobs[i], result)
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]
