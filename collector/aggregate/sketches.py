"""Quantile sketches merged for one answer, with numpy (query side only: the
ingest processes never import numpy).

The bins of every sketch added are kept as arrays (packed ones unpacked all
at once from their bytes, see ``rollup._PACKED``) and summed per key once,
at the end.
A whole-history percentile at 10M samples merges ~2,800 hour sketches of
~115 bins: decoded into dicts and merged dict by dict in Python that took
~200 ms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from deltawire.collector.stores.rollup import _BINS, _HEAD, _MAPPING, _PACKED, _WIDTHS, Sketch

__all__ = ["SketchSum"]


class SketchSum:
    """Sketches merged into one, for its quantile (``Sketch.quantile``'s answer)."""

    __slots__ = ("_neg", "_packed", "_pos", "zero")

    def __init__(self) -> None:
        self.zero = 0
        self._pos = _BinArrays()
        self._neg = _BinArrays()
        #: packed sketches, unpacked all at once by ``_unpack`` (a struct
        #: call and a few slices per sketch cost ~5 us each: at 12,000
        #: sketches a query that was two thirds of its time)
        self._packed: list[bytes] = []

    def add(self, sketch: Sketch | bytes | str) -> None:
        """Add a sketch, or one packed (``Sketch.to_bytes``; JSON as written before)."""
        if isinstance(sketch, bytes) and sketch[:1] == _PACKED:
            self._packed.append(sketch)
            return
        if not isinstance(sketch, Sketch):
            sketch = Sketch.from_bytes(sketch)
        self.zero += sketch.zero
        self._pos.add_dict(sketch.pos)
        self._neg.add_dict(sketch.neg)

    def add_values(self, values: Sequence[float]) -> None:
        if values:
            sketch = Sketch()
            sketch.add_values(values)
            self.add(sketch)

    @staticmethod
    def unpack_all(sums: Sequence[SketchSum]) -> None:
        """Unpack the packed sketches of all of ``sums`` in one go (a query's
        answer buckets: numpy's per-call cost paid once, not per bucket)."""
        blobs: list[bytes] = []
        per_sum = np.zeros(len(sums), np.int64)
        for i, one in enumerate(sums):
            blobs += one._packed
            per_sum[i] = len(one._packed)
            one._packed = []
        if not blobs:
            return
        owner = np.repeat(np.arange(len(sums)), per_sum)  # each sketch's SketchSum
        zeros, pos, neg = _unpack(blobs)
        for i, zero in enumerate(np.bincount(owner, zeros, len(sums))):
            sums[i].zero += round(zero)
        cells = np.arange(1, len(sums))
        for side, bins in ((0, pos), (1, neg)):
            for keys, counts, sketch in bins:
                # (sketches come in order of their sum: so do their bins)
                cuts = np.searchsorted(owner[sketch], cells)
                for one, k, c in zip(sums, np.split(keys, cuts), np.split(counts, cuts),
                                     strict=True):  # fmt: skip
                    if len(k):
                        arrays = one._neg if side else one._pos
                        arrays.keys.append(k)
                        arrays.counts.append(c)

    def quantile(self, q: float) -> float | None:
        """As ``Sketch.quantile`` of all the sketches added merged into one."""
        if self._packed:
            SketchSum.unpack_all([self])
        pos_keys, pos_counts = self._pos.summed()
        neg_keys, neg_counts = self._neg.summed()
        n_neg = int(neg_counts.sum())
        total = n_neg + self.zero + int(pos_counts.sum())
        if total == 0:
            return None
        rank = q * (total - 1)
        if rank < n_neg:  # most negative (largest key) first
            at = int(np.searchsorted(np.cumsum(neg_counts[::-1]), rank, side="right"))
            return -_MAPPING.value(int(neg_keys[::-1][at]))
        if rank < n_neg + self.zero:
            return 0.0
        seen = np.cumsum(pos_counts) + (n_neg + self.zero)
        at = min(int(np.searchsorted(seen, rank, side="right")), len(pos_keys) - 1)
        return _MAPPING.value(int(pos_keys[at]))


class _BinArrays:
    """One side's bins (positive or negative) of many sketches, unsummed."""

    __slots__ = ("counts", "keys")

    def __init__(self) -> None:
        self.keys: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []

    def add_dict(self, bins: Mapping[int, int]) -> None:
        if bins:
            self.keys.append(np.fromiter(bins.keys(), np.int64, len(bins)))
            self.counts.append(np.fromiter(bins.values(), np.int64, len(bins)))

    def summed(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys ascending, their summed counts): every bin of every sketch."""
        if not self.keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        all_keys = np.concatenate(self.keys)
        low = int(all_keys.min())
        # A dense count per key from the lowest: keys of 1% bins span at most
        # ~70,000 (values from 1e-300 to 1e300), telemetry's a few hundred.
        dense = np.bincount(all_keys - low, np.concatenate(self.counts).astype(np.float64))
        present = np.flatnonzero(dense)
        return present + low, np.rint(dense[present]).astype(np.int64)


#: Byte width of each packed width code (``rollup._WIDTHS``), by its byte.
_WIDTH_OF: Final = np.zeros(256, np.int64)
for _code, _ in _WIDTHS:
    _WIDTH_OF[ord(_code)] = np.dtype(_code).itemsize


#: Bins unpacked: (keys, counts, the index of the sketch each came from).
_Bins = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _unpack(blobs: list[bytes]) -> tuple[np.ndarray, _Bins, _Bins]:
    """The bins of packed sketches (``rollup._PACKED``), all at once: their
    headers read as columns of one buffer, their arrays gathered by index.
    Returns each sketch's zero count, and the positive and negative bins."""
    buf = np.frombuffer(b"".join(blobs), np.uint8)
    lens = np.fromiter(map(len, blobs), np.int64, len(blobs))
    starts = np.cumsum(lens) - lens
    zeros = _le(buf, starts + 1, 8).astype(np.float64)  # (_HEAD: the tag byte, then the count)
    pos: _Bins = []
    neg: _Bins = []
    at = _unpack_side(buf, starts + _HEAD.size, pos)
    _unpack_side(buf, at, neg)
    return zeros, pos, neg


def _unpack_side(buf: np.ndarray, at: np.ndarray, into: _Bins) -> np.ndarray:
    """The bins packed at offsets ``at`` (``_BINS`` then the arrays) into
    ``into``; the offsets where they end."""
    first = _le(buf, at, 4).astype(np.uint32).view(np.int32).astype(np.int64)
    n = _le(buf, at + 4, 4).astype(np.int64)
    gap_w, count_w = _WIDTH_OF[buf[at + 8]], _WIDTH_OF[buf[at + 9]]
    gaps_at = at + _BINS.size
    counts_at = gaps_at + np.maximum(n - 1, 0) * gap_w
    widths = gap_w * 16 + count_w  # one number per (gap, count) width pair
    for pair in np.unique(widths[n > 0]):
        gw, cw = int(pair) // 16, int(pair) % 16
        pick = np.flatnonzero((n > 0) & (widths == pair))
        sizes = n[pick]
        gaps = _gather(buf, gaps_at[pick], sizes - 1, gw).astype(np.int64)
        counts = _gather(buf, counts_at[pick], sizes, cw)
        # Each sketch's keys: its first key plus the sum of its gaps so far.
        # One running sum over all: in front of each sketch's gaps goes the
        # step from the previous sketch's last key to its first key.
        ends = np.cumsum(sizes - 1)  # where each sketch's gaps end in ``gaps``
        summed = np.concatenate(([0], np.cumsum(gaps)))[ends]  # gaps summed up to there
        lasts = first[pick] + summed - np.concatenate(([0], summed[:-1]))  # each last key
        steps = first[pick] - np.concatenate(([0], lasts[:-1]))
        keys = np.cumsum(np.insert(gaps, ends - (sizes - 1), steps))
        into.append((keys, counts, np.repeat(pick, sizes)))
    return counts_at + n * count_w


def _gather(buf: np.ndarray, at: np.ndarray, sizes: np.ndarray, width: int) -> np.ndarray:
    """Arrays of ``sizes`` little-endian ``width``-byte numbers at offsets ``at``, joined."""
    total = int(sizes.sum())
    if not total:
        return np.zeros(0, np.uint8)
    begins = np.cumsum(sizes) - sizes
    # (32-bit offsets where they fit: half the memory to go through)
    kind = np.int32 if len(buf) < 2**31 else np.int64
    offsets = np.repeat((at - begins * width).astype(kind), sizes)
    offsets += np.arange(0, total * width, width, dtype=kind)
    return _le(buf, offsets, width)


def _le(buf: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The little-endian unsigned ``width``-byte numbers at offsets ``at``."""
    if width == 1:  # (most gaps and counts: no 64-bit shifts)
        return buf[at]
    out = buf[at].astype(np.uint64)
    for k in range(1, width):
        out |= buf[at + k].astype(np.uint64) << np.uint64(8 * k)
    return out
