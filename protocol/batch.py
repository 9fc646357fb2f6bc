"""The "batch" extension: the ``cdelta`` frames of one push in one line.

Under zstd, what a ``cdelta`` line costs beyond its data is its frame: ``t``,
``seq``, a 14-digit ``ts`` and ``name``, ~5 of the ~30 bytes a sample costs on
the recording. A ``batch`` carries a run of ``cdelta`` frames with consecutive
seqs once: the first seq, the first ts, then for each later sample its ts as
milliseconds after the previous sample's (``dts``: ``[2, 998, 3, 997]``, which
a zstd window finds again in the next push), the names as the cycle they
repeat (``["process", "system"]`` for a push that alternates them: a list of
each name costs ~0.7 B a sample), and the counter patches, in order. It means exactly those ``cdelta`` frames, one after the
other: each is reassembled, stored, rejected (with its own seq) and
acknowledged as if it had come alone, so nothing about acks, errors or the
delta chain changes.

A batch only stands for timestamps it reproduces bit for bit: ``batch_ts``
is the one rule both ends use, and the sender checks every sample against it
before putting the sample in (``group_batches``); a sample whose ts the rule
does not give back starts a new run.

Laying the batch out by column (keys once, each leaf's values adjacent) was
measured too, on the recording at push_every 4: 30.5 B/sample against 29.7
for these rows, so the rows stay (zstd already finds the repeated keys).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

from .errors import BadFrame
from .frames import MAX_BATCH_SAMPLES, TS_MAX, TS_MIN, Batch, CDelta, ClientFrame

__all__ = ["batch_ts", "expand_batch", "group_batches"]

_MS: Final = 1000


def batch_ts(first: float, dts: tuple[int, ...] | list[int]) -> list[float]:
    """The timestamps of a batch's samples: the first, then each one ``dts``
    milliseconds after the one before, counted in whole milliseconds from the
    first rounded to a millisecond, and divided once (a correctly rounded
    int / int), so the result does not depend on how floats were added up."""
    out = [first]
    ms = round(first * _MS)
    for step in dts:
        ms += step
        out.append(ms / _MS)
    return out


def expand_batch(batch: Batch) -> list[CDelta]:
    """The ``cdelta`` frames a batch stands for, in order.

    Raises ``BadFrame`` (with the first seq) for a timestamp out of range.
    """
    times = batch_ts(batch.ts, batch.dts)
    if not all(TS_MIN <= ts <= TS_MAX for ts in times):
        raise BadFrame("a batch timestamp is out of range", seq=batch.seq)
    seq, names = batch.seq, batch.names
    cycle = len(names)
    return [
        CDelta(seq + i, ts, names[i % cycle], data)
        for i, (ts, data) in enumerate(zip(times, batch.data, strict=True))
    ]


def group_batches(frames: Sequence[ClientFrame]) -> list[ClientFrame]:
    """``frames`` with each run of two or more ``cdelta`` frames of consecutive
    seqs (whose timestamps ``batch_ts`` gives back exactly) as one ``Batch``."""
    out: list[ClientFrame] = []
    run: list[CDelta] = []
    ms = 0
    for frame in frames:
        if type(frame) is CDelta:
            # A float ts only (an int would come back as a float), and not
            # zero: equal floats are the same bits, except 0.0 and -0.0.
            if (
                run
                and len(run) < MAX_BATCH_SAMPLES
                and frame.seq == run[-1].seq + 1
                and type(frame.ts) is float
                and frame.ts
            ):
                step = round(frame.ts * _MS) - ms
                if (ms + step) / _MS == frame.ts:
                    run.append(frame)
                    ms += step
                    continue
            _flush(run, out)
            run = [frame]
            ms = round(frame.ts * _MS)
            continue
        _flush(run, out)
        run = []
        out.append(frame)
    _flush(run, out)
    return out


def _flush(run: list[CDelta], out: list[ClientFrame]) -> None:
    if len(run) == 1:
        out.append(run[0])
    elif run:
        stamps = [round(f.ts * _MS) for f in run]
        dts = tuple(b - a for a, b in itertools.pairwise(stamps))
        out.append(Batch(run[0].seq, run[0].ts, dts, _cycle([f.name for f in run]),
                         tuple(f.data for f in run)))  # fmt: skip


def _cycle(names: list[str]) -> tuple[str, ...]:
    """The shortest prefix of ``names`` that ``names`` repeats (cut anywhere)."""
    n = len(names)
    for period in range(1, n):
        if all(names[i] == names[i - period] for i in range(period, n)):
            return tuple(names[:period])
    return tuple(names)
