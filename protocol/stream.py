"""Negotiated stream compression: one zstd stream per direction, sans-IO.

After the welcome line, every byte in each direction is ONE zstd stream
(RFC 8878) carrying the same NDJSON lines. ``Deflater`` is a sender's half:
each ``compress`` call returns a block-flushed piece, so what was handed to it
is decodable by the peer as soon as those bytes arrive (the "flush before each
wait" rule), while the context (the window) carries over between calls; that
shared history is where the ratio comes from. ``Inflater`` is a receiver's
half: it hands decompressed bytes to a sink in bounded pieces, so a stream
that inflates without bound (a zstd bomb) is stopped by the sink, never
buffered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import zstandard

from .errors import BadStream

__all__ = [
    "AGENT_WINDOW_LOG",
    "CODECS",
    "INFLATE_PIECE_BYTES",
    "INFLATE_SLICE_BYTES",
    "MAX_SLICE_INFLATE",
    "MAX_WINDOW_LOG",
    "ZSTD",
    "Deflater",
    "Inflater",
    "RawDeflater",
    "choose_codec",
]

ZSTD: Final = "zstd"

#: The stream codecs this side speaks, in its order of preference.
CODECS: Final = (ZSTD,)

#: The largest zstd window a receiver accepts: 2^16 (64 KiB) holds ~250
#: recorded samples of history, where nearly all of the ratio comes from
#: (2^17 measured the same bytes on the recording), and bounds a collector's
#: decompression context to ~64 KiB of window + 64 KiB of block buffer + 96
#: KiB per connection. A stream that declares a larger window is refused
#: (bad_stream) before anything is allocated for it.
MAX_WINDOW_LOG: Final = 16

#: The decompressor's output buffer: the size of the pieces it joins per slice.
INFLATE_PIECE_BYTES: Final = 65536

#: Compressed input is inflated this many bytes at a time, and the output of
#: each slice checked before the next: zstd's most compressible block (RLE)
#: is 4 bytes for 128 KiB, so one slice inflates to at most 4 x 128 KiB =
#: 512 KiB (``MAX_SLICE_INFLATE``): what a bomb can add past the cap before
#: it is seen (64-byte slices allowed 2 MiB, and ten bombs at once left the
#: collector's RSS 36 MB higher). Real traffic is ~30 compressed bytes a
#: sample, so a 64 KiB read is 4096 calls (~0.5 us per sample).
INFLATE_SLICE_BYTES: Final = 16
MAX_SLICE_INFLATE: Final = (INFLATE_SLICE_BYTES // 4) << 17
#: Slices are wider while what the caller still accepts (``feed``'s
#: ``budget``) covers a slice's worst case, so a bomb still stops within its
#: cap (the last of it in narrow slices): 4 bytes of RLE block per block of
#: output, plus one block already begun, a block being at most the window
#: (RFC 8878: the smaller of the window and 128 KiB), so 64 KiB here. Real
#: traffic inflates ~10x: a 64 KiB read (a 4 MiB budget) goes in ~250-byte
#: slices, ~260 calls instead of 4,096 (~0.7 -> ~0.3 us a sample on the
#: recording, a third of what zstd ingest cost over plain); wider ones
#: measured no cheaper.
INFLATE_MAX_SLICE_BYTES: Final = 256

#: The agent's compression level. Measured on the recording at push_every 4
#: (batch + counter, window 2^16): level 3 38.5 B/sample at 1.9 us/sample,
#: 12 30.6 at 7.5 us, 16 29.4 at 36 us, 19 30.0 at 78 us. An agent sends a few
#: samples a second, so 36 us each is ~0.01% of a core for a quarter fewer
#: bytes; a raw-content dictionary of the key names was measured worse (30.6).
AGENT_LEVEL: Final = 16
#: Level 16's own hash and chain tables are sized for large inputs (2^22+
#: entries, tens of MB); with a 2^15-2^16 window, 2^16 entries find the same
#: matches (same bytes on the recording) in ~0.5 MB.
_AGENT_TABLE_LOG: Final = 16

# The collector's outbound stream carries only acks, flow and errors: see
# ``RawDeflater``, which needs no compression context at all.
_RAW_WINDOW_LOG: Final = 10  # zstd's smallest window (1 KiB)
#: Frame header: magic, a descriptor with no content size, no checksum, no
#: dictionary, not single-segment, then the window descriptor (2^10: 0x00).
_RAW_FRAME_HEADER: Final = b"\x28\xb5\x2f\xfd\x00" + bytes([(_RAW_WINDOW_LOG - 10) << 3])
#: A block is at most the window (RFC 8878, Block_Maximum_Size).
_RAW_BLOCK_BYTES: Final = 1 << _RAW_WINDOW_LOG
# No content size, no checksum: a stream has no end, and TCP checks bytes.
#: The window the agent compresses with: half the cap. A collector holds one
#: decompression context per connection, ~window + block buffers + 96 KiB:
#: measured ~165 KiB at 2^16 and ~102 KiB at 2^15 on a long-lived stream, for
#: 29.3 vs 29.9 B/sample on the recording (push_every 4): 2^15 is what keeps a
#: thousand sessions under 300 MB. The cap stays 2^16, so older agents that
#: compress with 2^16 are still accepted.
AGENT_WINDOW_LOG: Final = 15
_AGENT: Final = zstandard.ZstdCompressionParameters.from_level(
    AGENT_LEVEL, window_log=AGENT_WINDOW_LOG, hash_log=_AGENT_TABLE_LOG,
    chain_log=_AGENT_TABLE_LOG, write_content_size=0, write_checksum=0,
)  # fmt: skip
_FLUSH_BLOCK: Final = zstandard.COMPRESSOBJ_FLUSH_BLOCK


def choose_codec(offered: tuple[str, ...], accepted: tuple[str, ...]) -> str | None:
    """The first codec of the client's offer that this side accepts, or None."""
    return next((c for c in offered if c in accepted), None)


