"""Shapes of the answers, as pydantic models: they document ``/openapi.json``
(the handlers build the same shapes as plain dicts, which is faster to
serialise; schemathesis checks in ``make test`` that the two agree)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "AggregateAnswer",
    "Document",
    "Error",
    "Health",
    "Page",
    "QueryAnswer",
    "Ready",
    "Session",
    "SessionPage",
]


class Document(BaseModel):
    """A stored document. For streamed samples ``data`` is the full sample."""

    id: str = Field(description="never reused, not even after a delete")
    session: str
    seq: int
    kind: str = Field(description="sample, event, session (a bye) or metric (API point)")
    name: str
    host: str | None
    tags: list[str]
    timestamp: str = Field(description="RFC 3339, UTC, milliseconds")
    value: float | None = None
    data: dict[str, Any] | None = None


class Page(BaseModel):
    items: list[Document]
    next: str | None = Field(description="pass as after= for the next page; null at the end")


class Session(BaseModel):
    session: str
    host: str | None
    agent: str | None
    tags: list[str]
    first_seen: str | None
    last_seen: str | None
    connected: bool
    ended: str | None
    exit_code: int | None
    signal: str | None


class SessionPage(BaseModel):
    items: list[Session]
    next: str | None


class QueryAnswer(BaseModel):
    prompt: str
    interpreted: dict[str, Any] = Field(description="the structured request it was understood as")
    rows: list[dict[str, Any]]
    notes: list[str] = Field(default_factory=list, description="why rows may be empty")


class AggregateAnswer(BaseModel):
    interpreted: dict[str, Any]
    rows: list[dict[str, Any]]


class Error(BaseModel):
    error: str = Field(description="a stable code: bad_parameter, not_found, unauthorized, ...")
    detail: str
    parameter: str | None = Field(None, description="the parameter or field at fault (422)")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    store: str
    cache: dict[str, Any]
