"""The collector's own counters, rendered as Prometheus text for ``GET /stats``."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

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


def _exported(kind: str, name: str, help_: str) -> Any:
    """A ``Stats`` field that ``/stats`` exports as ``deltawire_<name>``."""
    return field(default=0, metadata={"kind": kind, "name": name, "help": help_})


def counter(name: str, help_: str) -> Any:
    return _exported("counter", name, help_)


def gauge(name: str, help_: str) -> Any:
    return _exported("gauge", name, help_)


@dataclass(slots=True)
class Stats:
    """The ingest process's counters; each exported one is declared with its
    help, in the order ``/stats`` lists it."""

    # One exported figure a line: the declarations read as a table.
    # fmt: off
    connections_total: int = counter("connections_total", "Ingest connections accepted.")
    connections_refused: int = counter("connections_refused_total", "Connections refused (overloaded).")
    frames_in: int = counter("frames_in_total", "Frames received.")
    bytes_in: int = counter("bytes_in_total", "Bytes received on ingest connections.")
    documents_queued: int = counter("documents_queued_total", "Documents accepted into the write queue.")
    documents_stored: int = counter("documents_stored_total", "Documents committed by the store.")
    acks_sent: int = counter("acks_sent_total", "Ack frames sent.")
    flow_frames_sent: int = counter("flow_frames_sent_total", "Flow frames sent.")
    store_retries: int = counter("store_retries_total", "Failed store writes retried.")
    store_rejects: int = counter("store_rejects_total", "Documents the store refused for good.")
    connections_open: int = gauge("connections_open", "Open ingest connections.")
    throttled: int = gauge("throttled", "1 while agents are asked to slow down.")
    queue_depth: int = gauge("queue_depth", "Chunks waiting in the write queue.")
    queue_capacity: int = gauge("queue_capacity", "Capacity of the write queue.")
    inflight_docs: int = gauge("inflight_documents", "Documents received but not yet committed.")
    batch_docs_last: int = gauge("batch_documents", "Documents in the last committed batch.")
    batch_seconds_max: float = gauge("batch_seconds_max", "Slowest batch commit so far.")
    # fmt: on
    batches: int = 0  # with batch_seconds_sum: the batch_seconds summary
    batch_seconds_sum: float = 0.0
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
        kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}
        for f in fields(self):
            if "kind" in f.metadata:
                family = kinds[f.metadata["kind"]]
                value = getattr(self, f.name)
                yield family(p + f.metadata["name"], f.metadata["help"], value=value)
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
