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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from protocol import Document

from .stats import Stats
from .stores.base import Store
from .writer import BatchResult, BatchWriter, ThreadWriter, Waiter

__all__ = ["Committer", "Pipeline", "PipelineConfig"]

log = logging.getLogger("collector.pipeline")


class Committer(Protocol):
    """What the pipeline tells about commits: the connection behind a chunk."""

    def on_commit(self, seq: int) -> None: ...

    def on_store_reject(self, seq: int, reason: str) -> None:
        """The store refused this document for good (it will never be stored)."""


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    queue_size: int = 16
    batch_max_docs: int = 2000
    batch_max_ms: float = 10.0
    high_water: float = 0.75
    low_water: float = 0.25
    flow_min_interval: float = 5.0


Chunk = tuple[Committer, list[Document]]


class Pipeline:
    def __init__(
        self,
        store: Store,
        stats: Stats,
        config: PipelineConfig = PipelineConfig(),
        on_flow: Callable[[float], None] | None = None,
        on_commit_batch: Callable[[Sequence[Document]], None] | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.writer: BatchWriter = writer if writer is not None else ThreadWriter(store)
        self.stats = stats
        self.config = config
        self._send, self._receive = trio.open_memory_channel[Chunk](config.queue_size)
        self._on_flow = on_flow or (lambda _interval: None)
        self._on_commit_batch = on_commit_batch
        self.throttled = False
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
        self._send.close()

    async def monitor(self, period: float = 0.1) -> None:
        """Re-evaluate flow control periodically: while the store hangs, neither
        the writer nor the (blocked) readers get to do it."""
        while True:
            await trio.sleep(period)
            self._check_flow()

    # -- the writer ----------------------------------------------------------
    async def run(self) -> None:
        """The writer. Returns once closed and drained.

        Three stages, so the store never waits for us: while one batch is
        being committed the next is already handed to the writer and a third
        is being gathered (which frees the queue, so readers keep reading).
        Results are taken in order, so acks follow the commit order.
        """
        send_batch, receive_batch = trio.open_memory_channel[list[Chunk]](0)
        send_pending, receive_pending = trio.open_memory_channel[tuple[list[Chunk], Waiter]](1)

        async def gather() -> None:
            async with send_batch:
                while (batch := await self._next_batch()) is not None:
                    await send_batch.send(batch)

        async def submit() -> None:
            async with receive_batch, send_pending:
                async for batch in receive_batch:
                    waiter = await self.writer.submit([d for _, ds in batch for d in ds])
                    await send_pending.send((batch, waiter))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(gather)
            nursery.start_soon(submit)
            async with receive_pending:
                async for batch, waiter in receive_pending:
                    await self._complete(batch, await waiter())

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

    async def _complete(self, batch: list[Chunk], result: BatchResult) -> None:
        docs = [doc for _, chunk_docs in batch for doc in chunk_docs]
        self.stats.store_retries += result.retries
        self.stats.inflight_docs -= len(docs)
        rejected = {i for i, _ in result.rejected}
        self.stats.observe_batch(len(docs) - len(rejected), result.seconds)
        if rejected:
            self.stats.store_rejects += len(rejected)
            reasons = dict(result.rejected)
            index = 0
            for committer, chunk_docs in batch:
                for doc in chunk_docs:
                    if index in rejected:
                        committer.on_store_reject(doc.seq, reasons[index])
                    else:
                        committer.on_commit(doc.seq)
                    index += 1
        else:
            for committer, chunk_docs in batch:
                committer.on_commit(chunk_docs[-1].seq)
        if self._on_commit_batch is not None:
            self._on_commit_batch(docs)
        self._check_flow()
