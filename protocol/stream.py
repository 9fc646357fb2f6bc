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


class Inflater:
    """One direction's decompressor; ``feed`` hands the output to a sink.

    Input goes in slices of ``INFLATE_SLICE_BYTES``: one slice can inflate to
    at most a few MiB (zstd's best case is ~128 KiB from 4 bytes), and the sink
    sees each slice's output at once, so it can stop a bomb (by raising: the
    exception propagates out of ``feed``) before it is big. A corrupt stream,
    or one that declares a window over ``MAX_WINDOW_LOG``, raises ``BadStream``.
    The sink is passed to each ``feed``, not kept: a kept bound method of its
    owner would make owner and inflater a reference cycle, which only the
    cyclic GC frees (the collector runs it rarely), so a closed connection's
    buffers would outlive it.
    """

    __slots__ = ("_obj",)

    def __init__(self) -> None:
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
        # decompressobj drains the decompressor's own buffer on every call (a
        # stream_writer can leave the end of a block inside it until more
        # input comes, which for a peer waiting for an ack is never).
        self._obj = dctx.decompressobj(write_size=INFLATE_PIECE_BYTES)

    def feed(
        self, data: bytes | bytearray | memoryview, sink: Callable[[bytes], object], budget: int = 0
    ) -> None:
        """``budget``: how many bytes of output the sink takes before it
        refuses the stream (0: unknown, every slice narrow)."""
        view = memoryview(data)
        i, n = 0, len(view)
        try:
            while i < n:
                # the blocks the budget covers (less one begun), 4 bytes each
                step = min(max(((budget >> MAX_WINDOW_LOG) - 1) << 2, INFLATE_SLICE_BYTES),
                           INFLATE_MAX_SLICE_BYTES)  # fmt: skip
                out = self._obj.decompress(view[i : i + step])
                i += step
                if out:
                    budget -= len(out)
                    sink(out)
        except zstandard.ZstdError as exc:
            raise BadStream(
                f"not a valid zstd stream (window at most 2^{MAX_WINDOW_LOG}): {exc}"
            ) from None
