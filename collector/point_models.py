"""The HTTP body of a metric point as pydantic models (validation and OpenAPI):
the rules of ``point.py`` (the one validated point model), applied by pydantic.

Only the HTTP API imports this module (see point.py for why it is separate).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.functional_validators import BeforeValidator

from .point import (
    DATA_MAX_DEPTH,
    MAX_TAGS,
    MAX_TEXT,
    CheckedFields,
    _number,
    _tags,
    _text,
    check_data,
    parse_time,
)

__all__ = ["PointBody", "PointCreate", "PointPatch"]


# -- the HTTP body, the same rules as pydantic types (for validation and OpenAPI) --------


def _via(check: Any, field: str) -> BeforeValidator:
    return BeforeValidator(lambda v: check(v, field))


Name = Annotated[str, _via(_text, "name"), Field(min_length=1, max_length=MAX_TEXT)]
Host = Annotated[str, _via(_text, "host"), Field(min_length=1, max_length=MAX_TEXT)]
Value = Annotated[
    int | float, _via(_number, "value"), Field(description="a finite number (int64 for integers)")
]
Tags = Annotated[
    list[str],
    BeforeValidator(_tags),
    Field(max_length=MAX_TAGS, description=f"labels, each 1 to {MAX_TEXT} characters"),
]
Timestamp = Annotated[
    float | None,
    BeforeValidator(lambda v: None if v is None else parse_time(v, "timestamp")),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number"},
                {"type": "null"},
            ],
            "description": "RFC 3339 or epoch seconds; default: now",
        }
    ),
]
Data = Annotated[
    dict[str, Any] | None,
    BeforeValidator(check_data),
    Field(description=f"any JSON object, at most {DATA_MAX_DEPTH} levels deep"),
]


class PointBody(BaseModel):
    """A point's writable fields, as an HTTP body (PUT; PATCH results)."""

    # Fields the server assigns are accepted and ignored, so a client may send
    # back what GET gave it.
    model_config = ConfigDict(extra="forbid")

    name: Name
    value: Value | None = None
    tags: Tags = Field(default_factory=list)
    timestamp: Timestamp = None
    host: Host | None = None
    data: Data = None
    id: str | None = Field(default=None, description="ignored (server-assigned)")
    session: str | None = Field(default=None, description="ignored (server-assigned)")
    seq: int | None = Field(default=None, description="ignored (server-assigned)")
    kind: str | None = Field(default=None, description="ignored (server-assigned)")

    def store_fields(self, now: float) -> CheckedFields:
        """The store form (``ts``: the timestamp, or ``now`` when absent),
        validated: this model ran ``check_fields``' rules (and ``now``
        goes through the timestamp's)."""
        return CheckedFields({
            "name": self.name,
            "value": self.value,
            "tags": self.tags,
            "ts": parse_time(now, "ts") if self.timestamp is None else self.timestamp,
            "host": self.host,
            "data": self.data,
        })  # fmt: skip


class PointCreate(PointBody):
    """The body of ``POST /metrics`` and ``PUT /metrics/{id}``: ``value`` is required."""

    value: Value


class PointPatch(BaseModel):
    """A JSON Merge Patch (RFC 7386) of a point's writable fields: given fields
    replace, null removes (``value``, ``host``, ``data`` or a key inside
    ``data``); the result must still be a valid point."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    value: Value | None = None
    tags: Tags | None = None
    timestamp: Timestamp = None
    host: Host | None = None
    data: dict[str, Any] | None = Field(None, description="merged into the document's data")
