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
    "CODECS",
    "INFLATE_PIECE_BYTES",
    "INFLATE_SLICE_BYTES",
    "MAX_SLICE_INFLATE",
    "MAX_WINDOW_LOG",
    "ZSTD",
    "Deflater",
    "Inflater",
    "choose_codec",
]

ZSTD: Final = "zstd"

#: The stream codecs this side speaks, in its order of preference.
CODECS: Final = (ZSTD,)

#: The largest zstd window a receiver accepts, and the one senders use: 2^16
#: (64 KiB) holds ~250 recorded samples of history, where nearly all of the
#: ratio comes from (2^17 measured the same 42.9 B/sample on the recording,
#: 2^15 43.3), and keeps a collector's decompression context near 64 KiB +
#: 64 KiB of block buffer per connection. A stream that declares a larger
#: window is refused (bad_stream) before anything is allocated for it.
MAX_WINDOW_LOG: Final = 16

#: The decompressor's output buffer: the size of the pieces it joins per slice.
INFLATE_PIECE_BYTES: Final = 65536

#: Compressed input is inflated this many bytes at a time, and the output of
#: each slice checked before the next: zstd's most compressible block (RLE)
#: is 4 bytes for 128 KiB, so one slice inflates to at most 16 x 128 KiB =
#: 2 MiB (``MAX_SLICE_INFLATE``). Real traffic is ~20-50 compressed bytes a
#: sample, so a 64 KiB read is 1024 calls (~0.3 us per sample).
INFLATE_SLICE_BYTES: Final = 64
MAX_SLICE_INFLATE: Final = (INFLATE_SLICE_BYTES // 4) << 17

#: The agent's compression level. Measured on the recording at push_every 4
#: (batch + counter, window 2^16): level 3 38.5 B/sample at 1.9 us/sample,
#: 12 30.6 at 7.5 us, 16 29.4 at 36 us, 19 30.0 at 78 us. An agent sends a few
#: samples a second, so 36 us each is ~0.01% of a core for a quarter fewer
#: bytes; a raw-content dictionary of the key names was measured worse (30.6).
AGENT_LEVEL: Final = 16
#: Level 16's own hash and chain tables are sized for large inputs (2^22+
#: entries, tens of MB); with a 2^16 window, 2^16 entries find the same
#: matches (same bytes on the recording) in ~0.5 MB.
_AGENT_TABLE_LOG: Final = 16

# The collector's outbound stream carries only acks, flow and errors: a tiny
# window and tables keep its per-connection compression context a few KiB
# (level 3's tables alone are ~1 MB, 1 GB over a thousand connections).
_SMALL: Final = zstandard.ZstdCompressionParameters(
    window_log=10, hash_log=6, chain_log=6, search_log=1, min_match=4,
    strategy=zstandard.STRATEGY_FAST, write_content_size=0, write_checksum=0,
)  # fmt: skip
# No content size, no checksum: a stream has no end, and TCP checks bytes.
_AGENT: Final = zstandard.ZstdCompressionParameters.from_level(
    AGENT_LEVEL, window_log=MAX_WINDOW_LOG, hash_log=_AGENT_TABLE_LOG,
    chain_log=_AGENT_TABLE_LOG, write_content_size=0, write_checksum=0,
)  # fmt: skip
_FLUSH_BLOCK: Final = zstandard.COMPRESSOBJ_FLUSH_BLOCK


def choose_codec(offered: tuple[str, ...], accepted: tuple[str, ...]) -> str | None:
    """The first codec of the client's offer that this side accepts, or None."""
    return next((c for c in offered if c in accepted), None)


class Deflater:
    """One direction's compressor. ``small`` for a side that sends little."""

    __slots__ = ("_obj",)

    def __init__(self, *, small: bool = False) -> None:
        params = _SMALL if small else _AGENT
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes) -> bytes:
        """``data`` as the next piece of the stream, block-flushed."""
        return self._obj.compress(data) + self._obj.flush(_FLUSH_BLOCK)


class Inflater:
    """One direction's decompressor; ``feed`` hands the output to ``sink``.

    Input goes in slices of ``INFLATE_SLICE_BYTES``: one slice can inflate to
    at most a few MiB (zstd's best case is ~128 KiB from 4 bytes), and the sink
    sees each slice's output at once, so it can stop a bomb (by raising: the
    exception propagates out of ``feed``) before it is big. A corrupt stream,
    or one that declares a window over ``MAX_WINDOW_LOG``, raises ``BadStream``.
    """

    __slots__ = ("_obj", "_sink")

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
        # decompressobj drains the decompressor's own buffer on every call (a
        # stream_writer can leave the end of a block inside it until more
        # input comes, which for a peer waiting for an ack is never).
        self._obj = dctx.decompressobj(write_size=INFLATE_PIECE_BYTES)
        self._sink = sink

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        try:
            for i in range(0, len(view), INFLATE_SLICE_BYTES):
                out = self._obj.decompress(view[i : i + INFLATE_SLICE_BYTES])
                if out:
                    self._sink(out)
        except zstandard.ZstdError as exc:
            raise BadStream(
                f"not a valid zstd stream (window at most 2^{MAX_WINDOW_LOG}): {exc}"
            ) from None
