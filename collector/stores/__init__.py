"""Stores: where the collector keeps documents and sessions.

``open_store`` picks the implementation from the URI scheme. It only builds
the object (no I/O), so the caller decides when and how often to call
``open()``, e.g. retrying with backoff while the database is unreachable.
"""

from __future__ import annotations

from typing import Any, Final

from deltawire.formats import redact_uri

from .base import (
    API_SESSION,
    STORE_BACKOFF,
    AggQuery,
    DocumentRows,
    MetricQuery,
    Row,
    SessionQuery,
    Store,
    StoreError,
    StoreUnavailable,
    decode_cursor,
    encode_cursor,
)

__all__ = [
    "API_SESSION",
    "STORE_BACKOFF",
    "AggQuery",
    "DocumentRows",
    "MetricQuery",
    "Row",
    "SessionQuery",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "decode_cursor",
    "encode_cursor",
    "open_store",
]

#: Options of the MongoDB store that have no meaning for SQLite. The collector
#: passes its whole store configuration whatever the backend, so these are
#: dropped for SQLite rather than rejected.
_MONGO_ONLY_OPTIONS: Final = frozenset({"app_env", "max_pool_size", "timeout_ms"})


def open_store(uri: str, **options: Any) -> Store:
    """The store for ``uri``, not yet opened.

    ``sqlite:///PATH`` -> SqliteStore; ``mongodb://`` and ``mongodb+srv://`` ->
    MongoStore with ``options`` (app_env, retention_days, max_pool_size,
    timeout_ms). ValueError for any other scheme or an option the backend
    does not support.
    """
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        unknown = set(options) - _MONGO_ONLY_OPTIONS - {"retention_days", "rollup_retention_days"}
        if unknown:
            raise ValueError(f"unknown option(s) for the sqlite store: {sorted(unknown)}")
        if options.get("retention_days"):
            # Silently keeping everything would surprise whoever set it.
            raise ValueError(
                "RETENTION_DAYS is only supported by the MongoDB store; set it to 0 for sqlite"
            )
        days = options.get("rollup_retention_days")
        return SqliteStore(uri) if days is None else SqliteStore(uri, rollup_retention_days=days)
    if scheme in ("mongodb", "mongodb+srv"):
        # Imported here so that pymongo is only loaded when it is used.
        from .mongo import MongoStore

        return MongoStore(uri, **options)
    raise ValueError(
        f"unsupported store URI {redact_uri(uri)!r}: expected sqlite:///PATH, mongodb://… or "
        "mongodb+srv://…"
    )
