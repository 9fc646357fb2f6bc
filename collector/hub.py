"""What all connections share: config, stats, the pipeline, the live-connection set.

The hub knows connections only as ``Reader``s, so ``connection`` depends on
``hub`` and never the other way round.
"""

from __future__ import annotations

import pathlib
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import trio

from deltawire.protocol import CODECS

from .pipeline import Pipeline
from .stats import Stats
from .stores.base import Store

__all__ = ["Hub", "IngestConfig", "Reader"]


class Reader(Protocol):
    """What the hub asks of a live connection."""

    def notify_flow(self, interval: float) -> None:
        """Tell the agent to sample at most every ``interval`` s (0: no limit)."""

    def stop_reading(self) -> None:
        """Shutdown: read no more, drain what was read, ack it."""

    def replace(self) -> None:
        """A newer connection took this one's session: read no more, drain, close."""

    async def handed_over(self) -> None:
        """Return once it reads no more and all it accepted is stored or refused."""


@dataclass(frozen=True, slots=True)
class IngestConfig:
    tokens: frozenset[str] = frozenset()
    max_connections: int = 10000
    max_frame_bytes: int = 1 << 20
    idle_timeout: float = 300.0
    max_errors: int = 100
    ack_interval: float = 0.05
    flow_min_interval: float = 5.0
    shutdown_grace: float = 10.0
    capture_dir: pathlib.Path | None = None
    #: Bytes asked of the socket per read: big enough to amortise the loop,
    #: small enough that one read never holds more than a few hundred frames.
    recv_size: int = 65536
    #: A peer that does not read our acks for this long is gone.
    send_timeout: float = 30.0
    #: Stream codecs accepted from a hello's offer (() keeps every connection plain).
    compress: tuple[str, ...] = CODECS


class Hub:
    def __init__(
        self, store: Store, pipeline: Pipeline, stats: Stats, config: IngestConfig
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.stats = stats
        self.config = config
        self.connections: set[Reader] = set()
        self.session_refs: Counter[str] = Counter()
        #: session -> the one connection that holds it (PROTOCOL.md, "One
        #: connection per session"); a newer hello takes it over
        self.holders: dict[str, Reader] = {}
        self.stopping = False
        self.next_id = 0
        # Woken when a connection leaves: shutdown waits on it, never polls.
        self._left = trio.lowlevel.ParkingLot()

    def join(self, conn: Reader) -> None:
        self.connections.add(conn)

    def leave(self, conn: Reader) -> None:
        self.connections.discard(conn)
        self._left.unpark_all()

    async def all_left(self) -> None:
        """Return once no connection is live."""
        while self.connections:
            await self._left.park()

    def broadcast_flow(self, interval: float) -> None:
        for conn in list(self.connections):
            conn.notify_flow(interval)

    def stop_reading(self) -> None:
        """Shutdown, phase one: every connection stops reading and drains."""
        self.stopping = True
        for conn in list(self.connections):
            conn.stop_reading()
