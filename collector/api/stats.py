"""Counters of the HTTP API process and the Prometheus text of ``GET /stats``.

The API runs in its own process, so ``/stats`` joins two sources: the ingest
process's counters (Prometheus text it sends about once a second on the control
pipe, kept verbatim in ``IngestStats``) and the API's own (``RequestStats``
and the cache's ``CacheStats``, taken together as ``ApiCounters``: with several
API workers, the one answering sums every worker's, peers.py).
"""

from __future__ import annotations

import math
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from deltawire.collector.stats import prometheus_text

from .cache import CacheStats, QueryCache

__all__ = ["ApiCounters", "IngestStats", "RequestStats", "counters_of", "render_stats"]

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


@dataclass(slots=True)
class ApiCounters:
    """One API process's counters, as ``/stats`` shows them: taken at once
    (``counters_of``), and with several API workers summed (``add``) over
    what each answered (peers.py)."""

    requests: dict[tuple[str, str, int], int]
    #: route -> (its last latencies, their total, their count)
    latency: dict[str, tuple[array[float], float, int]]
    store_errors: int
    fast_writes: int
    fast_reads: int
    cache: CacheStats
    cache_backend: str
    cache_up: bool
    edits: int | None  # None: no group commit here
    flushes: int | None
    started: float
    workers: int = 1  # processes summed in

    def add(self, other: ApiCounters) -> None:
        for key, n in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + n
        for route, (recent, total, count) in other.latency.items():
            mine = self.latency.get(route)
            if mine is None:
                self.latency[route] = (recent, total, count)
            else:
                self.latency[route] = (mine[0] + recent, mine[1] + total, mine[2] + count)
        self.store_errors += other.store_errors
        self.fast_writes += other.fast_writes
        self.fast_reads += other.fast_reads
        for f in fields(CacheStats):
            setattr(self.cache, f.name, getattr(self.cache, f.name) + getattr(other.cache, f.name))
        self.cache_up = self.cache_up and other.cache_up
        if other.edits is not None:
            self.edits = (self.edits or 0) + other.edits
            self.flushes = (self.flushes or 0) + (other.flushes or 0)
        self.started = min(self.started, other.started)
        self.workers += other.workers


def counters_of(
    requests: RequestStats, cache: QueryCache, edits: Batched | None = None
) -> ApiCounters:
    """This process's counters now (copies: later requests do not change them)."""
    return ApiCounters(
        requests=dict(requests.requests),
        # float32: a worker's answer to another's /stats stays small (peers.py)
        latency={
            route: (array("f", lat.recent), lat.total, lat.count)
            for route, lat in requests.latency.items()
        },
        store_errors=requests.store_errors,
        fast_writes=requests.fast_writes,
        fast_reads=requests.fast_reads,
        cache=replace(cache.stats),
        cache_backend=cache.backend,
        cache_up=cache.healthy(),
        edits=None if edits is None else edits.edits,
        flushes=None if edits is None else edits.flushes,
        started=requests.started,
    )


def render_stats(ingest: IngestStats, counters: ApiCounters, workers: int = 1) -> str:
    """Prometheus text exposition (format 0.0.4) of both processes' counters:
    the ingest process's text as it came, then the API's own (of ``counters.workers``
    of its ``workers`` processes)."""
    text = ingest.text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + prometheus_text(lambda: _families(ingest, counters, workers))


class Batched(Protocol):
    """The group commit's counters (edits.EditBatcher)."""

    edits: int
    flushes: int


def _families(ingest: IngestStats, c: ApiCounters, workers: int) -> Iterator[Metric]:
    p = "deltawire_api_"
    counts = CounterMetricFamily(p + "requests_total",
                                 "HTTP API requests by route, method and status.",
                                 labels=["route", "method", "status"])  # fmt: skip
    for (route, method, status), n in sorted(c.requests.items()):
        counts.add_metric([route, method, str(status)], n)
    yield counts
    name = p + "request_duration_seconds"
    latency = Metric(name, f"HTTP API request latency; quantiles over each route's last "
                     f"{_WINDOW} requests (in each API worker).", "summary")  # fmt: skip
    for route, (recent, total, count) in sorted(c.latency.items()):
        ordered = sorted(recent)
        for q in _QUANTILES:
            v = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan
            latency.add_sample(name, {"route": route, "quantile": str(q)}, v)
        latency.add_sample(name + "_sum", {"route": route}, total)
        latency.add_sample(name + "_count", {"route": route}, count)
    yield latency

    cs = c.cache
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
         int(c.cache_up)),
    ):  # fmt: skip
        metric = family(p + help_[0], help_[1], labels=["backend"])
        metric.add_metric([c.cache_backend], value)
        yield metric

    if c.edits is not None:  # edits / commits: how well the group commit batches
        yield CounterMetricFamily(p + "edits_total", "Writes (POST/PUT/PATCH/DELETE) that "
                                  "reached the store.", value=c.edits)  # fmt: skip
        yield CounterMetricFamily(p + "edit_commits_total", "Store transactions they took "
                                  "(group commit).", value=c.flushes)  # fmt: skip
    yield CounterMetricFamily(p + "fast_writes_total", "Writes answered by the HTTP server's "
                              "write fast path (also in requests_total).",
                              value=c.fast_writes)  # fmt: skip
    yield CounterMetricFamily(p + "fast_reads_total", "GETs not held by the process's cache "
                              "answered by the HTTP server's fast path (also in "
                              "requests_total).", value=c.fast_reads)  # fmt: skip
    yield CounterMetricFamily(p + "store_errors_total", "Store calls that failed (answered 503).",
                              value=c.store_errors)  # fmt: skip
    age = math.nan if ingest.updated_at is None else time.monotonic() - ingest.updated_at
    yield GaugeMetricFamily(p + "ingest_stats_age_seconds", "Seconds since the ingest process "
                            "last sent its counters (NaN: never).", value=age)  # fmt: skip
    yield GaugeMetricFamily(p + "start_time_seconds", "Start time of the API process (epoch; "
                            "the earliest of its workers').", value=c.started)  # fmt: skip
    yield GaugeMetricFamily(p + "workers", "API worker processes configured.", value=workers)
    yield GaugeMetricFamily(p + "workers_counted", "API workers whose counters this answer "
                            "sums (those that answered within 0.5 s).", value=c.workers)  # fmt: skip
