"""The collector's HTTP API, served in its own process: ``python -m deltawire.collector.api``.

``app`` (assembles the routes), ``routes/`` (one module per resource, each
taking ``deps.Deps``), ``spec`` (the OpenAPI document from the code's types),
``params``/``body`` (validation), ``auth`` (keys, roles, rate limits), ``hub``
(``/stream``), ``http`` (the server's own edges as JSON), ``cache`` (query
cache, Redis or in-process), ``nlquery`` (the ``/query`` prompt parser,
with ``nl_lexicon``, ``nl_vocab``, ``nl_plan`` and ``nl_run``),
``control`` (the control pipe from the ingest process), ``stats``.
"""

from __future__ import annotations

from .app import ApiConfig, Deps, create_app
from .cache import LocalCache, QueryCache, RedisCache, make_cache
from .nlquery import Plan, PromptError, parse_prompt
from .stats import IngestStats

__all__ = [
    "ApiConfig",
    "Deps",
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
