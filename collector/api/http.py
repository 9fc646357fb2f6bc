"""The HTTP server's own edges, answered as JSON like everything else.

uvicorn's httptools protocol answers a request its parser rejects with a
``text/plain`` 400, has no limit on a URL's length and no deadline for a
request's headers. ``JsonHttpToolsProtocol`` keeps the protocol and changes
only these edges:

- a parser error is a JSON 400 ``bad_request``;
- a URL over ``MAX_URL_BYTES`` is a JSON 414 ``url_too_long``;
- headers over ``MAX_HEADER_BYTES`` are a JSON 431 ``headers_too_large``;
- headers not complete ``header_timeout`` seconds after a connection opens
  or a request starts are a JSON 408 ``header_timeout`` (slowloris).

And one shortcut: a keep-alive HTTP/1.1 ``GET`` whose answer the cache holds
(``FastGets``, fast.py) is written straight from the parser's callback, with
the headers the full path sends. uvicorn would build a request cycle, an
event and an asyncio task, and pass two ASGI messages through the app's
middlewares, for an answer that is a few KB of bytes already.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_body

if TYPE_CHECKING:
    from .fast import FastGets

__all__ = ["MAX_HEADER_BYTES", "MAX_URL_BYTES", "JsonHttpToolsProtocol", "protocol_class"]

MAX_URL_BYTES = 16 << 10  # a filtered listing URL is well under 1 KB
MAX_HEADER_BYTES = 64 << 10  # the sum of header names and values

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class _NoEvent:
    def set(self) -> None:
        """Nobody waits for the body of a request answered at once."""


class _Answered:
    """Stands in for uvicorn's request cycle of a request answered here: the
    protocol's other callbacks then see a finished response."""

    response_complete = True
    disconnected = False
    message_event = _NoEvent()


_ANSWERED: Any = _Answered()
_OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-cache: hit\r\n"


class JsonHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    fast: FastGets | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    # -- the header deadline -------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._reject(408, "header_timeout", "the request headers took too long")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        if self.transport.is_closing():  # after a rejection
            return
        if self.fast is None or not self._answered_at_once():
            super().on_headers_complete()

    # -- cached GETs ---------------------------------------------------------------------------

    def _answered_at_once(self) -> bool:
        """Write the cache's answer now if this is a plain keep-alive GET it
        holds (one at a time: never while a pipelined request is under way)."""
        parser = self.parser
        if (
            parser.get_method() != b"GET"
            or self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or self.root_path
        ):
            return False
        started = time.perf_counter()
        url = httptools.parse_url(self.url)
        if b"%" in url.path:
            return False  # the full path unquotes it
        path = url.path.decode("ascii")
        assert self.fast is not None
        payload = self.fast.payload(path, url.query or b"", self.headers)
        if payload is None:
            return False
        head = [_OK_HEAD]
        for name, value in self.server_state.default_headers:  # date (and server, if on)
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(payload))
        self.cycle = _ANSWERED
        self.transport.write(b"".join(head) + payload)
        self.on_response_complete()  # keep-alive timer, flow control, the request count
        self.fast.answered(path, started)
        return True

    # -- size limits -------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URL_BYTES:
            self._reject(414, "url_too_long", f"the URL is longer than {MAX_URL_BYTES} bytes")
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._reject(
                431, "headers_too_large", f"the headers are larger than {MAX_HEADER_BYTES} bytes"
            )
            return
        super().on_header(name, value)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # rejected already: ignore what is still arriving
        super().data_received(data)

    # -- the answers -------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "bad_request", f"the HTTP request could not be parsed: {msg}")

    def _reject(self, status: int, code: str, detail: str) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        body = error_body(code, detail)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def protocol_class(
    header_timeout: float, fast: FastGets | None = None
) -> type[JsonHttpToolsProtocol]:
    """The protocol with this header deadline and cache lookup (uvicorn
    builds one per connection)."""
    return type(
        "JsonHttpTools", (JsonHttpToolsProtocol,), {"header_timeout": header_timeout, "fast": fast}
    )
