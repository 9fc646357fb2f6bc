"""Quantile sketches merged for one answer, with numpy (query side only: the
ingest processes never import numpy).

The bins of every sketch added are kept as arrays (packed and dense ones
unpacked all at once from their bytes, see ``rollup._PACKED`` and
``rollup.DENSE``) and summed per key once, at the end; a query's answer
buckets are summed together, in one bincount over (answer bucket, key).
A whole-history percentile at 10M samples merges ~2,800 hour sketches of
~115 bins: decoded into dicts and merged dict by dict in Python that took
~200 ms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from deltawire.collector.stores.rollup import (
    _BINS,
    _HEAD,
    _MAPPING,
    _PACKED,
    _WIDTHS,
    DENSE,
    DENSE_HEAD,
    Sketch,
)

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
        if blobs:
            _add_unpacked(sums, np.repeat(np.arange(len(sums)), per_sum), blobs)

    @staticmethod
    def add_packed(sums: Sequence[SketchSum], owner: np.ndarray, sketches: Sequence[Any]) -> None:
        """Add ``sketches[i]`` (as ``add`` takes them; None: none) to
        ``sums[owner[i]]``: the packed and the dense ones (as stored now)
        unpacked all at once, any other one by one."""
        try:
            joined = b"".join(sketches)
        except TypeError:  # (None, or text: JSON as written before the packed form)
            joined = b""
        rest: list[int] = list(range(len(sketches)))
        if joined:
            buf = np.frombuffer(joined, np.uint8)
            lens = np.fromiter(map(len, sketches), np.int64, len(sketches))
            starts = np.cumsum(lens) - lens
            tags = buf[np.minimum(starts, len(buf) - 1)]
            dense = (tags == DENSE[0]) & (lens >= DENSE_HEAD.size)
            packed = (tags == _PACKED[0]) & (lens >= _SHORTEST_PACKED)
            if dense.all():
                _add_dense(sums, owner, sketches, buf)
            elif dense.any():
                pick = np.flatnonzero(dense)
                _add_dense(sums, owner[pick], [sketches[i] for i in pick.tolist()])
            if packed.all():
                _add_unpacked(sums, owner, sketches)
            elif packed.any():
                pick = np.flatnonzero(packed)
                _add_unpacked(sums, owner[pick], [sketches[i] for i in pick.tolist()])
            rest = np.flatnonzero(~(dense | packed)).tolist()
        for i in rest:
            if sketches[i] is not None:
                sums[owner[i]].add(sketches[i])

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

    __slots__ = ("counts", "keys", "summed_once")

    def __init__(self) -> None:
        self.keys: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        #: whether the one array pair held is summed already (``add_summed``)
        self.summed_once = False

    def add_dict(self, bins: Mapping[int, int]) -> None:
        if bins:
            self.keys.append(np.fromiter(bins.keys(), np.int64, len(bins)))
            self.counts.append(np.fromiter(bins.values(), np.int64, len(bins)))
            self.summed_once = False

    def add_summed(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Bins with keys ascending, each once (``_summed_by_owner``)."""
        self.summed_once = not self.keys
        self.keys.append(keys)
        self.counts.append(counts)

    def summed(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys ascending, their summed counts): every bin of every sketch."""
        if not self.keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self.summed_once:  # (a percentile's answer buckets: summed all at once)
            return self.keys[0], self.counts[0]
        all_keys = np.concatenate(self.keys)
        low = int(all_keys.min())
        # A dense count per key from the lowest: keys of 1% bins span at most
        # ~70,000 (values from 1e-300 to 1e300), telemetry's a few hundred.
        dense = np.bincount(all_keys - low, np.concatenate(self.counts).astype(np.float64))
        present = np.flatnonzero(dense)
        return present + low, np.rint(dense[present]).astype(np.int64)


def _add_unpacked(sums: Sequence[SketchSum], owner: np.ndarray, blobs: Sequence[bytes]) -> bool:
    """Add packed sketch ``blobs[i]`` to ``sums[owner[i]]``, the bins summed
    per (sum, key) in one bincount; False (nothing added) where one is not
    packed (``rollup._PACKED``)."""
    zeros, pos, neg = _unpack(blobs)
    if zeros is None:
        return False
    _add_runs(sums, owner, zeros, pos, neg)
    return True


def _add_runs(
    sums: Sequence[SketchSum], owner: np.ndarray, zeros: np.ndarray, pos: list[_Run],
    neg: list[_Run],
) -> None:  # fmt: skip
    """Add unpacked sketches (their zero counts and bins) to their owners."""
    for i, zero in enumerate(np.bincount(owner, zeros, len(sums)).tolist()):
        sums[i].zero += round(zero)
    for runs, side in ((pos, "_pos"), (neg, "_neg")):
        if runs:
            for one, keys, counts in zip(sums, *_summed_by_owner(runs, owner, len(sums)),
                                         strict=True):  # fmt: skip
                if len(keys):
                    getattr(one, side).add_summed(keys, counts)


#: ``rollup.DENSE_HEAD`` as numpy reads it: every head of a read in one call.
_DENSE_DTYPE: Final = np.dtype(
    [("tag", "u1"), ("width", "u1"), ("_", "V2"), ("pos_n", "<u4"), ("zero", "<u8"),
     ("pos_first", "<i4"), ("neg_first", "<i4"), ("neg_n", "<u4"), ("__", "V4")]
)  # fmt: skip
assert _DENSE_DTYPE.itemsize == DENSE_HEAD.size
#: The shortest packed sketch: its head and two empty sides.
_SHORTEST_PACKED: Final = _HEAD.size + 2 * _BINS.size


def _add_dense(
    sums: Sequence[SketchSum], owner: np.ndarray, blobs: Sequence[bytes],
    joined: np.ndarray | None = None,
) -> None:  # fmt: skip
    """Add dense sketches (``rollup.DENSE``; ``joined``: them joined, if at
    hand) to ``sums[owner[i]]``: their heads read at once, the counts of all
    of one width one array with the heads left out, each side's keys its
    first key plus the place in it."""
    buf = np.frombuffer(b"".join(blobs), np.uint8) if joined is None else joined
    lens = np.fromiter(map(len, blobs), np.int64, len(blobs))
    at_head = (np.cumsum(lens) - lens)[:, None] + np.arange(DENSE_HEAD.size)
    head = buf[at_head].view(_DENSE_DTYPE)[:, 0]
    pos: list[_Run] = []
    neg: list[_Run] = []
    widths = head["width"]
    codes = np.unique(widths).tolist()
    for code in codes:
        if len(codes) == 1:  # (the usual case)
            pick, counts = np.arange(len(blobs)), np.ones(len(buf), bool)
            counts[at_head.ravel()] = False
            values = buf[counts]
        else:
            pick = np.flatnonzero(widths == code)
            values = np.frombuffer(
                b"".join(blobs[i][DENSE_HEAD.size :] for i in pick.tolist()), np.uint8
            )
        values = values.view(np.dtype(chr(code)).newbyteorder("<"))
        pos_n = head["pos_n"][pick].astype(np.int64)
        neg_n = head["neg_n"][pick].astype(np.int64)
        if len(values) != int(pos_n.sum() + neg_n.sum()):
            raise ValueError("a dense sketch's counts do not match its head")
        row_at = np.cumsum(pos_n + neg_n) - pos_n - neg_n
        sides = (
            (pos_n, head["pos_first"][pick], row_at, not neg_n.any(), pos),
            (neg_n, head["neg_first"][pick], row_at + pos_n, not pos_n.any(), neg),
        )
        for n, first, at, alone, into in sides:
            total = int(n.sum())
            if not total:
                continue
            begins = np.cumsum(n) - n
            place = np.arange(total)
            # (one side alone: its counts are all of ``values``, in order)
            side = values if alone else values[np.repeat(at - begins, n) + place]
            has = n > 0
            first = first.astype(np.int64)
            low, high = int(first[has].min()), int((first + n - 1)[has].max())
            into.append(_Run(pick, n, place, first - begins, side, low, high))
    _add_runs(sums, owner, head["zero"].astype(np.float64), pos, neg)


#: Cells (sums x keys from the lowest to the highest) summed in one dense
#: bincount: 8 bytes each, 32 MiB at most. "p99 every 10 minutes" over a day
#: is ~130 x ~150. Past it (keys spread over a wide range of magnitudes in
#: many buckets) the (sum, key) pairs present are sorted instead: slower, as
#: large as the bins.
DENSE_CELLS: Final = 1 << 22


def _summed_by_owner(
    runs: list[_Run], owner: np.ndarray, n_owners: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each owner's bins summed: (keys ascending, counts) per owner, from
    the bins of all sketches of ``runs`` (``owner``: each sketch's owner)."""
    low = min(run.low for run in runs)
    span = max(run.high for run in runs) - low + 1
    cells = [run.cells(owner[run.sketch] * span - low) for run in runs]
    weights = [run.counts for run in runs]
    cell = cells[0] if len(cells) == 1 else np.concatenate(cells)
    weight = (weights[0] if len(weights) == 1 else np.concatenate(weights)).astype(np.float64)
    if n_owners * span <= DENSE_CELLS:
        dense = np.bincount(cell, weight, n_owners * span)
        present = np.flatnonzero(dense)
        total = dense[present]
    else:
        present, where = np.unique(cell, return_inverse=True)
        total = np.bincount(where, weight)
    # (cells come in order of their owner: owner * span + key - low)
    cuts = np.searchsorted(present, np.arange(1, n_owners) * span)
    keys = np.split(present % span + low, cuts)
    counts = np.split(np.rint(total).astype(np.int64), cuts)
    return keys, counts


