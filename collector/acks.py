"""Cumulative acks for one connection.

An ack for ``seq`` promises that every frame with a seq <= ``seq`` sent on the
connection is stored or was rejected. Accepted frames commit in order, so the
tracker only needs the accepted-but-uncommitted seqs in arrival order, with the
rejected seqs that arrived between them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

__all__ = ["AckTimes", "AckTracker"]


class AckTracker:
    __slots__ = ("_entries", "_high", "acked", "committed", "sent")

    def __init__(self) -> None:
        # (seq, pending): pending entries are accepted frames awaiting commit,
        # the others are rejected frames, done as soon as they are reached.
        self._entries: deque[tuple[int, bool]] = deque()
        self._high = -1  # highest seq seen (accepted or rejected)
        self.committed = -1  # highest committed seq of this connection
        self.acked = -1  # what the next ack may say
        self.sent = -1  # what the last ack sent said

    @property
    def pending(self) -> int:
        return sum(1 for _, p in self._entries if p)

    @property
    def idle(self) -> bool:
        """Nothing accepted is waiting for the store."""
        return not self._entries

    def accepted(self, seq: int) -> None:
        self._entries.append((seq, True))
        self._high = seq

    def rejected(self, seq: int | None) -> None:
        if seq is None or seq <= self._high:
            return  # an earlier or equal seq is covered by what came before it
        self._high = seq
        self._entries.append((seq, False))
        self._advance()

    def commit(self, seq: int) -> None:
        if seq > self.committed:
            self.committed = seq
            self._advance()

    def _advance(self) -> None:
        entries = self._entries
        while entries:
            seq, pending = entries[0]
            if pending and seq > self.committed:
                break
            entries.popleft()
            self.acked = max(self.acked, seq)

    @property
    def want_ack(self) -> bool:
        return self.acked > self.sent


class AckTimes:
    """When each run of accepted frames arrived, until an ack covers it: what
    the ack-latency histogram observes (one value per frame of the run)."""

    __slots__ = ("_runs",)

    def __init__(self) -> None:
        self._runs: deque[tuple[int, float, int]] = deque()  # (last seq, received at, frames)

    def received(self, last_seq: int, at: float, frames: int) -> None:
        self._runs.append((last_seq, at, frames))

    def covered(self, acked: int, now: float) -> Iterator[tuple[float, int]]:
        """(seconds waited, frames) of the runs an ack for ``acked`` covers, dropped here."""
        runs = self._runs
        while runs and runs[0][0] <= acked:
            _, at, frames = runs.popleft()
            yield now - at, frames
