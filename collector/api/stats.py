"""Counters of the HTTP API process and the Prometheus text of ``GET /stats``.

The API runs in its own process, so ``/stats`` joins two sources: the ingest
process's counters (Prometheus text it sends about once a second on the control
pipe, kept verbatim in ``IngestStats``) and this process's own (``RequestStats``
and the cache's ``CacheStats``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from .cache import QueryCache

__all__ = ["IngestStats", "RequestStats", "render_stats"]

_WINDOW = 1024  # latencies kept per route for the quantiles
_QUANTILES = (0.5, 0.9, 0.99)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


@dataclass(slots=True)
class IngestStats:
    """The last stats text from the ingest process (replaced whole, so a reader
    on another thread always sees one complete text)."""

    text: str = ""
    updated_at: float | None = None  # time.monotonic() of the last update

    def update(self, text: str) -> None:
        self.text, self.updated_at = text, time.monotonic()


@dataclass(slots=True)
class _RouteLatency:
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    total: float = 0.0
    count: int = 0


class RequestStats:
    """Requests by (route template, method, status) and latency per route."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, _RouteLatency] = {}
        self.store_errors = 0
        self.started = time.time()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # Unknown methods and paths are folded so clients cannot grow the label set.
        if method not in _METHODS:
            method = "OTHER"
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        lat = self.latency.get(route)
        if lat is None:
            lat = self.latency[route] = _RouteLatency()
        lat.recent.append(seconds)
        lat.total += seconds
        lat.count += 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_stats(ingest: IngestStats, requests: RequestStats, cache: QueryCache) -> str:
    """Prometheus text exposition (format 0.0.4) of both processes' counters."""
    out: list[str] = []
    text = ingest.text
    if text:
        out.append(text if text.endswith("\n") else text + "\n")

    def family(name: str, kind: str, help_: str) -> None:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")

    family(
        "deltawire_api_requests_total", "counter", "HTTP API requests by route, method and status."
    )
    for (route, method, status), n in sorted(requests.requests.items()):
        out.append(
            f'deltawire_api_requests_total{{route="{_label(route)}",method="{method}",'
            f'status="{status}"}} {n}\n'
        )
    family(
        "deltawire_api_request_duration_seconds",
        "summary",
        f"HTTP API request latency; quantiles over each route's last {_WINDOW} requests.",
    )
    for route, lat in sorted(requests.latency.items()):
        r = _label(route)
        ordered = sorted(lat.recent)
        for q in _QUANTILES:
            v = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan
            out.append(
                f'deltawire_api_request_duration_seconds{{route="{r}",quantile="{q}"}} {_num(v)}\n'
            )
        out.append(f'deltawire_api_request_duration_seconds_sum{{route="{r}"}} {_num(lat.total)}\n')
        out.append(f'deltawire_api_request_duration_seconds_count{{route="{r}"}} {lat.count}\n')

    cs = cache.stats
    b = f'{{backend="{cache.backend}"}}'
    for name, kind, help_, value in (
        ("deltawire_api_cache_hits_total", "counter", "Query cache hits.", cs.hits),
        ("deltawire_api_cache_misses_total", "counter", "Query cache misses.", cs.misses),
        (
            "deltawire_api_cache_bypassed_total",
            "counter",
            "Lookups answered from the store because the cache was unreachable.",
            cs.bypassed,
        ),
        ("deltawire_api_cache_errors_total", "counter", "Failed cache operations.", cs.errors),
        ("deltawire_api_cache_bumps_total", "counter", "Generation bumps (writes seen).", cs.bumps),
        (
            "deltawire_api_cache_hit_ratio",
            "gauge",
            "hits / (hits + misses + bypassed) since start.",
            cs.hit_ratio,
        ),
        (
            "deltawire_api_cache_up",
            "gauge",
            "1 if the cache backend is reachable.",
            int(cache.healthy()),
        ),
    ):
        family(name, kind, help_)
        out.append(f"{name}{b} {_num(value)}\n")

    family("deltawire_api_store_errors_total", "counter", "Store calls that failed (answered 503).")
    out.append(f"deltawire_api_store_errors_total {requests.store_errors}\n")
    family(
        "deltawire_api_ingest_stats_age_seconds",
        "gauge",
        "Seconds since the ingest process last sent its counters (NaN: never).",
    )
    age = math.nan if ingest.updated_at is None else time.monotonic() - ingest.updated_at
    out.append(f"deltawire_api_ingest_stats_age_seconds {_num(age)}\n")
    family("deltawire_api_start_time_seconds", "gauge", "Start time of the API process (epoch).")
    out.append(f"deltawire_api_start_time_seconds {_num(requests.started)}\n")
    return "".join(out)
