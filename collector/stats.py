"""The collector's own counters, rendered as Prometheus text for ``GET /stats``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Stats"]


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

    def observe_batch(self, docs: int, seconds: float) -> None:
        self.batches += 1
        self.batch_docs_last = docs
        self.documents_stored += docs
        self.batch_seconds_sum += seconds
        self.batch_seconds_max = max(self.batch_seconds_max, seconds)

    def render(self) -> str:
        p = "deltawire_"
        lines = []

        def metric(name: str, kind: str, help_: str, value: float, labels: str = "") -> None:
            lines.append(f"# HELP {p}{name} {help_}")
            lines.append(f"# TYPE {p}{name} {kind}")
            lines.append(f"{p}{name}{labels} {value}")

        metric("connections_open", "gauge", "Open ingest connections.", self.connections_open)
        metric(
            "connections_total", "counter", "Ingest connections accepted.", self.connections_total
        )
        metric("connections_refused_total", "counter", "Connections refused (overloaded).",
               self.connections_refused)  # fmt: skip
        metric("frames_in_total", "counter", "Frames received.", self.frames_in)
        metric("bytes_in_total", "counter", "Bytes received on ingest connections.", self.bytes_in)
        metric("documents_queued_total", "counter", "Documents accepted into the write queue.",
               self.documents_queued)  # fmt: skip
        metric("documents_stored_total", "counter", "Documents committed by the store.",
               self.documents_stored)  # fmt: skip
        metric("acks_sent_total", "counter", "Ack frames sent.", self.acks_sent)
        metric("flow_frames_sent_total", "counter", "Flow frames sent.", self.flow_frames_sent)
        metric("throttled", "gauge", "1 while agents are asked to slow down.", self.throttled)
        metric("queue_depth", "gauge", "Chunks waiting in the write queue.", self.queue_depth)
        metric("queue_capacity", "gauge", "Capacity of the write queue.", self.queue_capacity)
        metric("inflight_documents", "gauge", "Documents received but not yet committed.",
               self.inflight_docs)  # fmt: skip
        metric("store_retries_total", "counter", "Failed store writes retried.", self.store_retries)
        metric("store_rejects_total", "counter", "Documents the store refused for good.",
               self.store_rejects)  # fmt: skip
        metric("batch_documents", "gauge", "Documents in the last committed batch.",
               self.batch_docs_last)  # fmt: skip
        lines.append(f"# HELP {p}batch_seconds Store commit latency per batch.")
        lines.append(f"# TYPE {p}batch_seconds summary")
        lines.append(f"{p}batch_seconds_sum {self.batch_seconds_sum:.6f}")
        lines.append(f"{p}batch_seconds_count {self.batches}")
        metric("batch_seconds_max", "gauge", "Slowest batch commit so far.",
               round(self.batch_seconds_max, 6))  # fmt: skip
        lines.append(f"# HELP {p}errors_total Protocol errors sent, by code.")
        lines.append(f"# TYPE {p}errors_total counter")
        for code, count in sorted(self.errors.items()):
            lines.append(f'{p}errors_total{{code="{code}"}} {count}')
        return "\n".join(lines) + "\n"
