"""Bytes <-> frames. Sans-IO: feed bytes in, take frames out; no sockets, no clocks.

    decoder = Decoder(CLIENT)           # the collector reads client frames
    decoder.receive_data(chunk)
    while (frame := decoder.next_event()) is not NEED_DATA: ...

``next_event`` raises a :class:`~protocol.errors.ProtocolError` for a bad line.
A non-fatal error consumes just that line and the decoder carries on; after a
fatal one (an oversize line) the stream cannot be resynchronised and every
later call raises the same error again.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Final, Literal

import orjson

from .errors import BadJson, BadStream, FrameTooLarge, ProtocolError
from .frames import Frame, check_int_literals, client_frame_from_dict, server_frame_from_dict
from .stream import Inflater

__all__ = [
    "CLIENT",
    "DEFAULT_MAX_FRAME_BYTES",
    "INFLATE_RATIO",
    "MAX_INFLATE_PER_READ",
    "MIN_INFLATE_PER_READ",
    "NEED_DATA",
    "SERVER",
    "Decoder",
    "Encoder",
    "NeedData",
]

#: The default cap on one line (without its newline). PROTOCOL.md fixes it at
#: 1 MiB: far above any real sample (a few KiB), yet small enough that a peer
#: that never sends a newline cannot make us buffer without bound. The decoder
#: never holds more than this (+ one read) of an unfinished line.
DEFAULT_MAX_FRAME_BYTES: Final = 1 << 20


#: How much one ``receive_data`` may inflate to on a compressed stream:
#: ``INFLATE_RATIO`` times the bytes received, and at least
#: ``MIN_INFLATE_PER_READ``. Real telemetry inflates 5-15x (the recording's
#: batches of counter patches: ~8x; 60 samples cycled over and over, a
#: synthetic extreme, 55x); past 64x it is a zstd bomb, refused. The cap
#: bounds what a connection holds, and the CPU a peer can make it spend per
#: byte it sends (8 MiB of 2-byte lines from a 16 KiB bomb took seconds of
#: splitting and parsing). A read of a few bytes may still inflate to 256 KiB:
#: a whole push of blank or repeated lines.
INFLATE_RATIO: Final = 64
MIN_INFLATE_PER_READ: Final = 256 << 10
#: What a full 64 KiB read may inflate to.
MAX_INFLATE_PER_READ: Final = INFLATE_RATIO * (64 << 10)


#: ``next_lines`` splits at most this much of the buffer per call: the line
#: objects of one piece (at most ~22k, for 3-byte lines) are all that is alive.
SPLIT_BYTES: Final = 64 << 10
#: Lines averaging fewer bytes than this are mostly blank or garbage (no frame
#: is that short): worth a look for blank runs, in C, before the split.
_SHORT_LINE: Final = 16
_WHITESPACE: Final = b" \t\r\n"


class NeedData(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA

#: Who sent the bytes being decoded.
CLIENT: Final = "client"
SERVER: Final = "server"
Role = Literal["client", "server"]

# Whitespace a line may consist of and still count as blank.
_BLANK = b" \t\r"
_BLANK_BYTES = frozenset(_BLANK)


class Decoder:
    """Splits a byte stream into lines and lines into validated frames."""

    __slots__ = ("_buf", "_error", "_inflate_cap", "_inflated", "_inflater", "_line_start",
                 "_parse", "_pos", "_scan", "_stream_error", "max_frame_bytes", "tap")  # fmt: skip

    def __init__(self, sender: Role = CLIENT, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed line in _buf
        self._scan = 0  # where to resume looking for a newline
        self._error: ProtocolError | None = None
        self._parse = client_frame_from_dict if sender == CLIENT else server_frame_from_dict
        self.max_frame_bytes = max_frame_bytes
        # Inflating (a negotiated compressed stream): see start_inflating.
        self._inflater: Inflater | None = None
        self._inflated = 0  # bytes inflated by the current receive_data call
        self._inflate_cap = MIN_INFLATE_PER_READ  # what it may inflate to
        self._line_start = 0  # where the last inflated line starts in _buf
        self._stream_error: ProtocolError | None = None  # raised once no line is left
        #: Gets every byte of the line stream as received (decompressed): captures.
        self.tap: Callable[[bytes | bytearray | memoryview], object] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into frames."""
        return len(self._buf) - self._pos

    @property
    def error(self) -> ProtocolError | None:
        """The fatal error that ends this stream, once one was found (an
        oversize line): every later read raises it."""
        return self._error

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._inflater is None:
            self._append(data)
        elif self._stream_error is None:  # after a stream error, input is dropped
            self._inflated = 0
            self._inflate_cap = max(MIN_INFLATE_PER_READ, INFLATE_RATIO * len(data))
            try:
                self._inflater.feed(data, self._inflate_piece, self._inflate_cap)
            except ProtocolError as exc:
                # A copy is kept, not exc: its traceback's frames (and its
                # context's) hold this decoder, a cycle (see _again).
                self._stream_error = _again(exc)

    def start_inflating(self, unread: bytes = b"") -> None:
        """From now on, received bytes are one zstd stream (RFC 8878) of lines.

        Called right after the line that negotiated it (hello or welcome) was
        taken: bytes already buffered behind that line are the stream's start.
        Output is bounded: a line that grows past the limit without a newline
        stops it (``FrameTooLarge``), as does one ``receive_data`` inflating past
        ``INFLATE_RATIO`` times its size (and ``MIN_INFLATE_PER_READ``: ``BadStream``); the error is raised once the
        complete lines before it were taken. ``unread``: bytes the caller had
        already split off behind that line, handed back.
        """
        rest = unread + self._buf[self._pos :]
        self._buf = bytearray()
        self._pos = self._scan = self._line_start = 0
        self._error = None  # an "oversize line" in what is now read as zstd
        self._inflater = Inflater()
        if rest:
            self.receive_data(rest)

    def close(self) -> None:
        """Let go of the buffer and the decompression context now (the
        connection is over): whatever still refers to this decoder (a
        traceback, a task not yet collected) no longer keeps them. Later reads
        raise the error that ended it, or a ``BadStream``."""
        self._buf = bytearray()
        self._pos = self._scan = self._line_start = 0
        self._inflater = None
        self._error = self._error or self._stream_error or BadStream("the connection is closed")
        self._stream_error = self._error

    def _inflate_piece(self, piece: bytes) -> None:
        self._inflated += len(piece)
        if self._inflated > self._inflate_cap:
            raise BadStream(f"one read inflated past {INFLATE_RATIO}x its size: a zstd bomb?")
        self._append(piece)
        nl = piece.rfind(b"\n")
        if nl >= 0:
            self._line_start = len(self._buf) - len(piece) + nl + 1
        if len(self._buf) - max(self._line_start, self._pos) > self.max_frame_bytes + 1:
            raise FrameTooLarge(f"line longer than {self.max_frame_bytes} bytes")

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            # Compact lazily: only once the consumed head dominates the buffer,
            # so a burst of small lines is not an O(n^2) series of memmoves.
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._line_start = max(0, self._line_start - self._pos)
            self._pos = 0
        self._buf += data
        if self.tap is not None:
            self.tap(data)

    def next_event(self) -> Frame | NeedData:
        while True:
            line = self._next_line()
            if line is None:
                return NEED_DATA
            # Blank lines are ignored; a frame starts with "{", so only a line
            # starting with whitespace needs the (allocating) strip.
            if not line or (line[0] in _BLANK_BYTES and not line.strip(_BLANK)):
                continue
            return self._parse(_loads_object(line))

    def next_lines(self, max_bytes: int = SPLIT_BYTES) -> list[bytearray]:
        """Complete lines buffered now, oldest first, without their newline,
        from at most ``max_bytes`` of the buffer (more only for one longer line).

        The bulk form of what ``next_event`` reads, for a caller that parses
        lines itself (``ServerConnection.next_events``, which calls again
        until it gets ``[]``): one split per call instead of one search per
        line, with the line objects of one bounded piece alive at a time (a
        read may inflate to 8 MiB: all of it split at once, as 3-byte lines,
        would be millions of objects). In a piece of tiny lines, blank ones
        are dropped before the split where that is cheap in C (a piece that
        is all whitespace; runs of empty lines): a stream of newlines costs a
        few scans, not a loop. Lines are raw: a
        trailing CR and remaining blank lines are the caller's to tolerate. A
        line over the limit ends the list, and the next call raises
        ``FrameTooLarge`` for it, as it does for an unfinished line that has
        already outgrown the limit.
        """
        if self._error is not None:
            raise _again(self._error)
        buf = self._buf
        limit = self.max_frame_bytes
        pos = self._pos
        last = buf.rfind(b"\n", self._scan)
        if last < 0:
            self._no_newline(buf, limit)
            return []
        end = last
        if last - pos > max_bytes:
            end = buf.rfind(b"\n", pos, pos + max_bytes)
            if end < 0:  # one line longer than max_bytes: that line alone
                end = buf.find(b"\n", pos + max_bytes)
        piece = buf[pos:end]
        if piece.count(b"\n") * _SHORT_LINE > len(piece):  # mostly tiny lines
            if not piece.translate(None, _WHITESPACE):
                piece = bytearray()  # all blank: nothing to split
            while b"\n\n" in piece:  # runs of empty lines, halved per pass
                piece = piece.replace(b"\n\n", b"\n")
        lines = piece.split(b"\n")
        self._pos = self._scan = end + 1
        if end == last:  # the last complete line: what follows is unfinished
            if self._pos == len(buf):
                # All consumed: let the buffer go now, not at the next read,
                # which may be long in coming (the caller blocks on a full queue).
                self._buf = bytearray()
                self._pos = self._scan = self._line_start = 0
            if len(buf) - end - 1 > limit + 1:
                self._error = FrameTooLarge(f"line longer than {limit} bytes")
            elif self._stream_error is not None:  # what is left is not a line
                self._error = self._stream_error
        if max(map(len, lines)) > limit:  # rare: find the first line truly too long
            for i, line in enumerate(lines):
                size = len(line) - line.endswith(b"\r")
                if size > limit:
                    self._error = FrameTooLarge(
                        f"line of {size} bytes exceeds the limit of {limit}"
                    )
                    del lines[i:]
                    break
        return lines

    def _no_newline(self, buf: bytearray, limit: int) -> None:
        """No complete line is buffered: raise what the stream already holds
        (an error, or an unfinished line past the limit), else remember that
        the search may resume at the end."""
        if self._stream_error is not None:
            self._error = self._stream_error
            raise _again(self._error)
        # +1: a tolerated '\r' may still be waiting for its '\n'.
        if len(buf) - self._pos > limit + 1:
            self._error = FrameTooLarge(f"line longer than {limit} bytes")
            raise _again(self._error)
        self._scan = len(buf)

    def _next_line(self) -> bytearray | None:
        if self._error is not None:
            raise _again(self._error)
        buf = self._buf
        nl = buf.find(b"\n", self._scan)
        limit = self.max_frame_bytes
        if nl < 0:
            self._no_newline(buf, limit)
            return None
        line = buf[self._pos : nl]  # one copy; orjson reads a bytearray as is
        self._pos = self._scan = nl + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > limit:
            self._error = FrameTooLarge(f"line of {len(line)} bytes exceeds the limit of {limit}")
            raise _again(self._error)
        return line


