"""Connection readers -> bounded queue -> batch writer -> store -> acks.

Backpressure is the queue: ``submit`` blocks when it is full, so a reader stops
reading and TCP pushes back on its agent. Above a high-water mark every
connection is also told, with a ``flow`` frame, to sample less often; below a
low-water mark the limit is lifted.

Order and durability: one writer commits chunks in arrival order and retries a
failed batch before anything after it, so a connection's frames are stored in
order and an ack is sent only for what the store has committed.

Documents arrive already built as the writer's ``Item``s (``BatchWriter.make_item``
is the connections' document factory): named tuples of what the pipeline
reads (session, seq, name) and what the writer commits (for the process
writer, the store's row). Encoding happens while a document's data is still
in the CPU's caches, and the queue holds compact packed rows rather than
trees of dicts.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import trio

from deltawire.config import default

from .settings import IngestSettings
from .stats import Stats
from .stores.base import Store
from .writer import BatchResult, BatchWriter, Item, ThreadWriter, Waiter

__all__ = ["Chunk", "Committer", "Item", "Pipeline", "PipelineConfig"]

log = logging.getLogger("deltawire.collector.pipeline")


#: A flow state, once announced, holds at least this long. A queue hovering
#: around its high water flipped it several times a second (500 sessions
#: opening at once), each flip a ``flow`` frame to every connection: ~40% of
#: the collector's CPU. Agents sample every second or slower, so a flip
#: sooner than this tells them nothing they could act on.
FLOW_HOLD_S: Final = 1.0


class Committer(Protocol):
    """What the pipeline tells about commits: the connection behind a chunk."""

    def on_commit(self, seq: int) -> None: ...

    def on_store_reject(self, seq: int, reason: str) -> None:
        """The store refused this document for good (it will never be stored)."""


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    queue_size: int = default(IngestSettings, "QUEUE_SIZE")
    batch_max_docs: int = default(IngestSettings, "BATCH_MAX_DOCS")
    batch_max_ms: float = default(IngestSettings, "BATCH_MAX_MS")
    high_water: float = default(IngestSettings, "FLOW_HIGH_WATER")
    low_water: float = default(IngestSettings, "FLOW_LOW_WATER")
    flow_min_interval: float = default(IngestSettings, "FLOW_MIN_INTERVAL")


class Chunk:
    """One connection's run of documents, packed for the writer."""

    __slots__ = ("committer", "hi", "kinds", "lo", "names", "packed", "seqs", "session")

    def __init__(self, committer: Committer, items: list[Item], packed: Any) -> None:
        self.committer = committer
        self.packed = packed
        #: the documents' seqs in order (8 bytes each): what acks and a
        #: store's refusal of one document are told in
        self.seqs = array("q", [item.seq for item in items])
        self.session: str = items[0].session
        #: what the HTTP API's cache must forget once this is stored
        self.names: set[str] = {item.name for item in items}
        self.kinds: set[str | None] = {item.kind for item in items}
        #: and the range of their timestamps: answers outside it stay cached
        stamps = [item.ts for item in items]
        self.lo: float = min(stamps)
        self.hi: float = max(stamps)

    @property
    def count(self) -> int:
        return len(self.seqs)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1]


