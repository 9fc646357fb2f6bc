"""The one validated point model: what a metric point may hold, checked once.

Both stores (``create``/``replace``) and the HTTP API (POST, PUT, PATCH bodies)
validate through this module, so a rule (a name's length, the int64 range, how
deep ``data`` may nest) is written here and nowhere else.

Two faces of the same rules:

- ``check_fields(fields)``: the store form (``name, value, tags, ts, host,
  data``; any subset), returning normalised values or raising ``PointError``;
- ``PointBody`` / ``PointCreate`` / ``PointPatch`` (``point_models.py``): pydantic
  models of the HTTP body (``timestamp`` instead of ``ts``), whose JSON schema
  goes into ``/openapi.json``. Their validators call the same field checks.

The models live in their own module because only the HTTP API needs them: the
ingest, writer and folder processes import this one through the stores, and
importing pydantic and building the models cost each of them ~0.1 s of CPU at
every start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "DATA_MAX_DEPTH",
    "MAX_TAGS",
    "MAX_TEXT",
    "MAX_TS",
    "STORE_FIELDS",
    "CheckedFields",
    "PointError",
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


class CheckedFields(dict[str, Any]):
    """Store fields these rules have validated and normalised already: what
    the point models' ``store_fields`` return (their validators are the same
    field checks). ``check_fields`` passes them through: checking a PATCH's
    result twice (its data walked again, each field's rule run again) was
    ~5% of the edit writer's CPU per edit. Made only from a validated model."""

    __slots__ = ()


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The store form of a point, any subset of ``STORE_FIELDS``, validated and
    normalised (tags deduplicated); ``PointError`` names the first bad field.
    ``value``, ``host`` and ``data`` may be None (absent). ``CheckedFields``
    are that already, and returned as they are."""
    if type(fields) is CheckedFields:
        return fields
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
