"""Keeps the API workers' open connections even: a worker that accepts a
connection while it holds more than another worker hands it over.

Why: the workers share one port with ``SO_REUSEPORT``, and the kernel picks
a worker for each new connection by a hash of its addresses, blind to load.
A client's 100 keep-alive connections came to 63 and 37 in one of 8 runs
(44-56 to 63-37 in 16): the worker with 63 serves them in turns on its one
core while the other has spare time, so its clients wait ~1.3x as long.
Connections live long (dashboards, ``/stream``, wrk), so who holds them
decides the latency until they close.

How: each worker publishes how many connections it has open in its
journal's header (peers.py). On accepting one, before reading a byte of it,
a worker that has more than another (counting those it handed that one and
that it has not taken yet) sends the socket to it over the peers' datagram
socket (``SCM_RIGHTS``) and closes its own descriptor: the connection stays
open in the other, which serves it as if it had accepted it (the client
sees nothing). A connection handed over is never handed on, so none
bounces; a worker that is not running, not yet serving, shutting down or
whose queue is full is not handed any (the first keeps it). So no worker
holds more than one connection above another, whatever the kernel chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .peers import Peers

__all__ = ["Balance"]

log = logging.getLogger("deltawire.collector.api.balance")


class Balance:
    """This worker's side: ``offer`` a new connection (True: handed over),
    ``opened``/``closed`` for those we serve, and ``start`` taking the
    others' once the server runs (``stop`` when it shuts down)."""

    def __init__(self) -> None:
        self.peers: Peers | None = None
        self.open = 0  # connections we serve now
        self.handed = 0  # handed to another worker, ever (tests, logs)
        self.taken = 0  # taken from another worker, ever
        self._serving = False
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._adopting: set[asyncio.Task[object]] = set()

    def attach(self, peers: Peers) -> None:
        self.peers = peers

    def start(self, factory: Callable[[], asyncio.Protocol]) -> None:
        """The server listens: take the connections handed to us, each
        served by a protocol from ``factory``, and hand ours over."""
        self._factory = factory
        self._serving = True
        if self.peers is not None:
            self.peers.take_connections(self._adopt)

    def stop(self) -> None:
        """Shutting down: hand none over (the others may be stopping too)
        and take none."""
        self._serving = False
        if self.peers is not None:
            self.peers.take_connections(None)

    def offer(self, transport: asyncio.BaseTransport) -> bool:
        """Hand this new connection to a worker with fewer, if one has;
        True if it went (the caller then aborts its transport, which closes
        only its own descriptor)."""
        peers = self.peers
        if peers is None or not self._serving:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None or transport.get_extra_info("sslcontext") is not None:
            return False
        if not peers.hand_off(sock.fileno(), self.open):
            return False
        self.handed += 1
        return True

    def opened(self) -> None:
        self.open += 1
        if self.peers is not None:
            self.peers.count_connections(self.open)

    def closed(self) -> None:
        self.open -= 1
        if self.peers is not None:
            self.peers.count_connections(self.open)

    def _adopt(self, conn: socket.socket) -> None:
        """Serve a connection another worker handed us. It is counted now,
        before its protocol exists (a loop turn later): the worker that
        handed it reads our count to decide the next one."""
        factory = self._factory
        if factory is None or not self._serving:
            conn.close()
            return
        self.taken += 1
        self.opened()  # its protocol's connection_lost says closed()
        conn.setblocking(False)
        made: list[Any] = []

        def taken() -> asyncio.Protocol:
            protocol: Any = factory()
            protocol.taken = True  # counted already, and never handed on
            made.append(protocol)
            return protocol

        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(taken, conn))
        self._adopting.add(task)
        task.add_done_callback(lambda t: self._adopted(t, conn, made))

    def _adopted(self, task: asyncio.Task[object], conn: socket.socket, made: list[Any]) -> None:
        self._adopting.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.warning("serving a connection another worker handed us failed: %r",
                            task.exception())  # fmt: skip
            with contextlib.suppress(OSError):
                conn.close()
            if not (made and made[0].gone):  # its connection_lost did not count it out
                self.closed()
