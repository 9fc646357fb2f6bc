"""The collector's own counters, rendered as Prometheus text for ``GET /stats``."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# prometheus_client is imported where text is written, not here: the ingest
# process imports this module at every start and renders /stats rarely (its
# import costs ~0.05 s of CPU).
if TYPE_CHECKING:
    from prometheus_client.core import HistogramMetricFamily, Metric

__all__ = ["ACK_LATENCY_BUCKETS", "Histogram", "Stats", "prometheus_text"]

#: Upper bounds (seconds) of the ack-latency buckets: acks are coalesced every
#: ack_interval (50 ms) behind a store commit, so the interesting range is a
#: few ms to a few hundred, with a tail for a stalled store.
ACK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Histogram:
    """A Prometheus histogram: counts per upper bound (the last is +Inf)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

    def family(self, name: str, help_: str) -> HistogramMetricFamily:
        from prometheus_client.core import HistogramMetricFamily

        cumulative, buckets = 0, []
        for le, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += n
            buckets.append((le, cumulative))
        return HistogramMetricFamily(name, help_, buckets=buckets, sum_value=self.total)


@dataclass(slots=True)
class Stats:
    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    documents_queued: int = 0
    documents_stored: int = 0
    batches: int = 0
    batch_docs_last: int = 0
    batch_seconds_sum: float = 0.0
    batch_seconds_max: float = 0.0
    store_retries: int = 0
    store_rejects: int = 0
    acks_sent: int = 0
    flow_frames_sent: int = 0
    throttled: int = 0
    queue_depth: int = 0
    queue_capacity: int = 0
    inflight_docs: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: Seconds from a frame's receipt to the ack that covers it, per frame.
    ack_latency: Histogram = field(default_factory=lambda: Histogram(ACK_LATENCY_BUCKETS))

    def observe_batch(self, docs: int, seconds: float) -> None:
        self.batches += 1
        self.batch_docs_last = docs
        self.documents_stored += docs
        self.batch_seconds_sum += seconds
        self.batch_seconds_max = max(self.batch_seconds_max, seconds)

    def render(self) -> str:
        return prometheus_text(self._families)

    def _families(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        p = "deltawire_"
        counter, gauge = CounterMetricFamily, GaugeMetricFamily
        families: tuple[tuple[type[Metric], str, str, float], ...] = (
            (counter, "connections_total", "Ingest connections accepted.", self.connections_total),
            (counter, "connections_refused_total", "Connections refused (overloaded).",
             self.connections_refused),
            (counter, "frames_in_total", "Frames received.", self.frames_in),
            (counter, "bytes_in_total", "Bytes received on ingest connections.", self.bytes_in),
            (counter, "documents_queued_total", "Documents accepted into the write queue.",
             self.documents_queued),
            (counter, "documents_stored_total", "Documents committed by the store.",
             self.documents_stored),
            (counter, "acks_sent_total", "Ack frames sent.", self.acks_sent),
            (counter, "flow_frames_sent_total", "Flow frames sent.", self.flow_frames_sent),
            (counter, "store_retries_total", "Failed store writes retried.", self.store_retries),
            (counter, "store_rejects_total", "Documents the store refused for good.",
             self.store_rejects),
            (gauge, "connections_open", "Open ingest connections.", self.connections_open),
            (gauge, "throttled", "1 while agents are asked to slow down.", self.throttled),
            (gauge, "queue_depth", "Chunks waiting in the write queue.", self.queue_depth),
            (gauge, "queue_capacity", "Capacity of the write queue.", self.queue_capacity),
            (gauge, "inflight_documents", "Documents received but not yet committed.",
             self.inflight_docs),
            (gauge, "batch_documents", "Documents in the last committed batch.",
             self.batch_docs_last),
            (gauge, "batch_seconds_max", "Slowest batch commit so far.", self.batch_seconds_max),
        )  # fmt: skip
        for family, name, help_, value in families:
            yield family(p + name, help_, value=value)  # type: ignore[call-arg]
        yield SummaryMetricFamily(p + "batch_seconds", "Store commit latency per batch.",
                                  count_value=self.batches, sum_value=self.batch_seconds_sum)  # fmt: skip
        yield self.ack_latency.family(
            p + "ack_latency_seconds", "Seconds from a frame's receipt to the ack covering it."
        )
        errors = CounterMetricFamily(p + "errors_total", "Protocol errors sent, by code.",
                                     labels=["code"])  # fmt: skip
        for code, count in sorted(self.errors.items()):
            errors.add_metric([code], count)
        yield errors


def prometheus_text(families: Callable[[], Iterable[Metric]]) -> str:
    """The Prometheus text exposition of what ``families`` yields, written by
    prometheus_client (the ingest process's ``/stats`` part and the API's own)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    class _Families(Collector):
        def collect(self) -> Iterable[Metric]:
            return families()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families())
    return generate_latest(registry).decode()
