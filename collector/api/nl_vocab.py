"""The /query vocabulary: the store's own names, and the words people use for them.

Built from the store's ``Catalog`` (kept current at ingest, see
``stores/catalog.py``) and cached for a few seconds by ``VocabCache``: the
parser looks every word up here, so a name that exists is understood and a
misspelled one gets a "did you mean" (edit distance over these names).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Final, Literal

import anyio
import anyio.to_thread
from rapidfuzz import process
from rapidfuzz.distance import OSA

from deltawire.collector.stores.catalog import Catalog

__all__ = ["DeleteIndex", "Term", "TermKind", "VocabCache", "Vocabulary", "edit_distance"]

TermKind = Literal["host", "session", "tag", "metric", "event", "stream", "path"]

#: Seconds a vocabulary is reused; a name first stored since is looked up
#: again before a prompt that names it is refused (``VocabCache.get(fresh=)``).
VOCAB_TTL_S: Final = 5.0
#: Fewest seconds between two forced reloads (a stream of typos must not
#: turn into a stream of catalog reads).
_MIN_RELOAD_S: Final = 0.5

#: Misspelt words whose closest names a vocabulary remembers (it lives seconds).
_CLOSEST_MEMO: Final = 1024

#: Which sample stream a bare "cpu"/"memory" means when several have the path:
#: the watched process, as a support engineer asks about the application.
PREFERRED_STREAM: Final = "process"


@dataclass(frozen=True, slots=True)
class Term:
    """One thing a word can name: a host, a session, a metric, a data path..."""

    kind: TermKind
    value: str


def edit_distance(a: str, b: str, cap: int = 4) -> int:
    """Optimal-string-alignment distance (a transposition costs 1), at most ``cap``."""
    return min(OSA.distance(a, b, score_cutoff=cap), cap)


def _deletes(word: str, depth: int) -> set[str]:
    out = {word}
    frontier = {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


class DeleteIndex:
    """Words within two edits of a query, found without comparing against every
    word (the symmetric-delete method): two words within d edits share a string
    that is each of them with at most d characters deleted."""

    def __init__(self, words: Iterable[str], depth: int = 2) -> None:
        self.depth = depth
        self._by_delete: dict[str, set[str]] = {}
        for w in words:
            for d in _deletes(w, depth):
                self._by_delete.setdefault(d, set()).add(w)

    def near(self, word: str, max_edits: int) -> list[tuple[int, str]]:
        """(distance, word) of indexed words at most ``max_edits`` (<= depth) away."""
        found: set[str] = set()
        for d in _deletes(word, min(max_edits, self.depth)):
            found |= self._by_delete.get(d, set())
        scored = [(edit_distance(word, w, cap=max_edits + 1), w) for w in found]
        return sorted(x for x in scored if x[0] <= max_edits)


def _leaf(path: str) -> str | None:
    leaf = path.rsplit(".", 1)[-1]
    return leaf if leaf != path and len(leaf) > 3 else None


def _allowed_edits(word: str) -> int:
    """Edits a misspelling may be away from its name: one per four characters,
    at least one, at most three, fewer than the word's length ("web1" ~
    "web-1", "db" !~ "ab")."""
    return min(max(1, len(word) // 4), 3, len(word) - 1)


class Vocabulary:
    """Every name of a ``Catalog``, indexed by lower-cased word."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        names = catalog.names
        self.metrics: frozenset[str] = names.get("metric", frozenset())
        self.events: frozenset[str] = names.get("event", frozenset())
        self.streams: frozenset[str] = names.get("sample", frozenset())
        self.hosts = catalog.hosts
        self.sessions = catalog.sessions
        self.tags = catalog.tags
        #: data path -> the streams (and events) that have it
        self.path_owners: dict[str, set[str]] = {}
        for owner, paths in catalog.paths.items():
            for path in paths:
                self.path_owners.setdefault(path, set()).add(owner)
        #: last segment of a path ("rss", "percent") -> the paths ending so
        self.leaves: dict[str, set[str]] = {}
        for path in self.path_owners:
            self.leaves.setdefault(path.rsplit(".", 1)[-1].lower(), set()).add(path)
        #: a part of an event's or metric's name ("login" of user_login) -> those
        #: names, so a plain word is matched to one without splitting every name
        self.name_parts: dict[str, list[Term]] = {}
        for kind, pool in (("event", self.events), ("metric", self.metrics)):
            for name in sorted(pool):
                for part in set(re.split(r"[_.\-]", name.lower())):
                    self.name_parts.setdefault(part, []).append(Term(kind, name))  # type: ignore[arg-type]
        self._index: dict[str, list[Term]] = {}
        groups: tuple[tuple[TermKind, Iterable[str]], ...] = (
            ("host", self.hosts),
            ("session", self.sessions),
            ("metric", self.metrics),
            ("event", self.events),
            ("stream", self.streams),
            ("path", self.path_owners),
            ("tag", self.tags),
        )
        for kind, values in groups:
            for value in values:
                self._index.setdefault(value.lower(), []).append(Term(kind, value))
        #: what "did you mean" compares a word with: lower-cased names, and the
        #: last parts of paths ("percent"), each with the (name, kind) it stands for
        self._closest_memo: dict[
            tuple[str, tuple[str, ...] | None, int], list[tuple[str, TermKind]]
        ]
        self._closest_memo = {}  # misspellings repeat: each is compared with every name once
        self._targets: list[str] = []
        self._target_terms: list[tuple[str, TermKind]] = []
        for low, terms in self._index.items():
            for t in terms:
                leaf = _leaf(low) if t.kind == "path" else None
                for target in (low, leaf) if leaf else (low,):
                    self._targets.append(target)
                    self._target_terms.append((t.value, t.kind))

    @cached_property
    def name_prefixes(self) -> frozenset[str]:
        """Every prefix of every name, lower-cased (built on first use). Words
        join into a name ("queue depth" -> queue_depth) only where the first
        of them begins one, so the parser skips every other run of words
        without building its joins: long chatty prompts were ~1 ms."""
        return frozenset(k[:i] for k in self._index for i in range(1, len(k) + 1))

    def lookup(self, word: str) -> list[Term]:
        """The terms ``word`` names exactly (case-insensitive), most specific first."""
        return self._index.get(word.lower(), [])

    def all_names(self, kinds: Iterable[TermKind] | None = None) -> list[tuple[str, TermKind]]:
        wanted = set(kinds) if kinds is not None else None
        return [
            (t.value, t.kind)
            for terms in self._index.values()
            for t in terms
            if wanted is None or t.kind in wanted
        ]

    def closest(
        self, word: str, kinds: Iterable[TermKind] | None = None, n: int = 3
    ) -> list[tuple[str, TermKind]]:
        """Known names within a few edits of ``word``, closest first; failing
        that, within one more (an unknown "web3" still gets "web-1", "web-2").
        A path also matches by its last part ("cpu percnt" -> cpu.percent)."""
        low = word.lower()
        key = (low, None if kinds is None else tuple(sorted(set(kinds))), n)
        hit = self._closest_memo.get(key)
        if hit is not None:
            return hit
        if len(self._closest_memo) >= _CLOSEST_MEMO:
            self._closest_memo.clear()
        out = self._closest_memo[key] = self._closest(low, kinds, n)
        return out

    def _closest(
        self, low: str, kinds: Iterable[TermKind] | None, n: int
    ) -> list[tuple[str, TermKind]]:
        wanted = set(kinds) if kinds is not None else None
        allowed = _allowed_edits(low)
        # One edit looser only for what looks like a name ("web3"), not a plain word.
        loose = min(allowed + 1, 2, len(low) - 1) if re.search(r"[\d_.\-]", low) else allowed
        found = process.extract(
            low, self._targets, scorer=OSA.distance, score_cutoff=max(allowed, loose), limit=None
        )
        scored: list[tuple[int, str, TermKind]] = []
        for _target, d, k in found:
            value, kind = self._target_terms[k]
            if (wanted is None or kind in wanted) and d < len(low):
                scored.append((int(d), value, kind))
        best = [x for x in scored if x[0] <= allowed] or [x for x in scored if x[0] <= loose]
        out: list[tuple[str, TermKind]] = []
        for _d, value, kind in sorted(best):
            if (value, kind) not in out:
                out.append((value, kind))
        return out[:n]

    def names_containing(self, kind: TermKind, *parts: str) -> list[str]:
        """Names of ``kind`` (metric, event) containing any of ``parts``."""
        pool = {"metric": self.metrics, "event": self.events, "stream": self.streams}[kind]
        return sorted(v for v in pool if any(p in v.lower() for p in parts))

    def paths_containing(self, *parts: str) -> list[str]:
        return sorted(p for p in self.path_owners if any(x in p.lower() for x in parts))

    def sample_of(self, kind: TermKind, limit: int = 8) -> str:
        """A few known names of ``kind``, for messages: "hosts seen: web-1, web-2"."""
        pool = {
            "host": self.hosts,
            "session": self.sessions,
            "tag": self.tags,
            "metric": self.metrics,
            "event": self.events,
            "stream": self.streams,
            "path": frozenset(self.path_owners),
        }[kind]
        names = sorted(pool)
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return (", ".join(names[:limit]) or "none") + more


