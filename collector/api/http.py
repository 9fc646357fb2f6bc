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

And two shortcuts: a keep-alive HTTP/1.1 ``GET`` whose answer the cache holds
(``FastGets``, fast.py) is written straight from the parser's callback, with
the headers the full path sends. uvicorn would build a request cycle, an
event and an asyncio task, and pass two ASGI messages through the app's
middlewares, for an answer that is a few KB of bytes already. And a plain
keep-alive write of a metric (``FastWrites``: POST ``/metrics``, PUT, PATCH,
DELETE ``/metrics/{id}``) has its body gathered here and one task run the
routes' own write function (writes.py), whose answer is written back here:
no request cycle, ASGI messages, middlewares, router, ``Request`` or
``Response``, which were most of a write's CPU flat out.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_body

if TYPE_CHECKING:
    from .fast import FastGets, FastWrites
    from .writes import Reply

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_URL_BYTES",
    "JsonHttpToolsProtocol",
    "protocol_class",
    "send",
]

MAX_URL_BYTES = 16 << 10  # a filtered listing URL is well under 1 KB
MAX_HEADER_BYTES = 64 << 10  # the sum of header names and values
# After an error answer (414, 431, 400, 408) the client may still be sending
# what we refused: closing at once with its bytes unread makes the kernel
# reset the connection, and a reset can discard our answer before the client
# reads it. So we send FIN after the answer and read and drop what still
# comes, until the client closes or this many seconds pass (nginx's
# "lingering close").
LINGER_S = 2.0

_REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    422: b"Unprocessable Content",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_WRITES = (b"POST", b"PUT", b"PATCH", b"DELETE")


def send(transport: asyncio.WriteTransport, fd: int, *parts: bytes) -> None:
    """``transport.write`` of ``parts``, but the send itself without the GIL.

    uvloop's write makes the send syscall holding the GIL, and on loopback
    that syscall also runs the receiver's side of TCP: flat out at c=100 it
    was a third of the event loop's GIL time on a write (py-spy --gil), time
    the store thread (the group commit) waited out. ``os.writev`` on the
    socket ``fd`` releases the GIL meanwhile, and gathers the parts (an
    answer's head and its body) without copying them into one bytes first
    (a listing page is ~23 KB). Only while the transport holds nothing
    unsent (the bytes go out in order) and is open (``fd`` -1: never); what
    the kernel does not take now, or an error, goes the usual way."""
    if fd >= 0 and not transport.is_closing() and not transport.get_write_buffer_size():
        try:
            sent = os.writev(fd, parts)
        except OSError:  # would block, or a broken connection: the transport's to handle
            sent = 0
        total = sum(map(len, parts))
        if sent == total:
            return
        transport.write(b"".join(parts)[sent:])
        return
    transport.write(b"".join(parts))


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


