"""Which cheap answers the query cache stores: ``Doorkeeper.admit(key)``.

A cheap answer (a listing page: one short store read; ``cached_answer``'s
``cheap``) is stored the second time its query is computed within a while,
not the first; others are stored at once. Why: a listing paged through, or any URL asked once, is
never asked again, and storing it cost more than computing it was worth.
With Redis each such answer was a SET of its ~25-45 KB (and a copy in
Redis's memory until its TTL): the API alone, every URL new, c=100, served
1,376-1,707 pages/s, and Redis held 231-288 MB after each 9 s run (its
default 5 s TTL) and used 0.06-0.075 of a core; with this, 1,829-2,195
pages/s, Redis at 1 MB and 0.02 of a core (2026-11-30, 3 runs each,
interleaved; docs/api-performance.md). In the in-process LRU they
pushed out the answers dashboards ask for again and again: at 2,500 new
pages a second, 1,024 entries last 0.4 s. A query asked again is stored on
its second computation, and from then on answered from the cache; a query
whose answer a write has just dropped is stored again at once (its key was
seen). The idea is TinyLFU's doorkeeper (Einziger, Friedman, Manes 2017),
here as two sets of key hashes that take turns: a key is remembered for
between one and two turns of ``size`` new keys.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SEEN_KEYS", "Doorkeeper"]

#: Keys remembered a turn: 16 x the LRU's default 1,024 entries; at 2,500
#: new queries a second a key is remembered 6-13 s, more than CACHE_TTL's
#: default 5 s; the two sets hold at most 2 x 16,384 ints (~2 MB).
SEEN_KEYS: Final = 16_384


class Doorkeeper:
    def __init__(self, size: int = SEEN_KEYS) -> None:
        self.size = max(1, size)
        self._now: set[int] = set()
        self._before: set[int] = set()

    def seen(self, key: str) -> bool:
        """Whether ``key`` was computed lately (remembering nothing)."""
        h = hash(key)
        return h in self._now or h in self._before

    def admit(self, key: str) -> bool:
        """True if ``key`` was seen lately (store its answer); else remember it."""
        h = hash(key)  # a collision only stores one answer early
        if h in self._now or h in self._before:
            return True
        self._now.add(h)
        if len(self._now) >= self.size:
            self._before, self._now = self._now, set()
        return False
