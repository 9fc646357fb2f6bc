"""Aggregations over stored documents: the typed query, the planner and engine.

``run_aggregate(store, AggregateQuery(...)) -> list[AggregateRow]`` answers
``GET /aggregate`` and the prompts of ``GET /query``; it reads the stores'
rollup tiers (``deltawire.collector.stores.rollup``) and raw rows only for the
partial edges of the window.
"""

from . import query
from .engine import RollupSource, plan_segments, run_aggregate
from .query import *  # noqa: F403  (the query's names, listed once in query.__all__)

__all__ = ["RollupSource", "plan_segments", "run_aggregate"]
__all__ += query.__all__
