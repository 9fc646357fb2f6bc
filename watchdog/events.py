"""Local events: a Unix socket the application writes NDJSON lines to.

Each line is ``{"name": "...", "data": {...}}`` (``data`` optional). The
watchdog gives each event a seq and a timestamp and sends it as an ``event``
frame at once. A malformed line is logged and counted, never fatal: telemetry
must not be able to break the watchdog, nor a bad line the ones after it.

The socket lives in a fresh 0700 directory, so only the application's user
(and root) can write to it. Its path reaches the child in ``DELTAWIRE_EVENTS``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import socket as stdlib_socket
import tempfile
from collections.abc import Callable
from typing import Any, Final

import orjson
import trio

from deltawire.protocol.frames import MAX_NAME_CHARS

from .client import ENV_VAR

__all__ = ["ENV_VAR", "MAX_EVENT_LINE", "EventServer", "parse_event_line"]

log = logging.getLogger("deltawire.watchdog.events")

#: Far above any sane event; bounds what one client can make us buffer.
MAX_EVENT_LINE: Final = 256 << 10


def parse_event_line(line: bytes) -> tuple[str, dict[str, Any] | None]:
    """``(name, data)`` of one line; ``ValueError`` says what is wrong with it."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ValueError("not valid JSON") from None
    if type(obj) is not dict:
        raise ValueError("an event must be a JSON object")
    name = obj.get("name")
    if type(name) is not str or not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"name must be a string of 1-{MAX_NAME_CHARS} characters")
    data = obj.get("data")
    if data is not None and type(data) is not dict:
        raise ValueError("data must be an object")
    return name, data


class EventServer:
    """Accepts any number of local clients; calls ``on_event(name, data)`` per line."""

    def __init__(
        self,
        on_event: Callable[[str, dict[str, Any] | None], None],
        directory: pathlib.Path | None = None,
    ) -> None:
        self.on_event = on_event
        self._own_dir = directory is None
        self.directory = directory or pathlib.Path(tempfile.mkdtemp(prefix="deltawire-"))
        self.path = self.directory / "events.sock"
        self.received = 0
        self.malformed = 0
        self._sock: trio.socket.SocketType | None = None
        #: the listening socket as bound (non-blocking once trio wraps it), for
        #: ``drain``'s accepts that must not wait
        self._raw: stdlib_socket.socket | None = None
        #: clients being read, and an event set whenever one finishes
        self._clients = 0
        self._client_done = trio.Event()

    def bind(self) -> None:
        """Create the socket now (before the child starts), so no event is lost."""
        os.chmod(self.directory, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        # A plain socket binds synchronously (trio's bind is async only to
        # resolve host names; a path needs none).
        raw = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            raw.bind(str(self.path))
            raw.listen(64)
        except OSError:
            raw.close()
            raise
        self._sock = trio.socket.from_stdlib_socket(raw)
        self._raw = raw

    async def drain(self) -> None:
        """Read every connection already made to its end: those being read,
        and those still waiting in the listen queue.

        Called once the watched command has exited, before the session is
        sealed: a command that writes its last events and exits at once
        leaves connections that ``serve`` has not read yet (or not even
        accepted), and they belong to the session. The caller bounds the
        wait (a grandchild of the command may keep a connection open).
        """
        async with trio.open_nursery() as nursery:
            while (stream := self._accept_waiting()) is not None:
                nursery.start_soon(self._client, stream)
            while self._clients:
                await self._client_done.wait()

    def _accept_waiting(self) -> trio.SocketStream | None:
        """A connection waiting in the listen queue, or None (never blocks)."""
        if self._raw is None or self._sock is None:
            return None
        try:
            conn, _ = self._raw.accept()
        except OSError:  # BlockingIOError: nobody waiting
            return None
        return trio.SocketStream(trio.socket.from_stdlib_socket(conn))

    async def serve(self) -> None:
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        listener = trio.SocketListener(self._sock)
        async with listener, trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._client, stream)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._raw = None
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, stream: trio.abc.Stream) -> None:
        self._clients += 1
        try:
            await self._read(stream)
        finally:
            self._clients -= 1
            self._client_done.set()
            self._client_done = trio.Event()

    async def _read(self, stream: trio.abc.Stream) -> None:
        buf = bytearray()
        skipping = False  # inside an over-long line: drop bytes up to its newline
        async with stream:
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    chunk = b""
                if not chunk:
                    if buf and not skipping:
                        self._line(bytes(buf))  # a last line without its newline
                    return
                buf += chunk
                start = 0
                while (nl := buf.find(b"\n", start)) >= 0:
                    if skipping:
                        skipping = False
                    else:
                        self._line(bytes(buf[start:nl]))
                    start = nl + 1
                del buf[:start]
                if len(buf) > MAX_EVENT_LINE:
                    if not skipping:
                        self._bad(f"line longer than {MAX_EVENT_LINE} bytes")
                    skipping = True
                    buf.clear()

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            name, data = parse_event_line(line)
        except ValueError as exc:
            self._bad(str(exc), line)
            return
        self.received += 1
        self.on_event(name, data)

    def _bad(self, why: str, line: bytes = b"") -> None:
        self.malformed += 1
        log.warning("malformed event line ignored",
                    extra={"error": why, "line": line[:200].decode(errors="replace"),
                           "malformed_total": self.malformed})  # fmt: skip
