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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_body

__all__ = ["MAX_HEADER_BYTES", "MAX_URL_BYTES", "JsonHttpToolsProtocol", "protocol_class"]

MAX_URL_BYTES = 16 << 10  # a filtered listing URL is well under 1 KB
MAX_HEADER_BYTES = 64 << 10  # the sum of header names and values

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class JsonHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = 10.0

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
        if not self.transport.is_closing():  # not after a rejection
            super().on_headers_complete()

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


def protocol_class(header_timeout: float) -> type[JsonHttpToolsProtocol]:
    """The protocol with this header deadline (uvicorn builds one per connection)."""
    return type("JsonHttpTools", (JsonHttpToolsProtocol,), {"header_timeout": header_timeout})
