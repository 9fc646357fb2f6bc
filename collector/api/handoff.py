"""Connections handed to an API worker: the collector accepts on the HTTP
port and passes each connection to its API workers in turn, over a Unix
socket, as a file descriptor (``SCM_RIGHTS``).

Why not let the workers share the port (``SO_REUSEPORT``): the kernel then
hashes each connection to a worker, and 100 connections split 41/59 to
57/43 between two (six runs), so the fuller worker set the tail; a round
also began with one worker alone when it listened first. Handed in turn,
connections split evenly, and a worker that restarts takes none meanwhile
(collector/api_process.py sends them to the others).

Here, on the worker's event loop: each descriptor becomes a socket served by
the same protocol as a listener's connections (``connect_accepted_socket``).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

__all__ = ["MAX_FDS", "Handoff", "hand_over"]

log = logging.getLogger("deltawire.collector.api")

#: Descriptors read per message at most (the collector sends one a message).
MAX_FDS = 16


def hand_over(channel: socket.socket, conn: socket.socket) -> None:
    """Send ``conn`` down ``channel`` (non-blocking: BlockingIOError if the
    worker is not reading, OSError if it is gone); the caller closes its copy."""
    channel.sendmsg(
        [b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))]
    )


class Handoff:
    """Takes the connections arriving on ``fd`` and serves each with
    ``protocol()`` (uvicorn's HTTP protocol, as for a listener)."""

    def __init__(self, fd: int) -> None:
        self.channel = socket.socket(fileno=fd)
        self.channel.setblocking(False)
        self.taken = 0
        self._protocol: Callable[[], asyncio.Protocol] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        self._protocol = protocol
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self._readable)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        self.channel.close()

    def _readable(self) -> None:
        size = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
        while True:
            try:
                data, ancdata, _flags, _addr = self.channel.recvmsg(MAX_FDS, size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # the collector is gone: the control pipe ends us
                log.debug("connection handoff: %s", e)
                data, ancdata = b"", []
            if not data and not ancdata:
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
                return
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        self._serve(socket.socket(fileno=fd))

    def _serve(self, conn: socket.socket) -> None:
        assert self._protocol is not None
        conn.setblocking(False)
        self.taken += 1
        task = asyncio.get_running_loop().create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        assert self._protocol is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._protocol, conn)
        except OSError as e:  # the client left already
            log.debug("a handed-over connection failed: %s", e)
            conn.close()
