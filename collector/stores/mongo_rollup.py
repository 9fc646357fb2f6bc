"""Rollup reads of the MongoDB store (see ``rollup.py`` for the model).

Raw points come from ``find`` with the filters of ``GET /metrics`` and a
projection of the one field asked for; values are checked here (numbers only,
no bools), as ``leaves`` does for the tiers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection

from .base import MetricQuery
from .rollup import DOCS, RAW, Filters, RawPoint, RollupData, RollupRequest, SeriesKey

__all__ = ["read_raw"]

_NUMBERS = (int, float)


def _within(f: Filters, lo: float | None, hi: float | None) -> MetricQuery:
    """``f``'s filters over ``[lo, hi)``."""
    return MetricQuery(f.session, f.name, f.kind, f.host, f.tags, ts_from=lo, ts_to=hi)


def _value_at(doc: dict[str, Any], path: str) -> Any:
    if path == DOCS:
        return 1
    if path == "value":
        return doc.get("value")
    node: Any = doc.get("data")
    for key in path.split("."):
        if type(node) is not dict:
            return None
        node = node.get(key)
    return node


def read_raw(
    docs: Collection[dict[str, Any]],
    req: RollupRequest,
    timeout_ms: int,
    match: Callable[[MetricQuery], dict[str, Any]],
    data_field: Callable[[str], str],
) -> RollupData:
    """Every segment from the raw documents (this store keeps no tiers yet).
    ``match`` and ``data_field`` are mongo.py's filter and path builders
    (handed in: importing that module would make an import cycle)."""
    points: list[RawPoint] = []
    projection: dict[str, Any] = {f: 1 for f in ("session", "kind", "name", "host", "tags", "ts")}
    if req.path == "value":
        projection["value"] = 1
    elif req.path != DOCS:
        projection[data_field(req.path)] = 1
    cache: dict[tuple[Any, ...], SeriesKey] = {}
    for seg in req.segments:
        if seg.tier != RAW:
            raise ValueError("the MongoDB store keeps no rollup tiers")
        where = match(_within(req.where, seg.lo, seg.hi))
        cursor = docs.find(where, projection, max_time_ms=timeout_ms)
        for doc in cursor:
            value = _value_at(doc, req.path)
            if type(value) not in _NUMBERS:
                continue
            tags = tuple(doc.get("tags") or ())
            skey = (doc["session"], doc["kind"], doc["name"], doc.get("host"), tags)
            series = cache.get(skey)
            if series is None:
                cache[skey] = series = SeriesKey(*skey, req.path)
            points.append(RawPoint(series, int(doc["ts"]) / 1000, str(doc["_id"]), value))
    return RollupData([], points)