def _again(error: ProtocolError) -> ProtocolError:
    """A fresh copy of a stored fatal error, to raise. Raising the stored one
    would give it a traceback whose frames hold the decoder that holds it: a
    reference cycle, so a failed connection's buffers (up to the frame limit
    plus a read's inflation, ~1.3 MiB for a zstd bomb) outlived it until a
    full collection, which the collector's tuned GC runs rarely: 200 bombs
    left its RSS 215 MB higher."""
    return type(error)(error.msg, seq=error.seq)


def _loads_object(line: bytes | bytearray) -> dict[str, Any]:
    try:
        obj: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"not valid JSON/UTF-8: {exc}") from None
    if type(obj) is not dict:
        raise BadJson("a frame must be a JSON object")
    seq = obj.get("seq")
    check_int_literals(line, seq if type(seq) is int and seq >= 0 else None)
    return obj


class Encoder:
    """Frames -> bytes, one line each."""

    __slots__ = ()

    def send(self, frame: Frame) -> bytes:
        return orjson.dumps(frame.wire(), option=orjson.OPT_APPEND_NEWLINE)

    def send_many(self, frames: list[Frame]) -> bytes:
        return b"".join([orjson.dumps(f.wire(), option=orjson.OPT_APPEND_NEWLINE) for f in frames])