class VocabCache:
    """The current ``Vocabulary``, reloaded from the store at most every few seconds.

    One reload at a time (requests arriving meanwhile wait for it rather than
    read the catalog again), and the index is built on a worker thread: with
    many thousands of sessions it takes tens of milliseconds, which the event
    loop must not spend. A reload that reads the catalog it read before (no
    new name, host, session or tag: nearly all of them) keeps the vocabulary
    it has, and its ``generation``: the index is not built again, and the
    prompts the HTTP fast path knows stay known (routes/query.py).
    """

    def __init__(self, ttl: float = VOCAB_TTL_S, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._vocab: Vocabulary | None = None
        self._catalog: Catalog | None = None  # what _vocab was built from
        self._loaded_at = 0.0
        self._lock: anyio.Lock | None = None  # made in the event loop that uses it
        #: Which vocabulary ``get`` returns: one more each time a reload
        #: builds another (``current``).
        self.generation = 0

    def _stale(self, fresh: bool) -> bool:
        age = self._clock() - self._loaded_at
        return self._vocab is None or age >= self.ttl or (fresh and age >= _MIN_RELOAD_S)

    async def get(
        self, load: Callable[[], Awaitable[Catalog]], *, fresh: bool = False
    ) -> Vocabulary:
        """The cached vocabulary; reloaded when older than the TTL, or when
        ``fresh`` and older than a moment (a prompt named something unknown)."""
        if self._stale(fresh):
            if self._lock is None:
                self._lock = anyio.Lock()
            async with self._lock:
                if self._stale(fresh):  # not reloaded while this one waited
                    catalog = await load()
                    if self._vocab is None or catalog != self._catalog:
                        self._vocab = await anyio.to_thread.run_sync(Vocabulary, catalog)
                        self._catalog = catalog
                        self.generation += 1
                    self._loaded_at = self._clock()
        assert self._vocab is not None
        return self._vocab

    def age(self) -> float:
        return self._clock() - self._loaded_at if self._vocab is not None else float("inf")

    def current(self, generation: int) -> bool:
        """Whether the vocabulary of ``generation`` is what ``get`` would
        return now, without a reload. (A number, not the vocabulary: what
        remembers it must not keep an old one alive.)"""
        return generation == self.generation and not self._stale(False)
