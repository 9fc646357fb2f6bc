"""The collector's side of one connection, sans-IO.

``ServerConnection`` turns inbound bytes into a ``Hello`` followed by
reassembled ``Document``s, enforcing hello-first and the error budget. What
needs I/O or policy (tokens, the store's ``acked``, timeouts) stays with the
caller.
"""

from __future__ import annotations

from typing import Final

from .codec import CLIENT, DEFAULT_MAX_FRAME_BYTES, NEED_DATA, Decoder, NeedData
from .delta import Document, Reassembler
from .errors import BadFrame, BadHello, ProtocolError, TooManyErrors
from .frames import Bye, Hello

__all__ = ["DEFAULT_MAX_ERRORS", "ServerConnection"]

#: Rejected frames tolerated on one connection before it is closed: enough to
#: ride out a buggy client's odd line, few enough that a garbage stream is cut.
DEFAULT_MAX_ERRORS: Final = 100


class ServerConnection:
    __slots__ = ("_decoder", "ended", "errors", "hello", "max_errors", "reassembler")

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_errors: int = DEFAULT_MAX_ERRORS,
    ) -> None:
        self._decoder = Decoder(CLIENT, max_frame_bytes=max_frame_bytes)
        self.max_errors = max_errors
        self.errors = 0
        self.hello: Hello | None = None
        self.reassembler: Reassembler | None = None
        self.ended = False

    @property
    def buffered(self) -> int:
        return self._decoder.buffered

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._decoder.receive_data(data)

    def next_event(self) -> Hello | Document | NeedData:
        """The next hello or document; raises ``ProtocolError`` for a bad frame.

        After a non-fatal error the caller reports it and calls again.
        """
        try:
            frame = self._decoder.next_event()
            if frame is NEED_DATA:
                return NEED_DATA
            if self.reassembler is None:
                if type(frame) is not Hello:
                    raise BadHello("the first frame must be a hello")
                self.hello = frame
                self.reassembler = Reassembler.for_hello(frame)
                return frame
            if self.ended:
                raise BadFrame(
                    "the session already ended with a bye", seq=getattr(frame, "seq", None)
                )
            doc = self.reassembler.feed(frame)  # type: ignore[arg-type]
            if type(frame) is Bye:
                self.ended = True
            return doc
        except ProtocolError as exc:
            if self.reassembler is None and not exc.fatal:
                # Nothing but a valid hello may open a connection.
                raise BadHello(f"the first frame must be a valid hello ({exc.msg})") from None
            if not exc.fatal:
                self.errors += 1
                if self.errors > self.max_errors:
                    raise TooManyErrors(
                        f"more than {self.max_errors} rejected frames on this connection",
                        seq=exc.seq,
                    ) from None
            raise
