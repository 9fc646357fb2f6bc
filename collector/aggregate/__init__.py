"""Aggregations over stored documents: the typed query, the planner and engine.

``run_aggregate(store, AggregateQuery(...)) -> list[AggregateRow]`` answers
``GET /aggregate`` and the prompts of ``GET /query``; it reads the stores'
rollup tiers (``deltawire.collector.stores.rollup``) and raw rows only for the
partial edges of the window.
"""

from .engine import RollupSource, plan_segments, run_aggregate
from .query import (
    FNS,
    GROUPS,
    QUANTILES,
    AggregateError,
    AggregateQuery,
    AggregateRow,
    Fn,
    Group,
    Order,
    QueryTooHeavy,
    Threshold,
    parse_bucket,
    parse_field,
    parse_where,
)

__all__ = [
    "FNS",
    "GROUPS",
    "QUANTILES",
    "AggregateError",
    "AggregateQuery",
    "AggregateRow",
    "Fn",
    "Group",
    "Order",
    "QueryTooHeavy",
    "RollupSource",
    "Threshold",
    "parse_bucket",
    "parse_field",
    "parse_where",
    "plan_segments",
    "run_aggregate",
]
