"""The collector's settings: one typed object per process, declared once.

``CollectorSettings`` is what ``collector serve`` runs on; ``ApiSettings`` is
what the HTTP API process reads (``python -m deltawire.collector.api``). Both
are built once, at start-up, by ``deltawire.config.load`` (env file, then the
environment, then flags). Each field's variable, default and help are declared
here and nowhere else; ``.env.sample`` is generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltawire import config
from deltawire.config import Var, setting, variables
from deltawire.logs import LOG_VARS, LogSettings

__all__ = [
    "API_VARS",
    "COLLECTOR_VARS",
    "LOG_VARS",
    "STORE_VARS",
    "ApiLimits",
    "ApiSettings",
    "CollectorSettings",
    "IngestSettings",
    "StoreSettings",
]

#: COLLECTOR_HTTP: read by the ingest process (which starts the API process)
#: and by the API process itself.
_HTTP = ("COLLECTOR_HTTP", "127.0.0.1:8080", "HTTP API address HOST:PORT.", config.parse_hostport)


@dataclass(frozen=True)
class IngestSettings:
    """Ingest: listeners, limits, queue, flow control."""

    listen: str = setting(
        "COLLECTOR_LISTEN",
        "",
        "Ingest address HOST:PORT. Empty: 127.0.0.1:7700 when no INGEST_TOKENS are set\n"
        "(an open port would accept anyone's data), 0.0.0.0:7700 otherwise.",
    )
    http: tuple[str, int] = setting(*_HTTP)
    tokens: tuple[str, ...] = setting(
        "INGEST_TOKENS",
        "",
        "Comma-separated tokens agents must present in hello. Empty: no auth.",
        config.parse_list,
    )
    tls_cert: str = setting(
        "TLS_CERT", "", "PEM certificate file: serve ingest over TLS (with TLS_KEY)."
    )
    tls_key: str = setting("TLS_KEY", "", "PEM private key file for TLS_CERT.")
    max_connections: int = setting(
        "MAX_CONNECTIONS",
        "10000",
        "Open ingest connections allowed; more get 'overloaded'.",
        config.parse_int,
    )
    max_frame_bytes: int = setting(
        "MAX_FRAME_BYTES",
        "1048576",
        "Longest accepted line (without newline); longer is fatal.",
        config.parse_bytes,
    )
    idle_timeout: float = setting(
        "IDLE_TIMEOUT",
        "300",
        "Seconds without a complete frame before a connection is closed ('idle').\n"
        "Keep it above the agents' interval x push_every.",
        config.parse_float,
    )
    max_errors: int = setting(
        "MAX_ERRORS",
        "100",
        "Rejected frames tolerated per connection before 'too_many_errors'.",
        config.parse_int,
    )
    queue_size: int = setting(
        "QUEUE_SIZE",
        "16",
        "Capacity of the ingest queue, in chunks of documents (one chunk = what one\n"
        "read produced). A full queue stops the readers: TCP pushes back on agents.",
        config.parse_int,
    )
    batch_max_docs: int = setting(
        "BATCH_MAX_DOCS", "2000", "Flush a write batch at this many documents...", config.parse_int
    )
    batch_max_ms: float = setting(
        "BATCH_MAX_MS",
        "10",
        "...or this many milliseconds after its first document.",
        config.parse_float,
    )
    flow_high_water: float = setting(
        "FLOW_HIGH_WATER",
        "0.75",
        "Queue fill ratio above which agents get a 'flow' frame asking them to slow down.",
        config.parse_float,
    )
    flow_low_water: float = setting(
        "FLOW_LOW_WATER",
        "0.25",
        "Queue fill ratio below which the flow limit is lifted.",
        config.parse_float,
    )
    flow_min_interval: float = setting(
        "FLOW_MIN_INTERVAL",
        "5",
        "The min_interval (seconds) sent in 'flow' frames.",
        config.parse_float,
    )
    ack_interval_ms: float = setting(
        "ACK_INTERVAL_MS",
        "50",
        "Coalesce acks per connection to at most one per this period. Each ack\n"
        "costs both ends a wakeup and a send: 50 ms (vs 20) took ~6% less\n"
        "ingest CPU at 100k samples/s with 100 sessions, at the same ack p99.",
        config.parse_float,
    )
    compress: bool = setting(
        "INGEST_COMPRESS",
        "true",
        "Accept zstd stream compression when an agent offers it (false: every\n"
        "connection stays plain NDJSON).",
        config.parse_bool,
    )
    capture_dir: str = setting(
        "CAPTURE_DIR", "", "If set, record each connection's inbound lines (decompressed) here."
    )
    shutdown_grace: float = setting(
        "SHUTDOWN_GRACE",
        "10",
        "Seconds to drain and ack on SIGTERM before closing anyway.",
        config.parse_float,
    )


@dataclass(frozen=True)
class StoreSettings:
    """The store, the store writer, the query cache and the HTTP API's threads."""

    store_uri: str = setting(
        "STORE_URI",
        "sqlite:///./data/deltawire.db",
        "Where documents go: sqlite:///PATH (embedded) or mongodb://HOST:PORT/...",
    )
    app_env: str = setting(
        "APP_ENV", "local", "MongoDB database name suffix: telemetry_${APP_ENV}."
    )
    retention_days: int = setting(
        "RETENTION_DAYS",
        "0",
        "Delete documents older than this (MongoDB TTL index); 0 keeps all.",
        config.parse_int,
    )
    rollup_1m_retention_days: float = setting(
        "ROLLUP_1M_RETENTION_DAYS",
        "30",
        "Days the 1-minute rollup tier keeps its buckets (0: forever).\n"
        "Aggregations over older windows read the 1-hour tier. MongoDB: never\n"
        "less than RETENTION_DAYS (0 there keeps the tiers forever too).",
        config.parse_float,
    )
    rollup_1h_retention_days: float = setting(
        "ROLLUP_1H_RETENTION_DAYS",
        "400",
        "Days the 1-hour rollup tier (with its quantile sketches) keeps\n"
        "its buckets (0: forever); longer than the raw documents, as Netdata does.",
        config.parse_float,
    )
    mongo_max_pool_size: int = setting(
        "MONGO_MAX_POOL_SIZE",
        "32",
        "pymongo connection pool size per collector process.",
        config.parse_int,
    )
    mongo_timeout_ms: int = setting(
        "MONGO_TIMEOUT_MS",
        "5000",
        "pymongo server selection / socket timeout (ms).",
        config.parse_int,
    )
    store_writer: str = setting(
        "STORE_WRITER",
        "process",
        "Who commits batches: process (a writer process of its own, so decoding and\n"
        "storing each get a core; measured ~1.6x the throughput) or thread (a worker\n"
        "thread of the ingest process: one process, one core). make bench measures both.",
        config.choice("process", "thread"),
    )
    store_threads: int = setting(
        "STORE_THREADS",
        "4",
        "HTTP API: store queries that may run at once (worker threads).",
        config.parse_int,
    )
    redis_uri: str = setting(
        "REDIS_URI",
        "",
        "Redis for the query cache (redis://127.0.0.1:6379/0). Empty: in-process LRU.",
    )
    cache_ttl: float = setting(
        "CACHE_TTL",
        "5",
        "Seconds a cached query answer may live (writes also invalidate it).",
        config.parse_float,
    )
    cache_size: int = setting(
        "CACHE_SIZE", "1024", "In-process LRU entries (also before Redis).", config.parse_int
    )

    def store_options(self) -> dict[str, Any]:
        """``open_store``'s options for ``store_uri``: the MongoDB store's only
        (the ingest process, its writer and the API process all pass these, so
        they open the same database)."""
        if not self.store_uri.startswith("mongodb"):
            return {"rollup_retention_days": [self.rollup_1m_retention_days,
                                              self.rollup_1h_retention_days]}  # fmt: skip
        return {
            "app_env": self.app_env,
            "retention_days": self.retention_days,
            "max_pool_size": self.mongo_max_pool_size,
            "timeout_ms": self.mongo_timeout_ms,
            "rollup_retention_days": [self.rollup_1m_retention_days,
                                      self.rollup_1h_retention_days],
        }  # fmt: skip


