"""The collector's side of one connection, sans-IO.

``ServerConnection`` turns inbound bytes into a ``Hello`` followed by
reassembled ``Document``s, enforcing hello-first and the error budget. What
needs I/O or policy (tokens, the store's ``acked``, timeouts) stays with the
caller.

Two ways to take events out: ``next_event`` (one at a time, h11 style) and
``next_events`` (every event the buffered lines make, in one call). The second
is the collector's hot path: a delta that is valid in the common way (int seq,
float ts, a known name) is checked and reassembled inline, without building a
``Delta`` frame; anything else goes through exactly the code ``next_event``
uses, so both ways accept, reject and reassemble the same bytes identically
(a property test holds them to it).

What a document becomes is the caller's choice (``document=``): by default a
``Document``; the collector passes its writer's item maker, so each document
is built once, directly in the form its store writes, while its data is still
in the CPU's caches. A maker may raise ``BadFrame`` for data its store cannot
hold; the frame is then rejected like any bad frame (its delta chain has
already moved on, as the sender's has).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final

import orjson

from .batch import batch_ts, expand_batch
from .codec import (
    CLIENT,
    DEFAULT_MAX_FRAME_BYTES,
    NEED_DATA,
    Decoder,
    Encoder,
    NeedData,
    _loads_object,
)
from .counter import BATCH, COUNTER, EXTENSIONS, apply_counter_patch
from .delta import Document, Kind, Reassembler
from .errors import BadFrame, BadHello, ProtocolError, TooManyErrors, UnknownType
from .frames import (
    MAX_BATCH_SAMPLES,
    MAX_NAME_CHARS,
    TS_MAX,
    TS_MIN,
    Batch,
    Bye,
    CDelta,
    ClientFrame,
    Hello,
    ServerFrame,
    Welcome,
    batch_line_within_limits,
    client_frame_from_dict,
    line_needs_limit_check,
    lines_need_limit_check,
)
from .merge_patch import apply_patch
from .stream import CODECS, RawDeflater, choose_codec

__all__ = ["DEFAULT_MAX_ERRORS", "DocumentFactory", "ServerConnection"]

#: Rejected frames tolerated on one connection before it is closed: enough to
#: ride out a buggy client's odd line, few enough that a garbage stream is cut.
DEFAULT_MAX_ERRORS: Final = 100

_BLANK: Final = b" \t\r"
_ENCODER: Final = Encoder()

Event = Hello | Document

#: Builds what a document is handed out as, from the fields of ``Document``
#: in their order: session, seq, kind, name, ts, host, tags, data.
DocumentFactory = Callable[
    [str, int, Kind, str, float, "str | None", tuple[str, ...], "dict[str, Any] | None"], Any
]


class ServerConnection:
    __slots__ = (
        "_accept",
        "_accept_ext",
        "_check_lines",
        "_decoder",
        "_deflater",
        "_document",
        "_line_i",
        "_lines",
        "_pending",
        "codec",
        "ended",
        "errors",
        "ext",
        "hello",
        "max_errors",
        "reassembler",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_errors: int = DEFAULT_MAX_ERRORS,
        document: DocumentFactory = Document,
        compress: tuple[str, ...] = CODECS,
        ext: tuple[str, ...] = EXTENSIONS,
        tap: Callable[[bytes | bytearray | memoryview], object] | None = None,
    ) -> None:
        """``compress``: the stream codecs accepted (() refuses every offer);
        ``ext``: the extensions accepted; ``tap``: gets every byte of the line
        stream, decompressed (captures)."""
        self._decoder = Decoder(CLIENT, max_frame_bytes=max_frame_bytes)
        self._decoder.tap = tap
        self._accept = compress
        self._accept_ext = ext
        #: The extensions the hello negotiated.
        self.ext: tuple[str, ...] = ()
        self._deflater: RawDeflater | None = None
        #: The stream codec the hello negotiated (None: plain NDJSON).
        self.codec: str | None = None
        self._document = document
        self.max_errors = max_errors
        self.errors = 0
        self.hello: Hello | None = None
        self.reassembler: Reassembler | None = None
        self.ended = False
        # Lines split off by next_events but not yet turned into events (a
        # bad line or a bye stopped it); both ways take these first.
        self._lines: list[bytearray] = []
        self._line_i = 0
        # The cdelta frames of a batch not yet turned into events (one of
        # them was rejected); both ways take these before any line.
        self._pending: deque[CDelta] = deque()
        # Whether some of _lines may break a limit on what a frame may carry:
        # then each line is tested before it may take the bulk path.
        self._check_lines = False

    @property
    def buffered(self) -> int:
        return self._decoder.buffered + sum(len(x) + 1 for x in self._lines[self._line_i :])

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._decoder.receive_data(data)

    def close(self) -> None:
        """The connection is over: free its buffers and zstd context at once
        (``Decoder.close``), not whenever this object is collected."""
        self._decoder.close()
        self._lines, self._line_i = [], 0
        self._pending.clear()

    def welcome(self, acked: int) -> Welcome:
        """The reply to the hello: it answers the hello's codec offer."""
        assert self.hello is not None, "welcome before hello"
        return Welcome(self.hello.session, acked, compress=self.codec,
                       negotiated=bool(self.hello.compress),
                       ext=self.ext if self.hello.ext else None)  # fmt: skip

    def send(self, *frames: ServerFrame) -> bytes:
        """The bytes for ``frames``, in one piece. After the welcome line, with
        a codec negotiated, they are the next block-flushed piece of the stream."""
        head = b""
        lines = [_ENCODER.send(f) for f in frames]
        if self._deflater is None and self.codec is not None:
            for i, f in enumerate(frames):
                if type(f) is Welcome:
                    head, lines = b"".join(lines[: i + 1]), lines[i + 1 :]
                    self._deflater = RawDeflater()
                    break
        body = b"".join(lines)
        if self._deflater is not None and body:
            body = self._deflater.compress(body)
        return head + body

    def next_event(self) -> Hello | Document | Any | NeedData:
        """The next hello or document; raises ``ProtocolError`` for a bad frame.

        After a non-fatal error the caller reports it and calls again.
        """
        try:
            if self._pending:
                return self._event(self._pending.popleft())
            while self._line_i < len(self._lines):
                line = self._lines[self._line_i]
                self._line_i += 1
                event = self._line_event(line)
                if event is not None:
                    return event
            frame = self._decoder.next_event()
            if frame is NEED_DATA:
                return NEED_DATA
            return self._event(frame)  # type: ignore[arg-type]
        except ProtocolError as exc:
            raise self._account(exc) from None

    def next_events(self, out: list[Any], limit: int | None = None) -> None:
        """Append to ``out`` every event the complete lines buffered now make
        (hellos, and documents as the ``document`` factory builds them: the
        caller types its list by that factory).

        Raises ``ProtocolError`` at a bad line: the events before it are
        already in ``out``, and the next call carries on after it (as with
        ``next_event``). Stops after a bye; a further call rejects what
        follows it. ``limit``: stop after the piece of lines (at most
        ``SPLIT_BYTES``), or the batch line, in which ``out`` reached this
        many events; the next call carries on (a caller that must yield now
        and then calls until ``out`` gets nothing).
        """
        try:
            self._next_events(out, limit)
        except ProtocolError as exc:
            raise self._account(exc) from None

    # -- internals -------------------------------------------------------------

    def _next_events(self, out: list[Event | Any], limit: int | None) -> None:
        self._drain(out)
        # The decoder hands lines over in bounded pieces: take every piece
        # buffered now (a peer waiting for its ack sends nothing more). A
        # line over the limit, or a broken stream, ends the pieces with its
        # error: raised now, after the lines before it, not at the next read.
        ended = self.ended  # after a bye, what follows is rejected line by line
        while True:
            if self._line_i >= len(self._lines):
                self._lines = self._decoder.next_lines()
                self._line_i = 0
                if not self._lines:
                    return
                self._check_lines = lines_need_limit_check(self._lines)
            self._take_lines(out, limit)
            if self.ended and not ended:
                return  # stop at a bye
            if limit is not None and len(out) >= limit:
                return

    def _take_lines(self, out: list[Event | Any], limit: int | None = None) -> None:
        """Events from the lines of the current piece, until it is used up
        (or a bye, or a hello that starts a zstd stream and resets it, or a
        batch line that takes ``out`` to ``limit``: a piece of batches holds
        ~3x the samples of a piece of deltas, and the caller's runs are meant
        to be alike whatever the encoding)."""
        lines = self._lines
        i = self._line_i
        n = len(lines)
        loads = orjson.loads
        append = out.append
        make = self._document
        check = self._check_lines
        batch = BATCH in self.ext
        while i < n:
            reasm = self.reassembler
            if reasm is None or self.ended:
                i = self._line_i = i + 1
                event = self._line_event(lines[i - 1])
                if event is not None:
                    append(event)
                    if self.ended:
                        return
                    if self._lines is not lines:  # the hello started a zstd stream
                        return
                continue
            chains = reasm.chains
            session, host, tags = reasm.session, reasm.host, reasm.tags
            last_seq = reasm.last_seq
            try:
                while i < n:
                    line = lines[i]
                    i += 1
                    if not line:
                        continue  # blank: cheaper here than as orjson's error
                    d = None
                    # Only a line that opens an object is tried here: a failed
                    # parse (a blank line, say) costs ~6 us in orjson's error.
                    if line[0] == 0x7B:
                        try:
                            d = loads(line)
                        except orjson.JSONDecodeError:
                            pass
                    if type(d) is dict and d.get("t") == "delta":
                        seq = d.get("seq")
                        ts = d.get("ts")
                        name = d.get("name")
                        patch = d.get("data")
                        # Only the common, valid shape: NaN and the infinities
                        # fail the range test, anything unusual takes the
                        # reference path below and gets its exact error.
                        if (
                            type(seq) is int
                            and seq > last_seq
                            and type(ts) is float
                            and TS_MIN <= ts <= TS_MAX
                            and type(name) is str
                            and 0 < len(name) <= MAX_NAME_CHARS
                            and type(patch) is dict
                            and (base := chains.get(name)) is not None
                            and not (check and line_needs_limit_check(line))
                        ):
                            data = chains[name] = apply_patch(base, patch)
                            last_seq = seq
                            append(make(session, seq, "sample", name, ts, host, tags, data))
                            continue
                    reasm.last_seq = last_seq
                    self._line_i = i
                    if (
                        type(d) is dict
                        and d.get("t") == "batch"
                        and batch
                        and not (check and not batch_line_within_limits(line))
                    ):
                        try:
                            if self._fast_batch(d, reasm, out):
                                self._drain(out)  # the rest of a batch a sample broke
                                if limit is not None and len(out) >= limit:
                                    return
                                continue
                        finally:
                            last_seq = reasm.last_seq
                    try:
                        if type(d) is dict and not (check and line_needs_limit_check(line)):
                            # Parsed already, and no integer literal on it can
                            # be out of range: what _line_event does, once.
                            event = self._event(client_frame_from_dict(d))
                        else:
                            event = self._line_event(line)
                        if event is not None:
                            append(event)
                            if self.ended:
                                return
                            self._drain(out)  # the rest of a batch
                    finally:
                        last_seq = reasm.last_seq
            finally:
                if not self.ended:
                    reasm.last_seq = last_seq
                self._line_i = i

    def _fast_batch(self, d: dict[str, Any], reasm: Reassembler, out: list[Event | Any]) -> bool:
        """A batch in the common, valid shape, its samples reassembled inline
        (no ``Batch`` or ``CDelta`` frames, no second walk of the data: the
        caller has passed the line's limit check). False, with nothing done,
        for any other shape: the reference path then gives its exact error.

        From a sample that fails (no base, a sum out of int64, a document the
        factory refuses) on, the rest go to ``_pending`` as frames, where the
        reference path rejects that one with its seq and takes the others.
        """
        seq, ts, dts, names, patches = (
            d.get("seq"), d.get("ts"), d.get("dts"), d.get("name"), d.get("data")
        )  # fmt: skip
        if not (
            type(seq) is int
            and seq > reasm.last_seq
            and type(ts) is float
            and TS_MIN <= ts <= TS_MAX
            and type(patches) is list
            and 0 < (n := len(patches)) <= MAX_BATCH_SAMPLES
            and type(dts) is list
            and len(dts) == n - 1
            and type(names) is list
            and 0 < len(names) <= n
            and all(type(x) is dict for x in patches)
            and all(type(x) is int for x in dts)
            and all(type(x) is str and 0 < len(x) <= MAX_NAME_CHARS for x in names)
        ):
            return False
        times = batch_ts(ts, dts)
        if not all(TS_MIN <= t <= TS_MAX for t in times):
            return False
        chains, make, cycle = reasm.chains, self._document, len(names)
        session, host, tags = reasm.session, reasm.host, reasm.tags
        rest = n  # the first sample left to the reference path
        for i, patch in enumerate(patches):
            name = names[i % cycle]
            base = chains.get(name)
            if base is None:
                rest = i
                break
            try:
                data = apply_counter_patch(base, patch)
            except BadFrame:
                rest = i
                break
            chains[name] = data
            reasm.last_seq = seq + i
            try:
                out.append(make(session, seq + i, "sample", name, times[i], host, tags, data))
            except ProtocolError:
                self._pending.extend(_cdeltas(seq, times, names, patches, i + 1))
                raise
        self._pending.extend(_cdeltas(seq, times, names, patches, rest))
        return True

    def _drain(self, out: list[Event | Any]) -> None:
        """The events of a batch's remaining frames (raises at a rejected one)."""
        pending = self._pending
        while pending:
            out.append(self._event(pending.popleft()))

    def _line_event(self, line: bytearray) -> Event | Any | None:
        """The reference path for one line: its event, or None if it is blank."""
        if not line or not line.strip(_BLANK):
            return None
        return self._event(client_frame_from_dict(_loads_object(line)))

    def _event(self, frame: ClientFrame) -> Event | Any:
        if self.reassembler is None:
            if type(frame) is not Hello:
                raise BadHello("the first frame must be a hello")
            self.hello = frame
            self.reassembler = Reassembler.for_hello(frame)
            ext = [e for e in frame.ext if e in self._accept_ext]
            if BATCH in ext and COUNTER not in ext:
                ext.remove(BATCH)  # a batch carries counter patches
            self.ext = tuple(ext)
            self.reassembler.counter = COUNTER in self.ext
            self.codec = choose_codec(frame.compress, self._accept)
            if self.codec is not None:
                # Everything after the hello line is the client's zstd stream;
                # lines already split off behind it go back to be inflated.
                rest = self._lines[self._line_i :]
                self._lines, self._line_i = [], 0
                self._decoder.start_inflating(b"\n".join(rest) + b"\n" if rest else b"")
            return frame
        if self.ended:
            raise BadFrame("the session already ended with a bye", seq=getattr(frame, "seq", None))
        if type(frame) is Batch:
            if BATCH not in self.ext:
                raise UnknownType("batch needs the batch extension (hello.ext)", seq=frame.seq)
            self._pending.extend(expand_batch(frame))
            frame = self._pending.popleft()
        doc = self.reassembler.feed(frame)
        if type(frame) is Bye:
            self.ended = True
        if self._document is Document:
            return doc
        return self._document(doc.session, doc.seq, doc.kind, doc.name, doc.ts, doc.host,
                              doc.tags, doc.data)  # fmt: skip

    def _account(self, exc: ProtocolError) -> ProtocolError:
        """Apply hello-first and the error budget to a rejected frame."""
        if self.reassembler is None and not exc.fatal:
            # Nothing but a valid hello may open a connection.
            return BadHello(f"the first frame must be a valid hello ({exc.msg})")
        if not exc.fatal:
            self.errors += 1
            if self.errors > self.max_errors:
                return TooManyErrors(
                    f"more than {self.max_errors} rejected frames on this connection",
                    seq=exc.seq,
                )
        return exc


def _cdeltas(
    seq: int, times: list[float], names: list[str], patches: list[dict[str, Any]], start: int
) -> list[CDelta]:
    """The ``cdelta`` frames of a batch's samples from index ``start`` on."""
    cycle = len(names)
    return [CDelta(seq + j, times[j], names[j % cycle], patches[j])
            for j in range(start, len(patches))]  # fmt: skip
