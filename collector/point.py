"""The one validated point model: what a metric point may hold, checked once.

Both stores (``create``/``replace``) and the HTTP API (POST, PUT, PATCH bodies)
validate through this module, so a rule (a name's length, the int64 range, how
deep ``data`` may nest) is written here and nowhere else.

Two faces of the same rules:

- ``check_fields(fields)``: the store form (``name, value, tags, ts, host,
  data``; any subset), returning normalised values or raising ``PointError``;
- ``PointBody`` / ``PointCreate``: pydantic models of the HTTP body (``timestamp``
  instead of ``ts``), whose JSON schema goes into ``/openapi.json``. Their
  validators call the same field checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.functional_validators import BeforeValidator

__all__ = [
    "DATA_MAX_DEPTH",
    "MAX_TAGS",
    "MAX_TEXT",
    "MAX_TS",
    "STORE_FIELDS",
    "PointBody",
    "PointCreate",
    "PointError",
    "PointPatch",
    "check_data",
    "check_fields",
    "parse_time",
]

MAX_TEXT: Final = 256  # longest name/host/tag: a label, not a payload
MAX_TAGS: Final = 64  # tags are copied into every document: keep them few
#: How deep ``data`` may nest, as in a frame (protocol limits): deeper answers
#: 422 on the way in, so nothing stored is too deep to serve back (orjson's
#: output limit is ~254 levels).
DATA_MAX_DEPTH: Final = 64
MAX_TS: Final = 253402300800.0  # 10000-01-01: datetime cannot format beyond
_INT64: Final = 1 << 63
#: The fields a store keeps for a point (the API's ``timestamp`` is ``ts`` there).
STORE_FIELDS: Final = frozenset({"name", "value", "tags", "ts", "host", "data"})


class PointError(ValueError):
    """A field of a point is not acceptable; ``field`` names it."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field, self.detail = field, detail


# -- the rules, one function per field -------------------------------------------------


def _text(value: Any, field: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_TEXT:
        raise PointError(field, f"a string of 1 to {MAX_TEXT} characters")
    return value


def _number(value: Any, field: str) -> int | float:
    if type(value) is int:
        if not -_INT64 <= value < _INT64:
            raise PointError(field, "out of the 64-bit integer range")
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise PointError(field, "must be finite")
        return value
    raise PointError(field, "a number")


def _tags(value: Any) -> list[str]:
    if type(value) not in (list, tuple) or len(value) > MAX_TAGS:
        raise PointError("tags", f"a list of at most {MAX_TAGS} strings")
    for tag in value:
        if type(tag) is not str or not 0 < len(tag) <= MAX_TEXT:
            raise PointError("tags", f"each tag must be a string of 1 to {MAX_TEXT} characters")
    return list(dict.fromkeys(value))  # duplicates say nothing more


def parse_time(value: Any, field: str) -> float:
    """RFC 3339 (naive means UTC) or epoch seconds -> epoch seconds."""
    if type(value) in (int, float):
        ts = float(value)
    elif type(value) is str:
        text = value.strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                hint = " (a '+' in a URL means a space: encode it as %2B)" if " " in text else ""
                raise PointError(
                    field, f"{value[:64]!r} is not an RFC 3339 time or epoch seconds{hint}"
                ) from None
            ts = (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).timestamp()
    else:
        raise PointError(field, "an RFC 3339 string or epoch seconds")
    if not 0 <= ts < MAX_TS:  # also rejects NaN
        raise PointError(field, "out of range (1970 to 9999)")
    return ts


def check_data(
    value: Any, field: str = "data", max_depth: int = DATA_MAX_DEPTH
) -> dict[str, Any] | None:
    """``data``: a JSON object (or null) at most ``DATA_MAX_DEPTH`` deep, with
    finite numbers and integers in the int64 range. Iterative: a hostile depth
    can never hit Python's recursion limit."""
    if value is None:
        return None
    if type(value) is not dict:
        raise PointError(field, "a JSON object (or null)")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise PointError(field, f"nests deeper than {max_depth} levels")
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int or kind is float:
                _number(child, field)
    return value


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The store form of a point, any subset of ``STORE_FIELDS``, validated and
    normalised (tags deduplicated); ``PointError`` names the first bad field.
    ``value``, ``host`` and ``data`` may be None (absent)."""
    unknown = set(fields) - STORE_FIELDS
    if unknown:
        raise PointError(sorted(unknown)[0], f"unknown field; a point has {sorted(STORE_FIELDS)}")
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "name":
            out[key] = _text(value, key)
        elif key == "host":
            out[key] = None if value is None else _text(value, key)
        elif key == "value":
            out[key] = None if value is None else _number(value, key)
        elif key == "tags":
            out[key] = _tags(value)
        elif key == "ts":
            out[key] = parse_time(value, key)
        else:
            out[key] = check_data(value, key)
    return out


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

    def store_fields(self, now: float) -> dict[str, Any]:
        """The store form (``ts``: the timestamp, or ``now`` when absent)."""
        return {
            "name": self.name,
            "value": self.value,
            "tags": self.tags,
            "ts": now if self.timestamp is None else self.timestamp,
            "host": self.host,
            "data": self.data,
        }


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