class Pipeline:
    def __init__(
        self,
        store: Store,
        stats: Stats,
        config: PipelineConfig = PipelineConfig(),
        on_flow: Callable[[float], None] | None = None,
        on_commit_batch: Callable[[list[Chunk]], None] | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.writer: BatchWriter = writer if writer is not None else ThreadWriter(store)
        self.stats = stats
        self.config = config
        self._send, self._receive = trio.open_memory_channel[Chunk](config.queue_size)
        # Room in the queue, counted in chunks (``room``): the slots neither
        # holding a queued chunk, nor promised to one a reader decoded and is
        # about to submit, nor held by a reader decoding. Readers that find
        # none wait here, first come first served, and are handed a slot
        # each as one frees (they never wake to find it gone again).
        self._free = config.queue_size
        self._room = trio.lowlevel.ParkingLot()
        self._on_flow = on_flow or (lambda _interval: None)
        self._on_commit_batch = on_commit_batch
        self.throttled = False
        #: When the flow state last changed (trio's clock); see FLOW_HOLD_S.
        self._flow_since = -FLOW_HOLD_S
        stats.queue_capacity = config.queue_size

    # -- the readers' side -------------------------------------------------
    async def room(self) -> None:
        """Return holding a slot of the queue (at once if one is free). The
        caller decodes its next run and then calls ``decoded``, whatever came
        of it.

        A reader waits here BEFORE it decodes its next run, not only in
        ``submit`` after: a reader that decodes first and then waits holds a
        decoded run the writer cannot have yet. With many readers that is
        most of the work in flight: at the start of a run of 100 sessions
        whose reads are whole compressed sessions (~770 samples a run), the
        first pass of the event loop decoded 100 runs (77,000 samples)
        before the writer got its first batch, and at the end the writer
        had as many left to commit while the decoding side sat idle; the
        two processes overlapped that much less (issue 16: zstd ingest at
        0.72x of plain quietly, while it costs only ~16% more CPU).

        Slots are handed over, not announced: the first version woke one
        reader per chunk taken and let it look again, and a reader woken
        then also woke the next while its own run was still on its way, so
        about half the woken found the queue full again and went to the back
        of the line (the readers that had waited longest, overtaken), and
        newcomers queued behind them even when there was room.
        """
        if self._free > 0 and not self._room:
            self._free -= 1
            return
        await self._room.park()  # whoever wakes us has counted our slot taken

    def decoded(self, queued: bool) -> None:
        """A reader let in by ``room`` decoded its run. ``queued``: it now
        submits a chunk with ``promised=True``, which keeps the slot until
        the writer takes it; else (lines not complete yet, a rejected frame,
        a hello, which is answered first) the slot is free again."""
        if not queued:
            self._free += 1
            self._hand_room()

    @property
    def waiting(self) -> int:
        """Readers waiting in ``room`` (each has a run it has not decoded)."""
        return len(self._room)

    def _hand_room(self) -> None:
        """Free slots to the readers waiting, oldest first."""
        if self._free > 0 and self._room:
            self._free -= len(self._room.unpark(count=self._free))

    async def submit(self, committer: Committer, items: list[Item], promised: bool = False) -> None:
        """Queue a connection's documents (made by ``writer.make_item``);
        blocks while the queue is full. ``promised``: into the slot that
        ``decoded(queued=True)`` kept, so it does not block (unless a submit
        without one, a connection's first run behind its hello, took it)."""
        self.stats.documents_queued += len(items)
        self.stats.inflight_docs += len(items)
        if not promised:
            self._free -= 1  # a slot taken without ``room``: the take frees it all the same
        try:
            # Packed now, while the rows are in the CPU's caches (a whole
            # batch serialised later measured twice the cost); the queue then
            # holds bytes, not thousands of objects.
            chunk = Chunk(committer, items, self.writer.pack(items))
            if chunk.packed is not items:
                # The caller's list: free the rows now rather than hold them
                # next to their packed copy while this reader waits for queue
                # space (1000 blocked readers x a read's worth of rows adds up).
                items.clear()
            await self._send.send(chunk)
        except BaseException:
            self._free += 1  # not queued after all: the slot is free again
            self._hand_room()
            raise
        self._check_flow()

    def _check_flow(self) -> None:
        st = self._send.statistics()  # once: it builds an object per call
        # Readers blocked in send() count as queued: they hold data too.
        waiting = st.tasks_waiting_send + self.waiting
        fill = (st.current_buffer_used + waiting) / max(1, st.max_buffer_size)
        self.stats.queue_depth = st.current_buffer_used
        if self.throttled:
            if fill > self.config.low_water:
                return
        elif fill < self.config.high_water:
            return
        # A crossing: announced only once the last change has held long
        # enough; until then the monitor's next look re-decides on the fill
        # of the moment, so a spike that is gone by then costs nothing.
        now = trio.current_time()
        if now - self._flow_since < FLOW_HOLD_S:
            return
        self._flow_since = now
        if not self.throttled:
            self.throttled = True
            self.stats.throttled = 1
            log.warning("ingest queue above high water: asking agents to slow down",
                        extra={"fill": round(fill, 2)})  # fmt: skip
            self._on_flow(self.config.flow_min_interval)
        else:
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
                    waiter = await self.writer.submit([c.packed for c in batch])
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
        self._took()
        batch = [first]
        ndocs = first.count
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
                self._took()
                batch.append(chunk)
                ndocs += chunk.count
        return batch

    def _took(self) -> None:
        """The writer took a chunk: its slot goes to the next waiting reader
        now, during the gathering, so the queue refills while it lasts."""
        self._free += 1
        self._hand_room()

    async def _complete(self, batch: list[Chunk], result: BatchResult) -> None:
        ndocs = sum(c.count for c in batch)
        self.stats.store_retries += result.retries
        self.stats.inflight_docs -= ndocs
        self.stats.observe_batch(ndocs - len(result.rejected), result.seconds)
        if result.rejected:
            self.stats.store_rejects += len(result.rejected)
            reasons = dict(result.rejected)
            index = 0
            for chunk in batch:
                for seq in chunk.seqs:
                    if index in reasons:
                        chunk.committer.on_store_reject(seq, reasons[index])
                    else:
                        chunk.committer.on_commit(seq)
                    index += 1
        else:
            for chunk in batch:
                chunk.committer.on_commit(chunk.last_seq)
        if self._on_commit_batch is not None:
            self._on_commit_batch(batch)
        self._check_flow()
