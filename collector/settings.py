"""The collector's configuration variables (see deltawire.config for the rules)."""

from __future__ import annotations

from deltawire.config import Var, choice, parse_bytes, parse_float, parse_int, parse_list
from deltawire.logs import LOG_VARS

__all__ = ["API_VARS", "COLLECTOR_VARS", "LOG_VARS", "STORE_VARS"]

_S = "collector"

COLLECTOR_VARS: tuple[Var, ...] = (
    Var(
        "COLLECTOR_LISTEN",
        "",
        "Ingest address HOST:PORT. Empty: 127.0.0.1:7700 when no INGEST_TOKENS are set\n"
        "(an open port would accept anyone's data), 0.0.0.0:7700 otherwise.",
        str,
        _S,
    ),
    Var("COLLECTOR_HTTP", "127.0.0.1:8080", "HTTP API address HOST:PORT.", str, _S),
    Var(
        "INGEST_TOKENS",
        "",
        "Comma-separated tokens agents must present in hello. Empty: no auth.",
        parse_list,
        _S,
    ),
    Var("TLS_CERT", "", "PEM certificate file: serve ingest over TLS (with TLS_KEY).", str, _S),
    Var("TLS_KEY", "", "PEM private key file for TLS_CERT.", str, _S),
    Var(
        "MAX_CONNECTIONS",
        "10000",
        "Open ingest connections allowed; more get 'overloaded'.",
        parse_int,
        _S,
    ),
    Var(
        "MAX_FRAME_BYTES",
        "1048576",
        "Longest accepted line (without newline); longer is fatal.",
        parse_bytes,
        _S,
    ),
    Var(
        "IDLE_TIMEOUT",
        "300",
        "Seconds without a complete frame before a connection is closed ('idle').\n"
        "Keep it above the agents' interval x push_every.",
        parse_float,
        _S,
    ),
    Var(
        "MAX_ERRORS",
        "100",
        "Rejected frames tolerated per connection before 'too_many_errors'.",
        parse_int,
        _S,
    ),
    Var(
        "QUEUE_SIZE",
        "16",
        "Capacity of the ingest queue, in chunks of documents (one chunk = what one\n"
        "read produced). A full queue stops the readers: TCP pushes back on agents.",
        parse_int,
        _S,
    ),
    Var("BATCH_MAX_DOCS", "2000", "Flush a write batch at this many documents...", parse_int, _S),
    Var(
        "BATCH_MAX_MS",
        "10",
        "...or this many milliseconds after its first document.",
        parse_float,
        _S,
    ),
    Var(
        "FLOW_HIGH_WATER",
        "0.75",
        "Queue fill ratio above which agents get a 'flow' frame asking them to slow down.",
        parse_float,
        _S,
    ),
    Var(
        "FLOW_LOW_WATER",
        "0.25",
        "Queue fill ratio below which the flow limit is lifted.",
        parse_float,
        _S,
    ),
    Var(
        "FLOW_MIN_INTERVAL",
        "5",
        "The min_interval (seconds) sent in 'flow' frames.",
        parse_float,
        _S,
    ),
    Var(
        "ACK_INTERVAL_MS",
        "50",
        "Coalesce acks per connection to at most one per this period. Each ack\n"
        "costs both ends a wakeup and a send: 50 ms (vs 20) took ~6% less\n"
        "ingest CPU at 100k samples/s with 100 sessions, at the same ack p99.",
        parse_float,
        _S,
    ),
    Var(
        "CAPTURE_DIR", "", "If set, record each connection's inbound bytes to a file here.", str, _S
    ),
    Var(
        "SHUTDOWN_GRACE",
        "10",
        "Seconds to drain and ack on SIGTERM before closing anyway.",
        parse_float,
        _S,
    ),
)

STORE_VARS: tuple[Var, ...] = (
    Var(
        "STORE_URI",
        "sqlite:///./data/deltawire.db",
        "Where documents go: sqlite:///PATH (embedded) or mongodb://HOST:PORT/...",
        str,
        "store",
    ),
    Var("APP_ENV", "local", "MongoDB database name suffix: telemetry_${APP_ENV}.", str, "store"),
    Var(
        "RETENTION_DAYS",
        "0",
        "Delete documents older than this (MongoDB TTL index); 0 keeps all.",
        parse_int,
        "store",
    ),
    Var(
        "MONGO_MAX_POOL_SIZE",
        "32",
        "pymongo connection pool size per collector process.",
        parse_int,
        "store",
    ),
    Var(
        "MONGO_TIMEOUT_MS",
        "5000",
        "pymongo server selection / socket timeout (ms).",
        parse_int,
        "store",
    ),
    Var(
        "STORE_WRITER",
        "process",
        "Who commits batches: process (a writer process of its own, so decoding and\n"
        "storing each get a core; measured ~1.6x the throughput) or thread (a worker\n"
        "thread of the ingest process: one process, one core). make bench measures both.",
        choice("process", "thread"),
        "store",
    ),
    Var(
        "STORE_THREADS",
        "4",
        "HTTP API: store queries that may run at once (worker threads).",
        parse_int,
        "store",
    ),
    Var(
        "REDIS_URI",
        "",
        "Redis for the query cache (redis://127.0.0.1:6379/0). Empty: in-process LRU.",
        str,
        "store",
    ),
    Var(
        "CACHE_TTL",
        "5",
        "Seconds a cached query answer may live (writes also invalidate it).",
        parse_float,
        "store",
    ),
    Var("CACHE_SIZE", "1024", "Entries in the in-process LRU cache.", parse_int, "store"),
    Var("HTTP_WORKERS", "1", "HTTP API worker processes.", parse_int, "store"),
)

#: The HTTP API's own knobs (read by ``python -m deltawire.collector.api``).
API_VARS: tuple[Var, ...] = (
    Var(
        "API_KEYS",
        "",
        "HTTP API keys, KEY:ROLE,... with ROLE read, write or admin. Empty: no keys,\n"
        "every request is admin, and the HTTP port binds 127.0.0.1 only.",
        parse_list,
        "api",
    ),
    Var(
        "RATE_LIMIT",
        "0",
        "HTTP requests/s per key (per address without keys); 0: off.",
        parse_float,
        "api",
    ),
    Var("RATE_BURST", "200", "HTTP requests a key may make at once.", parse_int, "api"),
    Var(
        "QUERY_TIMEOUT",
        "10",
        "Seconds a /query or /aggregate may take before 503 query_timeout.",
        parse_float,
        "api",
    ),
    Var("HEAVY_QUERIES", "2", "/query and /aggregate computations at once.", parse_int, "api"),
    Var(
        "PAGE_BYTES",
        "4MiB",
        "A listing answer stops before this size (its next continues).",
        parse_bytes,
        "api",
    ),
    Var(
        "HEADER_TIMEOUT",
        "10",
        "Seconds a client may take to send a request's headers.",
        parse_float,
        "api",
    ),
)
