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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from deltawire.collector.stats import prometheus_text

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
        self.fast_writes = 0  # answered by the HTTP write fast path (fast.py)
        self.fast_reads = 0  # GETs the cache missed, answered by the fast path (fast.py)
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


def render_stats(
    ingest: IngestStats, requests: RequestStats, cache: QueryCache, edits: Batched | None = None
) -> str:
    """Prometheus text exposition (format 0.0.4) of both processes' counters:
    the ingest process's text as it came, then this process's own."""
    text = ingest.text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + prometheus_text(lambda: _families(ingest, requests, cache, edits))


class Batched(Protocol):
    """The group commit's counters (edits.EditBatcher)."""

    edits: int
    flushes: int


def _families(
    ingest: IngestStats, requests: RequestStats, cache: QueryCache, edits: Batched | None
) -> Iterator[Metric]:
    p = "deltawire_api_"
    counts = CounterMetricFamily(p + "requests_total",
                                 "HTTP API requests by route, method and status.",
                                 labels=["route", "method", "status"])  # fmt: skip
    for (route, method, status), n in sorted(requests.requests.items()):
        counts.add_metric([route, method, str(status)], n)
    yield counts
    name = p + "request_duration_seconds"
    latency = Metric(name, f"HTTP API request latency; quantiles over each route's last "
                     f"{_WINDOW} requests.", "summary")  # fmt: skip
    for route, lat in sorted(requests.latency.items()):
        ordered = sorted(lat.recent)
        for q in _QUANTILES:
            v = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan
            latency.add_sample(name, {"route": route, "quantile": str(q)}, v)
        latency.add_sample(name + "_sum", {"route": route}, lat.total)
        latency.add_sample(name + "_count", {"route": route}, lat.count)
    yield latency

    cs = cache.stats
    for family, help_, value in (
        (CounterMetricFamily, ("cache_hits_total", "Query cache hits."), cs.hits),
        (CounterMetricFamily, ("cache_misses_total", "Query cache misses."), cs.misses),
        (CounterMetricFamily, ("cache_near_hits_total", "Hits answered by the in-process near "
                               "cache in front of Redis (also in cache_hits_total)."), cs.near_hits),
        (CounterMetricFamily, ("cache_bypassed_total", "Lookups answered from the store "
                               "because the cache was unreachable."), cs.bypassed),
        (CounterMetricFamily, ("cache_errors_total", "Failed cache operations."), cs.errors),
        (CounterMetricFamily, ("cache_bumps_total", "Generation bumps (writes seen)."), cs.bumps),
        (GaugeMetricFamily, ("cache_hit_ratio", "hits / (hits + misses + bypassed) since start."),
         cs.hit_ratio),
        (GaugeMetricFamily, ("cache_up", "1 if the cache backend is reachable."),
         int(cache.healthy())),
    ):  # fmt: skip
        metric = family(p + help_[0], help_[1], labels=["backend"])
        metric.add_metric([cache.backend], value)
        yield metric

    if edits is not None:  # edits / commits: how well the group commit batches
        yield CounterMetricFamily(p + "edits_total", "Writes (POST/PUT/PATCH/DELETE) that "
                                  "reached the store.", value=edits.edits)  # fmt: skip
        yield CounterMetricFamily(p + "edit_commits_total", "Store transactions they took "
                                  "(group commit).", value=edits.flushes)  # fmt: skip
    yield CounterMetricFamily(p + "fast_writes_total", "Writes answered by the HTTP server's "
                              "write fast path (also in requests_total).",
                              value=requests.fast_writes)  # fmt: skip
    yield CounterMetricFamily(p + "fast_reads_total", "GETs not held by the process's cache "
                              "answered by the HTTP server's fast path (also in "
                              "requests_total).", value=requests.fast_reads)  # fmt: skip
    yield CounterMetricFamily(p + "store_errors_total", "Store calls that failed (answered 503).",
                              value=requests.store_errors)  # fmt: skip
    age = math.nan if ingest.updated_at is None else time.monotonic() - ingest.updated_at
    yield GaugeMetricFamily(p + "ingest_stats_age_seconds", "Seconds since the ingest process "
                            "last sent its counters (NaN: never).", value=age)  # fmt: skip
    yield GaugeMetricFamily(p + "start_time_seconds", "Start time of the API process (epoch).",
                            value=requests.started)  # fmt: skip