class Deflater:
    """One direction's compressor (the agent's)."""

    __slots__ = ("_obj",)

    def __init__(self) -> None:
        self._obj = zstandard.ZstdCompressor(compression_params=_AGENT).compressobj()

    def compress(self, data: bytes) -> bytes:
        """``data`` as the next piece of the stream, block-flushed."""
        return self._obj.compress(data) + self._obj.flush(_FLUSH_BLOCK)


class RawDeflater:
    """A zstd stream of raw (stored) blocks: the collector's side.

    What the collector sends (acks, flow, errors) is a few dozen bytes a
    second; compressing it would save ~10 bytes an ack, and a compression
    context costs ~32 KiB a connection (32 MB over a thousand). Raw blocks
    are valid zstd (RFC 8878 section 3.1.1.2.2), so the peer's decompressor
    reads them like any others, and they cost 3 bytes a block and no memory.
    The frame declares zstd's smallest window, so the peer's context for
    this direction is small too.
    """

    __slots__ = ("_started",)

    def __init__(self) -> None:
        self._started = False

    def compress(self, data: bytes) -> bytes:
        """``data`` as the next piece of the stream (whole raw blocks)."""
        out = [] if self._started else [_RAW_FRAME_HEADER]
        self._started = True
        for i in range(0, len(data), _RAW_BLOCK_BYTES):
            block = data[i : i + _RAW_BLOCK_BYTES]
            # Block header: Last_Block 0, Block_Type 0 (raw), Block_Size.
            out.append((len(block) << 3).to_bytes(3, "little"))
            out.append(block)
        return b"".join(out)


#: The most one zstd block inflates to: RFC 8878's Block_Maximum_Size, the
#: smaller of the frame's window and 128 KiB (zstd refuses a block past it:
#: "destination buffer is too small"). 128 KiB until the window is read, and
#: for a single-segment frame (whose window is its content size).
BLOCK_OUT_MAX: Final = 128 << 10
_FRAME_MAGIC: Final = b"\x28\xb5\x2f\xfd"
#: Frame header bytes after magic and descriptor, by Dictionary_ID_flag and by
#: Frame_Content_Size_flag (RFC 8878 section 3.1.1.1).
_DID_BYTES: Final = (0, 1, 2, 4)
_FCS_BYTES: Final = (0, 2, 4, 8)
_RAW, _RLE, _COMPRESSED = 0, 1, 2
# Where _Framing is: a header (the frame's, then each block's), a block's
# content, or lost (anything it does not follow: it bounds nothing more).
_FRAME_HEAD, _BLOCK_HEAD, _CONTENT, _LOST = range(4)
_NO_LIMIT: Final = 1 << 62