#: Byte width of each packed width code (``rollup._WIDTHS``), by its byte.
_WIDTH_OF: Final = np.zeros(256, np.int64)
for _code, _ in _WIDTHS:
    _WIDTH_OF[ord(_code)] = np.dtype(_code).itemsize


@dataclass(frozen=True, slots=True)
class _Run:
    """The bins of some sketches packed with the same widths, unpacked: each
    sketch's keys are ``steps``' running sum plus its ``base``."""

    #: the sketches (indices into the blobs unpacked), and their bin counts
    sketch: np.ndarray
    sizes: np.ndarray
    #: every bin's running sum of key gaps (0 at each sketch's first bin)
    steps: np.ndarray
    #: per sketch: its first key minus ``steps`` at its first bin
    base: np.ndarray
    counts: np.ndarray
    #: the lowest and the highest key
    low: int
    high: int

    def cells(self, offset: np.ndarray) -> np.ndarray:
        """Every bin's key plus its sketch's ``offset``."""
        cells = np.repeat(self.base + offset, self.sizes)
        cells += self.steps  # (in place: one pass over the bins less)
        return cells


def _unpack(blobs: Sequence[bytes]) -> tuple[np.ndarray | None, list[_Run], list[_Run]]:
    """The bins of packed sketches (``rollup._PACKED``), all at once: their
    headers read as columns of one buffer, their arrays gathered by index.
    Returns each sketch's zero count (None: one is not packed), and the
    positive and negative bins."""
    buf = np.frombuffer(b"".join(blobs), np.uint8)
    lens = np.fromiter(map(len, blobs), np.int64, len(blobs))
    starts = np.cumsum(lens) - lens
    if (lens < _SHORTEST_PACKED).any() or (buf[starts] != _PACKED[0]).any():
        return None, [], []
    zeros = _le(buf, starts + 1, 8).astype(np.float64)  # (_HEAD: the tag byte, then the count)
    pos: list[_Run] = []
    neg: list[_Run] = []
    at = _unpack_side(buf, starts + _HEAD.size, pos)
    _unpack_side(buf, at, neg)
    return zeros, pos, neg


def _unpack_side(buf: np.ndarray, at: np.ndarray, into: list[_Run]) -> np.ndarray:
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
        begins = np.cumsum(sizes) - sizes
        # Each sketch's gaps from one width before them (inside _BINS): one
        # number per bin, the first a stand-in, zeroed. Its running sum over
        # all sketches, less its value at each sketch's first bin, plus that
        # sketch's first key, is every key: no array is cut or spliced.
        steps = _gather(buf, gaps_at[pick] - gw, sizes, gw).astype(np.int64)
        steps[begins] = 0
        np.cumsum(steps, out=steps)
        base = first[pick] - steps[begins]
        high = int((steps[begins + sizes - 1] + base).max())
        counts = _gather(buf, counts_at[pick], sizes, cw)
        into.append(_Run(pick, sizes, steps, base, counts, int(first[pick].min()), high))
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