@dataclass(frozen=True)
class CollectorSettings(IngestSettings, StoreSettings, LogSettings):
    """``collector serve``."""


@dataclass(frozen=True)
class ApiLimits:
    """The HTTP API's keys, rate limits and deadlines."""

    api_keys: tuple[str, ...] = setting(
        "API_KEYS",
        "",
        "HTTP API keys, KEY:ROLE,... with ROLE read, write or admin. Empty: no keys,\n"
        "every request is admin, and the HTTP port binds 127.0.0.1 only.",
        config.parse_list,
    )
    rate_limit: float = setting(
        "RATE_LIMIT",
        "0",
        "HTTP requests/s per key (per address without keys); 0: off.",
        config.parse_float,
    )
    rate_burst: int = setting(
        "RATE_BURST", "200", "HTTP requests a key may make at once.", config.parse_int
    )
    query_timeout: float = setting(
        "QUERY_TIMEOUT",
        "10",
        "Seconds a /query or /aggregate may take before 503 query_timeout.",
        config.parse_float,
    )
    heavy_queries: int = setting(
        "HEAVY_QUERIES", "2", "/query and /aggregate computations at once.", config.parse_int
    )
    page_bytes: int = setting(
        "PAGE_BYTES",
        "4MiB",
        "A listing answer stops before this size (its next continues).",
        config.parse_bytes,
    )
    header_timeout: float = setting(
        "HEADER_TIMEOUT",
        "10",
        "Seconds a client may take to send a request's headers.",
        config.parse_float,
    )


@dataclass(frozen=True)
class ApiSettings(StoreSettings, LogSettings, ApiLimits):
    """The HTTP API process."""

    http: tuple[str, int] = setting(*_HTTP)


COLLECTOR_VARS: tuple[Var, ...] = variables(IngestSettings)
STORE_VARS: tuple[Var, ...] = variables(StoreSettings)
API_VARS: tuple[Var, ...] = variables(ApiLimits)
