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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each name lives. Imported on first use, not with the package: the
#: edit writer process imports a few of its modules (edit_jobs and what it
#: needs), and the whole app with them was ~23 MB of its RSS (59 -> 36 MB
#: once imported).
_HOMES = {
    "ApiConfig": ".app",
    "Deps": ".app",
    "create_app": ".app",
    "LocalCache": ".cache",
    "QueryCache": ".cache",
    "RedisCache": ".cache",
    "make_cache": ".cache",
    "Plan": ".nlquery",
    "PromptError": ".nlquery",
    "parse_prompt": ".nlquery",
    "IngestStats": ".stats",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