class _Write:
    """Stands in for uvicorn's request cycle of a write the fast path took
    (or a GET: ``FastGets.submit``): its body as it arrives, and whether its
    answer went out (the protocol's other callbacks, pipelining and shutdown
    read these)."""

    __slots__ = (
        "body",
        "disconnected",
        "headers",
        "keep_alive",
        "method",
        "path",
        "response_complete",
    )

    message_event = _NoEvent()

    def __init__(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        # The headers are this request's: a pipelined one's replace the protocol's.
        self.method, self.path, self.headers = method, path, headers
        self.body: list[bytes] = []
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True  # uvicorn's shutdown clears it: close after the answer


_OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-cache: hit\r\n"


class JsonHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    fast: FastGets | None = None
    writes: FastWrites | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = False  # a request began and its headers are not complete
        self._fd = -1  # the connection's socket, where _send may write to it directly
        self._rejected = False  # an error answer went out: what arrives is dropped

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
        # A plain TCP socket's descriptor for ``send`` (never under TLS).
        sock = transport.get_extra_info("socket")
        plain = sock is not None and transport.get_extra_info("sslcontext") is None
        self._fd = sock.fileno() if plain else -1

    def _send(self, *parts: bytes) -> None:
        send(self.transport, self._fd, *parts)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._fd = -1  # closed: the number may name another socket soon
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        # The deadline is armed only if the headers are still incomplete once
        # what arrived is parsed (data_received): a request that comes whole
        # in one read, as nearly all do, costs no timer to arm and cancel.
        self._in_headers = True

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        if self._rejected or self.transport.is_closing():
            return
        if self.fast is not None and self._answered_at_once():
            return
        if self.writes is not None and self._write_taken():
            return
        super().on_headers_complete()

    # -- cached GETs ---------------------------------------------------------------------------

    def _plain(self) -> bool:
        """A keep-alive HTTP/1.1 request with nothing else under way (no
        pipelined request before it), which the shortcuts may answer."""
        parser = self.parser
        return not (
            self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or self.root_path
        )

    def _answered_at_once(self) -> bool:
        """Write the cache's answer now if this is a plain keep-alive GET it
        holds (one at a time: never while a pipelined request is under way);
        if the cache does not hold it, the fast path may still take it
        (``FastGets.submit``), and answer it once computed."""
        if self.parser.get_method() != b"GET" or not self._plain():
            return False
        started = time.perf_counter()
        url = httptools.parse_url(self.url)
        if b"%" in url.path:
            return False  # the full path unquotes it
        path = url.path.decode("ascii")
        assert self.fast is not None
        query = url.query or b""
        payload = self.fast.payload(path, query, self.headers)
        if payload is None:
            read = _Write("GET", path, self.headers)
            if not self.fast.submit(path, query, self.headers,
                                    functools.partial(self._answer_taken, read)):  # fmt: skip
                return False
            self.cycle = read  # type: ignore[assignment]
            return True
        head = [_OK_HEAD]
        for name, value in self.server_state.default_headers:  # date (and server, if on)
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(payload))
        self.cycle = _ANSWERED
        self._send(b"".join(head), payload)
        self.on_response_complete()  # keep-alive timer, flow control, the request count
        self.fast.answered(path, started)
        return True

    # -- writes ------------------------------------------------------------------------------

    def _write_taken(self) -> bool:
        """Take this request down the write fast path if it is a plain
        keep-alive write of a metric with a small body of known length."""
        method = self.parser.get_method()
        if method not in _WRITES or not self._plain() or self.expect_100_continue:
            return False
        url = httptools.parse_url(self.url)
        if url.query or b"%" in url.path:
            return False  # the full path checks parameters (422) and unquotes
        assert self.writes is not None
        path = url.path.decode("ascii")
        if self.writes.route(method, path) is None:
            return False
        for name, value in self.headers:
            if name == b"transfer-encoding":
                return False  # chunked: the full path counts it as it streams
            if name == b"content-length" and (
                not value.isdigit() or int(value) > self.writes.max_body
            ):
                return False  # the full path answers 413 (or 400)
        self.cycle = _Write(method.decode("ascii"), path, self.headers)  # type: ignore[assignment]
        return True

    def on_body(self, body: bytes) -> None:
        if type(self.cycle) is _Write:
            self.cycle.body.append(body)  # at most max_body: its length was checked
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        write = self.cycle
        if type(write) is not _Write:
            super().on_message_complete()
            return
        if write.method == "GET":
            return  # taken by FastGets.submit, under way already
        assert self.writes is not None
        self.writes.submit(write.method, write.path, write.headers, b"".join(write.body),
                           functools.partial(self._answer_taken, write))  # fmt: skip

    def _answer_taken(self, write: _Write, reply: Reply) -> None:
        """Send the answer of a request the fast path took: a write's (its
        group committed, or it was refused) or a GET's (``FastGets.submit``)."""
        write.response_complete = True
        if self.transport.is_closing() or write.disconnected:
            return  # the client left; the edit stands (committed before this answer)
        head = [b"HTTP/1.1 %d %s\r\n" % (reply.status, _REASONS.get(reply.status, b""))]
        for name, value in self.server_state.default_headers:  # date (and server, if on)
            head.append(name + b": " + value + b"\r\n")
        for key, text in reply.headers.items():
            head.append(b"%s: %s\r\n" % (key.encode("latin-1"), text.encode("latin-1")))
        if reply.status != 204:
            head.append(b"content-type: application/json\r\n")
            head.append(b"content-length: %d\r\n" % len(reply.payload))
        if not write.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self._send(b"".join(head), reply.payload)
        if not write.keep_alive:
            self.transport.close()
            return
        self.on_response_complete()  # keep-alive timer, flow control, pipelined requests

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
        if self._rejected or self.transport.is_closing():
            return  # rejected already: drop what is still arriving (LINGER_S)
        super().data_received(data)
        if self._in_headers and self._header_timer is None and not self._rejected:
            self._arm()  # a request's headers are arriving in pieces: from now on

    # -- the answers -------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "bad_request", f"the HTTP request could not be parsed: {msg}")

    def _reject(self, status: int, code: str, detail: str) -> None:
        self._disarm()
        if self._rejected or self.transport.is_closing():
            return
        self._rejected = True
        body = error_body(code, detail)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # FIN after the answer; the client's EOF closes us
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def protocol_class(
    header_timeout: float, fast: FastGets | None = None, writes: FastWrites | None = None
) -> type[JsonHttpToolsProtocol]:
    """The protocol with this header deadline, cache lookup and write fast
    path (uvicorn builds one per connection)."""
    attrs = {"header_timeout": header_timeout, "fast": fast, "writes": writes}
    return type("JsonHttpTools", (JsonHttpToolsProtocol,), attrs)