class _Framing:
    """Follows a zstd stream's framing (RFC 8878 section 3.1.1: the frame
    header, then block headers and contents) so that a run of input can be
    bounded by what it may inflate to without inflating it: a raw or RLE
    block inflates to exactly its Block_Size, a compressed one to at most
    ``BLOCK_OUT_MAX``. The end of the frame (a checksum, another frame), a
    skippable frame or a reserved block type make it give up for good: the
    inflater then slices narrowly, as it did before it followed blocks.

    Why: sliced narrowly whatever the input, a 5 KB read (a session's 200
    samples, or a 1,000-session collector's typical read) took ~330
    decompress calls, ~1.5-2 us a sample, ~15% of the collector's ingest
    CPU; in whole blocks it is one or two calls.
    """

    __slots__ = ("_block_max", "_head", "_last", "_need", "_open", "_phase")

    def __init__(self) -> None:
        self._block_max = BLOCK_OUT_MAX  # what a compressed block may inflate to
        self._phase = _FRAME_HEAD
        self._head = bytearray()  # the bytes of the header being read, so far
        self._need = 5  # bytes of the current header or content still to come
        self._open = 0  # what the block whose content is being read may inflate to
        self._last = False  # that block is the frame's last

    def run(self, data: memoryview, i: int, n: int, budget: int) -> int:
        """The end ``j`` (``i <= j <= n``) of the longest run ``data[i:j]``
        whose blocks together inflate to at most ``budget``, stopping only
        before a block; the state moves over the run. ``i`` when the block
        at hand may already inflate past the budget, or when lost."""
        worst = self._open  # partly read before: its output may come now
        if self._phase == _LOST or worst > budget:
            return i
        while i < n:
            phase = self._phase
            if phase == _CONTENT:
                take = min(self._need, n - i)
                i += take
                self._need -= take
                if not self._need:
                    self._block_done()
                continue
            if phase == _LOST:
                return i
            head = self._head
            if phase == _BLOCK_HEAD:
                have = len(head)
                if n - i < 3 - have:  # a header cut by the read: nothing inflates yet
                    head += data[i:n]
                    return n
                h = int.from_bytes(head + data[i : i + 3 - have], "little")
                kind, size = (h >> 1) & 3, h >> 3
                out = self._block_max if kind == _COMPRESSED else size
                if worst + out > budget:
                    return i  # before it (or at the run's start, if begun earlier)
                i += 3 - have
                head.clear()
                if kind > _COMPRESSED:
                    self._phase = _LOST  # reserved: the decoder refuses it
                    return i
                worst += out
                self._open = out
                self._last = bool(h & 1)
                self._need = 1 if kind == _RLE else size
                self._phase = _CONTENT
                if not self._need:
                    self._block_done()
                continue
            # the frame header: nothing inflates from it
            take = min(self._need, n - i)
            head += data[i : i + take]
            i += take
            self._need -= take
            if not self._need:
                self._frame_head(head)
        return i

    def _frame_head(self, head: bytearray) -> None:
        if len(head) == 5:  # magic and descriptor: now its length is known
            fhd = head[4]
            if head[:4] != _FRAME_MAGIC or fhd & 0x08:  # not a frame, or reserved bit
                self._phase = _LOST
                return
            single = (fhd >> 5) & 1
            fcs = _FCS_BYTES[fhd >> 6] or single  # 1 byte when single segment
            self._need = (1 - single) + _DID_BYTES[fhd & 3] + fcs
            if self._need:
                return
        if not head[4] & 0x20:  # not single-segment: a Window_Descriptor follows
            exponent, mantissa = head[5] >> 3, head[5] & 7
            window = (1 << (10 + exponent)) + (1 << (7 + exponent)) * mantissa
            self._block_max = min(window, BLOCK_OUT_MAX)
        head.clear()
        self._phase, self._need = _BLOCK_HEAD, 3

    def _block_done(self) -> None:
        self._open = 0
        # After the last block come a checksum or another frame: not followed.
        self._phase, self._need = (_LOST, 0) if self._last else (_BLOCK_HEAD, 3)


class Inflater:
    """One direction's decompressor; ``feed`` hands the output to a sink.

    Input goes in runs that cannot inflate past what the sink still takes
    (``budget``): whole blocks, whose output is bounded by their headers
    (``_Framing``); a block that alone may exceed it goes in slices of
    ``INFLATE_SLICE_BYTES`` (one slice inflates to at most
    ``MAX_SLICE_INFLATE``), and the sink sees each call's output at once,
    so it can stop a bomb (by raising: the exception propagates out of
    ``feed``) before it is big. A corrupt stream, or one that declares a
    window over ``MAX_WINDOW_LOG``, raises ``BadStream``. The sink is passed
    to each ``feed``, not kept: a kept bound method of its owner would make
    owner and inflater a reference cycle, which only the cyclic GC frees (the
    collector runs it rarely), so a closed connection's buffers would outlive it.
    """

    __slots__ = ("_framing", "_obj")

    def __init__(self) -> None:
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
        # decompressobj drains the decompressor's own buffer on every call (a
        # stream_writer can leave the end of a block inside it until more
        # input comes, which for a peer waiting for an ack is never).
        self._obj = dctx.decompressobj(write_size=INFLATE_PIECE_BYTES)
        self._framing = _Framing()

    def feed(
        self, data: bytes | bytearray | memoryview, sink: Callable[[bytes], object], budget: int = 0
    ) -> None:
        """``budget``: how many bytes of output the sink takes before it
        refuses the stream (0: unknown, every block in narrow slices)."""
        view = memoryview(data)
        framing = self._framing
        i, n = 0, len(view)
        try:
            while i < n:
                j = framing.run(view, i, n, budget)
                if j == i:  # this block alone may pass the budget: narrowly
                    # the blocks the budget covers (less one begun), 4 bytes each
                    step = min(max(((budget >> MAX_WINDOW_LOG) - 1) << 2, INFLATE_SLICE_BYTES),
                               INFLATE_MAX_SLICE_BYTES)  # fmt: skip
                    j = min(i + step, n)
                    framing.run(view, i, j, _NO_LIMIT)
                out = self._obj.decompress(view[i:j])
                i = j
                if out:
                    budget -= len(out)
                    sink(out)
        except zstandard.ZstdError as exc:
            raise BadStream(
                f"not a valid zstd stream (window at most 2^{MAX_WINDOW_LOG}): {exc}"
            ) from None
