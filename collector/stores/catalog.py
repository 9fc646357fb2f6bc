"""The catalog of names a store has seen: the vocabulary of ``GET /query``.

Metric, event and sample stream names, hosts, sessions, tags, and the data
paths of samples (their numeric leaves, ``cpu.percent``). The stores keep it
current at ingest, and reading it is one small query per kind of name, never
a scan of the documents.

Data paths are learnt from the first sample of each stream of each session a
writer process sees, and of each stream name new to it: parsing every sample's JSON to look for new keys would
cost a large part of the ingest budget, and a stream's shape is fixed by its
agent. A stream with no recorded paths (a database written before the
catalog existed) is filled in by the reader from its latest sample. Paths that only later
samples have are added by the SQLite tiers as they fold each new series
(``sqlite_rollup.SeriesIds``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

__all__ = ["Catalog", "StreamTracker", "first_sample_paths", "numeric_paths", "sample_paths"]

#: Deepest data path recorded; agents send shallow samples, and a deeper
#: path is nothing a person types.
_MAX_DEPTH: Final = 6
#: Most paths taken from one sample: a sample with thousands of keys (a map
#: keyed by ids) would otherwise flood the vocabulary.
_MAX_PATHS_PER_SAMPLE: Final = 256
#: Sessions a writer remembers as seen; a stream of ever-new sessions clears
#: it rather than growing without end.
_MAX_TRACKED_SESSIONS: Final = 100_000
#: Kinds whose data paths are catalogued (events too: "requests longer than
#: 100 ms" thresholds an event's data).
_WITH_PATHS: Final = frozenset({"sample", "event"})


@dataclass(frozen=True, slots=True)
class Catalog:
    """What a store has seen. Plain sets: the vocabulary indexes them itself."""

    #: kind ("sample", "event", "metric", "session") -> names of that kind
    names: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: sample stream or event name -> its numeric data paths
    paths: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hosts: frozenset[str] = frozenset()
    sessions: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        names: Mapping[str, Iterable[str]],
        paths: Mapping[str, Iterable[str]],
        hosts: Iterable[str],
        sessions: Iterable[str],
        tags: Iterable[str],
    ) -> Catalog:
        """A catalog of the sets a store collected."""
        return cls(
            {k: frozenset(v) for k, v in names.items()},
            {k: frozenset(v) for k, v in paths.items()},
            frozenset(hosts),
            frozenset(sessions),
            frozenset(tags),
        )


def numeric_paths(data: Any, prefix: str = "", depth: int = 0) -> Iterator[str]:
    """Dotted paths of the numeric leaves of ``data`` (booleans are not numbers)."""
    if not isinstance(data, dict) or depth >= _MAX_DEPTH:
        return
    for key, value in data.items():
        if not isinstance(key, str) or not key or "." in key or '"' in key:
            continue  # not addressable as a dotted path
        path = prefix + key
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            yield path
        elif isinstance(value, dict):
            yield from numeric_paths(value, path + ".", depth + 1)


def sample_paths(data: Any) -> list[str]:
    """``numeric_paths`` of one sample, at most ``_MAX_PATHS_PER_SAMPLE``."""
    out: list[str] = []
    for path in numeric_paths(data):
        out.append(path)
        if len(out) >= _MAX_PATHS_PER_SAMPLE:
            break
    return out


class StreamTracker:
    """Which sessions a writer has taken data paths from.

    Not thread-safe: each store calls it under its own write lock.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def unseen(self, sessions: Iterable[str]) -> set[str]:
        """The sessions of ``sessions`` not yet remembered."""
        return {s for s in sessions if s not in self._seen}

    def remember(self, sessions: set[str]) -> None:
        """Remember sessions whose paths were committed."""
        if sessions:
            if len(self._seen) + len(sessions) > _MAX_TRACKED_SESSIONS:
                self._seen.clear()
            self._seen |= sessions


def first_sample_paths(
    rows: Iterable[tuple[str, str, str, Any]], sessions: set[str], streams: set[str]
) -> set[tuple[str, str]]:
    """(stream, path) pairs of the first sample of each stream of ``sessions``
    and of the first sample or event of each name in ``streams``.

    ``rows`` are (session, kind, name, data) with data a dict or JSON text.
    """
    taken: set[tuple[str, str]] = set()
    pairs: set[tuple[str, str]] = set()
    for session, kind, name, data in rows:
        if data is None or (session, name) in taken or kind not in _WITH_PATHS:
            continue
        if name not in streams and (kind != "sample" or session not in sessions):
            continue
        taken.add((session, name))
        if isinstance(data, str | bytes):
            data = orjson.loads(data)
        pairs.update((name, path) for path in sample_paths(data))
    return pairs
