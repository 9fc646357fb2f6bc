"""The agent's side of one connection, sans-IO (h11's ``Connection`` shape).

    conn = ClientConnection()
    await stream.send_all(conn.send(Hello(session="s1")))
    conn.receive_data(await stream.receive_some())  # b"" at end of stream
    while (event := conn.next_event()) is not NEED_DATA:
        ...  # Welcome, Ack, Flow, ErrorFrame, then Closed

The mirror of ``ServerConnection``: bytes out for frames, events out for the
collector's bytes, and the state every client needs (hello sent, the welcome,
the highest ack, the fatal error) kept here, so no caller tracks it by hand.
No sockets, no clocks: what to do about an event is the caller's policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ._fastdc import fast_frozen
from .codec import DEFAULT_MAX_FRAME_BYTES, NEED_DATA, SERVER, Decoder, Encoder, NeedData
from .errors import BadFrame
from .frames import Ack, ClientFrame, ErrorFrame, Flow, Hello, ServerFrame, Welcome
from .stream import Deflater

__all__ = ["ClientConnection", "Closed", "LocalProtocolError", "ServerEvent"]


@fast_frozen
class Closed:
    """The collector closed its side, and every frame it sent before was taken."""


ServerEvent = Welcome | Ack | Flow | ErrorFrame | Closed

_ENCODER: Final = Encoder()


class LocalProtocolError(Exception):
    """This side was about to break the protocol (a bug in the caller)."""


class ClientConnection:
    """One connection to a collector, from the client's side.

    ``send`` encodes frames (the first must be the hello); ``send_raw`` passes
    bytes that are already NDJSON lines (a capture, a test's hand-made line).
    ``next_event`` raises ``ProtocolError`` for a line that is not a valid
    collector frame; the caller decides whether that ends the connection.
    """

    __slots__ = (
        "_decoder",
        "_deflater",
        "_eof",
        "_told_closed",
        "acked",
        "error",
        "hello",
        "sent_seq",
        "welcome",
    )

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._decoder = Decoder(SERVER, max_frame_bytes=max_frame_bytes)
        self._eof = False
        self._told_closed = False
        self._deflater: Deflater | None = None
        self.hello: Hello | None = None
        self.welcome: Welcome | None = None
        #: The highest seq an ``ack`` on this connection covered (-1: none yet).
        self.acked = -1
        #: The highest seq handed to ``send`` (-1: none yet).
        self.sent_seq = -1
        #: The collector's fatal error, once it sent one (it closes next).
        self.error: ErrorFrame | None = None

    @property
    def codec(self) -> str | None:
        """The stream codec the welcome chose (None: plain NDJSON)."""
        return self.welcome.compress if self.welcome is not None else None

    @property
    def ext(self) -> tuple[str, ...]:
        """The extensions the welcome accepted."""
        return (self.welcome.ext or ()) if self.welcome is not None else ()

    @property
    def closed(self) -> bool:
        """The collector closed its side (its last frames may still be buffered)."""
        return self._eof

    # -- out -------------------------------------------------------------------
    def send(self, frame: ClientFrame) -> bytes:
        return self.send_many((frame,))

    def send_many(self, frames: Iterable[ClientFrame]) -> bytes:
        """The bytes for ``frames``, in order, in one piece (one write)."""
        out = []
        for frame in frames:
            if type(frame) is Hello:
                if self.hello is not None:
                    raise LocalProtocolError("hello was already sent on this connection")
                self.hello = frame
            elif self.hello is None:
                raise LocalProtocolError("the first frame must be a hello")
            elif self.hello.compress and self.welcome is None:
                raise LocalProtocolError("a client that offers compression waits for the welcome")
            else:
                self.sent_seq = max(self.sent_seq, frame.seq)  # type: ignore[union-attr]
            out.append(_ENCODER.send(frame))
        return self.send_raw(b"".join(out))

    def send_raw(self, data: bytes, *, hello: Hello | None = None) -> bytes:
        """The bytes for lines the caller encoded itself (a capture replayed),
        compressed as the next block-flushed piece of the stream if a codec
        was negotiated; as they are otherwise. ``hello``: the hello these
        lines carry, if they carry one (its offer is then negotiated)."""
        if hello is not None:
            if self.hello is not None:
                raise LocalProtocolError("hello was already sent on this connection")
            self.hello = hello
        if self._deflater is not None and data:
            return self._deflater.compress(data)
        return data

    # -- in --------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the collector sent; ``b""`` means it closed its side."""
        if not data:
            self._eof = True
            return
        self._decoder.receive_data(data)

    def next_event(self) -> ServerEvent | NeedData:
        """The next event; ``Closed`` once (after the last frame), then NEED_DATA."""
        frame = self._decoder.next_event()
        if frame is NEED_DATA:
            if self._eof and not self._told_closed:
                self._told_closed = True
                return Closed()
            return NEED_DATA
        return self._event(frame)  # type: ignore[arg-type]

    def _event(self, frame: ServerFrame) -> ServerEvent:
        if isinstance(frame, Ack):
            self.acked = max(self.acked, frame.seq)
        elif isinstance(frame, Welcome) and self.welcome is None:
            offered = self.hello.compress if self.hello is not None else ()
            if frame.compress is not None and frame.compress not in offered:
                raise BadFrame(f"the collector chose codec {frame.compress!r}, not offered")
            asked = self.hello.ext if self.hello is not None else ()
            if not set(frame.ext or ()) <= set(asked):
                raise BadFrame(f"the collector accepted extensions {frame.ext!r}, not offered")
            self.welcome = frame
            if frame.compress is not None:
                # Every byte after the welcome line, both ways, is one zstd stream.
                self._decoder.start_inflating()
                self._deflater = Deflater()
        elif isinstance(frame, ErrorFrame) and frame.fatal:
            self.error = frame
        return frame
