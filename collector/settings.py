"""The collector's settings: one typed object per process, declared once.

``CollectorSettings`` is what ``collector serve`` runs on; ``ApiSettings`` is
what the HTTP API process reads (``python -m deltawire.collector.api``). Both
are built once, at start-up, by ``deltawire.config.load`` (env file, then the
environment, then flags). Each field's variable, default and help are declared
here and nowhere else; ``.env.sample`` is generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from deltawire.config import (
    Var,
    choice,
    parse_auto_count,
    parse_bool,
    parse_bytes,
    parse_float,
    parse_hostport,
    parse_int,
    parse_list,
    setting,
    variables,
)
from deltawire.logs import LOG_VARS, LogSettings

__all__ = [
    "API_VARS",
    "COLLECTOR_VARS",
    "LOG_VARS",
    "STORE_VARS",
    "ApiSettings",
    "CollectorSettings",
    "IngestSettings",
    "StoreSettings",
]

#: A comma-separated variable, parsed (``parse_list``).
Words: TypeAlias = tuple[str, ...]

#: COLLECTOR_HTTP: read by the ingest process (which starts the API process)
#: and by the API process itself.
_HTTP = ("COLLECTOR_HTTP", "127.0.0.1:8080", "HTTP API address HOST:PORT.", parse_hostport)


@dataclass(frozen=True)
class IngestSettings:
    """Ingest: listeners, limits, queue, flow control."""

    # One variable a line: the declarations read as a table.
    # fmt: off
    listen: str = setting("COLLECTOR_LISTEN", "", "Ingest address HOST:PORT. Empty: 127.0.0.1:7700 when no INGEST_TOKENS are set\n(an open port would accept anyone's data), 0.0.0.0:7700 otherwise.", str)
    http: tuple[str, int] = setting(*_HTTP)
    api_workers: int = setting("API_WORKERS", "auto", "HTTP API processes sharing COLLECTOR_HTTP (SO_REUSEPORT: the kernel spreads connections).\nauto: one a core, at most 4, on Linux; 1 elsewhere.", parse_auto_count)
    tokens: Words = setting("INGEST_TOKENS", "", "Comma-separated tokens agents must present in hello. Empty: no auth.", parse_list)
    tls_cert: str = setting("TLS_CERT", "", "PEM certificate file: serve ingest over TLS (with TLS_KEY).", str)
    tls_key: str = setting("TLS_KEY", "", "PEM private key file for TLS_CERT.", str)
    max_connections: int = setting("MAX_CONNECTIONS", "10000", "Open ingest connections allowed; more get 'overloaded'.", parse_int)
    max_frame_bytes: int = setting("MAX_FRAME_BYTES", "1048576", "Longest accepted line (without newline); longer is fatal.", parse_bytes)
    idle_timeout: float = setting("IDLE_TIMEOUT", "300", "Seconds without a complete frame before a connection is closed ('idle').\nKeep it above the agents' interval x push_every.", parse_float)
    max_errors: int = setting("MAX_ERRORS", "100", "Rejected frames tolerated per connection before 'too_many_errors'.", parse_int)
    queue_size: int = setting("QUEUE_SIZE", "16", "Capacity of the ingest queue, in chunks of documents (one chunk = what one\nread produced). A full queue stops the readers: TCP pushes back on agents.", parse_int)
    batch_max_docs: int = setting("BATCH_MAX_DOCS", "2000", "Flush a write batch at this many documents...", parse_int)
    batch_max_ms: float = setting("BATCH_MAX_MS", "10", "...or this many milliseconds after its first document.", parse_float)
    flow_high_water: float = setting("FLOW_HIGH_WATER", "0.75", "Queue fill ratio above which agents get a 'flow' frame asking them to slow down.", parse_float)
    flow_low_water: float = setting("FLOW_LOW_WATER", "0.25", "Queue fill ratio below which the flow limit is lifted.", parse_float)
    flow_min_interval: float = setting("FLOW_MIN_INTERVAL", "5", "The min_interval (seconds) sent in 'flow' frames.", parse_float)
    ack_interval_ms: float = setting("ACK_INTERVAL_MS", "50", "Coalesce acks per connection to at most one per this period. Each ack\ncosts both ends a wakeup and a send: 50 ms (vs 20) took ~6% less\ningest CPU at 100k samples/s with 100 sessions, at the same ack p99.", parse_float)
    compress: bool = setting("INGEST_COMPRESS", "true", "Accept zstd stream compression when an agent offers it (false: every\nconnection stays plain NDJSON).", parse_bool)
    capture_dir: str = setting("CAPTURE_DIR", "", "If set, record each connection's inbound lines (decompressed) here.", str)
    shutdown_grace: float = setting("SHUTDOWN_GRACE", "10", "Seconds to drain and ack on SIGTERM before closing anyway.", parse_float)
    # fmt: on


@dataclass(frozen=True)
class StoreSettings:
    """The store, the store writer, the query cache and the HTTP API's threads."""

    # One variable a line: the declarations read as a table.
    # fmt: off
    store_uri: str = setting("STORE_URI", "sqlite:///./data/deltawire.db", "Where documents go: sqlite:///PATH (embedded) or mongodb://HOST:PORT/...", str)
    app_env: str = setting("APP_ENV", "local", "MongoDB database name suffix: telemetry_${APP_ENV}.", str)
    retention_days: int = setting("RETENTION_DAYS", "0", "Delete documents older than this (MongoDB TTL index); 0 keeps all.", parse_int)
    rollup_1m_retention_days: float = setting("ROLLUP_1M_RETENTION_DAYS", "30", "Days the 1-minute rollup tier keeps its buckets (0: forever).\nAggregations over older windows read the 1-hour tier. MongoDB: never\nless than RETENTION_DAYS (0 there keeps the tiers forever too).", parse_float)
    rollup_1h_retention_days: float = setting("ROLLUP_1H_RETENTION_DAYS", "400", "Days the 1-hour rollup tier (with its quantile sketches) keeps\nits buckets (0: forever); longer than the raw documents, as Netdata does.", parse_float)
    mongo_max_pool_size: int = setting("MONGO_MAX_POOL_SIZE", "32", "pymongo connection pool size per collector process.", parse_int)
    mongo_timeout_ms: int = setting("MONGO_TIMEOUT_MS", "5000", "pymongo server selection / socket timeout (ms).", parse_int)
    store_writer: str = setting("STORE_WRITER", "process", "Who commits batches: process (a writer process of its own, so decoding and\nstoring each get a core; measured ~1.6x the throughput) or thread (a worker\nthread of the ingest process: one process, one core). make bench measures both.", choice('process', 'thread'))
    store_threads: int = setting("STORE_THREADS", "auto", "HTTP API: store reads that may run at once in each API worker (threads). auto on SQLite: the\nworker's share of the cores + 1 (its reads are CPU work: more threads only queue for the cores), 4 a core on MongoDB (they wait on the network).", parse_auto_count)
    redis_uri: str = setting("REDIS_URI", "", "Redis for the query cache (redis://127.0.0.1:6379/0). Empty: in-process LRU.", str)
    cache_ttl: float = setting("CACHE_TTL", "5", "Seconds a cached query answer may live (writes also invalidate it).", parse_float)
    cache_size: int = setting("CACHE_SIZE", "1024", "In-process LRU entries (also before Redis).", parse_int)
    # fmt: on

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
class ApiSettings(StoreSettings, LogSettings):
    """The HTTP API process: the store's settings, its address, and its keys,
    rate limits and deadlines."""

    # One variable a line: the declarations read as a table.
    # fmt: off
    api_keys: Words = setting("API_KEYS", "", "HTTP API keys, KEY:ROLE,... with ROLE read, write or admin. Empty: no keys,\nevery request is admin, and the HTTP port binds 127.0.0.1 only.", parse_list)
    rate_limit: float = setting("RATE_LIMIT", "0", "HTTP requests/s per key (per address without keys); 0: off.", parse_float)
    rate_burst: int = setting("RATE_BURST", "200", "HTTP requests a key may make at once.", parse_int)
    query_timeout: float = setting("QUERY_TIMEOUT", "10", "Seconds a /query or /aggregate may take before 503 query_timeout.", parse_float)
    heavy_queries: int = setting("HEAVY_QUERIES", "2", "/query and /aggregate computations at once.", parse_int)
    page_bytes: int = setting("PAGE_BYTES", "4MiB", "A listing answer stops before this size (its next continues).", parse_bytes)
    header_timeout: float = setting("HEADER_TIMEOUT", "10", "Seconds a client may take to send a request's headers.", parse_float)
    http: tuple[str, int] = setting(*_HTTP)
    # fmt: on


COLLECTOR_VARS: tuple[Var, ...] = variables(IngestSettings)
STORE_VARS: tuple[Var, ...] = variables(StoreSettings)
#: The API's own variables (its address is ingest's COLLECTOR_HTTP too).
API_VARS: tuple[Var, ...] = tuple(
    var for var in variables(ApiSettings) if var not in {*COLLECTOR_VARS, *STORE_VARS, *LOG_VARS}
)
