"""Connection readers -> bounded queue -> batch writer -> store -> acks.

Backpressure is the queue: ``submit`` blocks when it is full, so a reader stops
reading and TCP pushes back on its agent. Above a high-water mark every
connection is also told, with a ``flow`` frame, to sample less often; below a
low-water mark the limit is lifted.

Order and durability: one writer commits chunks in arrival order and retries a
failed batch before anything after it, so a connection's frames are stored in
order and an ack is sent only for what the store has committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from protocol import Document

from .stats import Stats
from .stores.base import Store, StoreError, StoreUnavailable

__all__ = ["Committer", "Pipeline", "PipelineConfig"]

log = logging.getLogger("collector.pipeline")


class Committer(Protocol):
    """What the pipeline tells about commits: the connection behind a chunk."""

    def on_commit(self, seq: int) -> None: ...

    def on_store_reject(self, seq: int, reason: str) -> None:
        """The store refused this document for good (it will never be stored)."""


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    queue_size: int = 64
    batch_max_docs: int = 2000
    batch_max_ms: float = 50.0
    high_water: float = 0.75
    low_water: float = 0.25
    flow_min_interval: float = 5.0
    store_threads: int = 4


Chunk = tuple[Committer, list[Document]]


class Pipeline:
    def __init__(
        self,
        store: Store,
        stats: Stats,
        config: PipelineConfig = PipelineConfig(),
        on_flow: Callable[[float], None] | None = None,
        on_commit_batch: Callable[[Sequence[Document]], None] | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.config = config
        self._send, self._receive = trio.open_memory_channel[Chunk](config.queue_size)
        self._limiter = trio.CapacityLimiter(max(1, config.store_threads))
        self._on_flow = on_flow or (lambda _interval: None)
        self._on_commit_batch = on_commit_batch
        self.throttled = False
        self._drained = trio.Event()
        self._closing = False
        stats.queue_capacity = config.queue_size

    # -- the readers' side -------------------------------------------------
    async def submit(self, committer: Committer, docs: list[Document]) -> None:
        """Queue a connection's documents; blocks while the queue is full."""
        self.stats.documents_queued += len(docs)
        self.stats.inflight_docs += len(docs)
        await self._send.send((committer, docs))
        self._check_flow()

    @property
    def fill(self) -> float:
        st = self._send.statistics()
        # Readers blocked in send() count as queued: they hold data too.
        return (st.current_buffer_used + st.tasks_waiting_send) / max(1, st.max_buffer_size)

    def _check_flow(self) -> None:
        fill = self.fill
        self.stats.queue_depth = self._send.statistics().current_buffer_used
        if not self.throttled and fill >= self.config.high_water:
            self.throttled = True
            self.stats.throttled = 1
            log.warning("ingest queue above high water: asking agents to slow down",
                        extra={"fill": round(fill, 2)})  # fmt: skip
            self._on_flow(self.config.flow_min_interval)
        elif self.throttled and fill <= self.config.low_water:
            self.throttled = False
            self.stats.throttled = 0
            log.warning(
                "ingest queue below low water: flow limit lifted", extra={"fill": round(fill, 2)}
            )
            self._on_flow(0.0)

    def close(self) -> None:
        """No more submissions: the writer drains what is queued, then returns."""
        self._closing = True
        self._send.close()

    async def monitor(self, period: float = 0.1) -> None:
        """Re-evaluate flow control periodically: while the store hangs, neither
        the writer nor the (blocked) readers get to do it."""
        while True:
            await trio.sleep(period)
            self._check_flow()

    # -- the writer ----------------------------------------------------------
    async def run(self) -> None:
        """The single writer. Returns once closed and drained."""
        while (batch := await self._next_batch()) is not None:
            await self._write(batch)
        self._drained.set()

    async def _next_batch(self) -> list[Chunk] | None:
        cfg = self.config
        receive = self._receive
        try:
            first = await receive.receive()
        except trio.EndOfChannel:
            return None
        batch = [first]
        ndocs = len(first[1])
        # Gather more for up to batch_max_ms: one commit (one fsync) per batch,
        # not per chunk, is what makes the store fast.
        with trio.move_on_after(cfg.batch_max_ms / 1000):
            while ndocs < cfg.batch_max_docs:
                try:
                    chunk = receive.receive_nowait()
                except trio.WouldBlock:
                    try:
                        chunk = await receive.receive()
                    except trio.EndOfChannel:
                        break
                except trio.EndOfChannel:
                    break
                batch.append(chunk)
                ndocs += len(chunk[1])
        return batch

    async def _write(self, batch: list[Chunk]) -> None:
        docs = [doc for _, chunk_docs in batch for doc in chunk_docs]
        started = time.perf_counter()
        try:
            await self._write_retrying(docs)
        except StoreError as exc:
            # A permanent failure (a value the store cannot represent, ...):
            # find the culprits one by one so one bad document cannot block
            # every agent behind it, and report each to its connection.
            log.error("store refused a batch; isolating the documents it cannot store",
                      extra={"error": repr(exc), "docs": len(docs)})  # fmt: skip
            await self._write_one_by_one(batch)
            self.stats.inflight_docs -= len(docs)
            self._check_flow()
            return
        self.stats.observe_batch(len(docs), time.perf_counter() - started)
        self.stats.inflight_docs -= len(docs)
        for committer, chunk_docs in batch:
            committer.on_commit(chunk_docs[-1].seq)
        if self._on_commit_batch is not None:
            self._on_commit_batch(docs)
        self._check_flow()

    async def _write_retrying(self, docs: list[Document]) -> None:
        """Write until it succeeds; only a permanent ``StoreError`` gets out."""
        delay = 0.05
        outage_logged = False
        while True:
            try:
                # Not cancellable on purpose: a write in flight must finish so
                # that what we ack and what is stored never disagree.
                await trio.to_thread.run_sync(self.store.write_batch, docs, limiter=self._limiter)
                break
            except StoreUnavailable as exc:
                self.stats.store_retries += 1
                if not outage_logged:
                    outage_logged = True
                    log.warning("store unavailable; retrying until it is back",
                                extra={"error": repr(exc), "docs": len(docs)})  # fmt: skip
            except StoreError:
                raise
            except Exception as exc:  # unknown: retried, dropping would lose data
                self.stats.store_retries += 1
                if not outage_logged:
                    outage_logged = True
                    log.exception("store write failed unexpectedly; retrying",
                                  extra={"error": repr(exc)})  # fmt: skip
            self._check_flow()
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)
        if outage_logged:
            log.warning("store writes resumed", extra={"retries": self.stats.store_retries})

    async def _write_one_by_one(self, batch: list[Chunk]) -> None:
        for committer, chunk_docs in batch:
            for doc in chunk_docs:
                try:
                    await self._write_retrying([doc])
                except StoreError as exc:
                    self.stats.store_rejects += 1
                    log.error("document refused by the store",
                              extra={"session": doc.session, "seq": doc.seq, "error": repr(exc)})  # fmt: skip
                    committer.on_store_reject(doc.seq, str(exc)[:200])
                    continue
                self.stats.observe_batch(1, 0.0)
                committer.on_commit(doc.seq)
                if self._on_commit_batch is not None:
                    self._on_commit_batch([doc])
