"""The collector's HTTP API, served in its own process: ``python -m collector.api``.

``app`` (endpoints), ``cache`` (query cache, Redis or in-process), ``nlquery``
(the ``/query`` prompt parser, with ``nl_lexicon``, ``nl_vocab``, ``nl_plan`` and
``nl_run``), ``control`` (the control pipe from the ingest
process), ``stats`` (``/stats`` text).
"""

from __future__ import annotations

from .app import create_app
from .cache import LocalCache, QueryCache, RedisCache, make_cache
from .nlquery import Plan, PromptError, parse_prompt
from .stats import IngestStats

__all__ = [
    "IngestStats",
    "LocalCache",
    "Plan",
    "PromptError",
    "QueryCache",
    "RedisCache",
    "create_app",
    "make_cache",
    "parse_prompt",
]
