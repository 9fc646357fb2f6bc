"""The HTTP API's query cache: answers of ``GET /metrics`` and ``GET /query``.

Invalidation is by *generations*, never by finding and deleting entries. There is
one counter per session (``session:S``), per name (``name:N``) and a global one
(``all``). Every write of documents bumps the counters of their sessions and
names *and* ``all``. A query depends on one counter, its *scope*:

- it filters on a session S -> ``session:S`` (every write that could change its
  answer touched a document of S; an extra name filter only narrows it);
- else it filters on a name N -> ``name:N``;
- else -> ``all``.

An entry remembers the generation of its scope that was read *before* the store
was queried; a lookup that sees a different generation is a miss. So a bump
that lands after the store commit can never let an older answer survive, and a
racing reader at worst stores an answer under a generation that is already
dead. Entries also expire after ``ttl`` seconds, which bounds every case the
generations cannot see (a write while Redis was unreachable).

Two backends with one interface:

- ``LocalCache``: an in-process LRU (OrderedDict) and a dict of generations.
  Used when no Redis is configured. Only touched from the event loop thread.
- ``RedisCache``: generation counters are Redis integers (``INCR``), values are
  Redis strings with a TTL. A value is stored as ``b"<gen>\\n<payload>"`` so one
  ``MGET gen_key value_key`` (one round trip) answers a lookup. Redis down: the
  cache is bypassed (answers come from the store), a warning is logged once per
  outage, and reconnects are tried at most once every ``retry_s`` seconds.

Bumps from the ingest process (control messages) are applied by both backends:
in Redis mode they ``INCR`` Redis too, even though the ingest process is meant
to ``INCR`` the same keys itself. Bumping twice is harmless (only "different"
matters), costs one pipelined round trip per store commit, and keeps the cache
correct if the ingest side does not (yet) talk to Redis. The key scheme is
public (``cache_namespace``, ``redis_gen_key``) so the ingest process can share it.

Redis keys carry a namespace derived from the store (``cache_namespace``): two
collectors with different stores may share one Redis without ever serving each
other's answers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from deltawire.formats import redact_uri

__all__ = [
    "ALL_SCOPE",
    "REDIS_PREFIX",
    "CacheStats",
    "LocalCache",
    "QueryCache",
    "RedisCache",
    "bump_scopes",
    "cache_namespace",
    "make_cache",
    "redis_gen_key",
    "scope_for",
]

log = logging.getLogger("deltawire.collector.api.cache")

ALL_SCOPE = "all"
REDIS_PREFIX = "deltawire:cache:"

#: Generations kept by the local cache before it forgets them all (and, to stay
#: correct, every entry too): bounds memory with many short-lived sessions.
_MAX_LOCAL_GENS = 100_000


def scope_for(session: str | None, name: str | None) -> str:
    """The one generation counter a query filtered this way depends on."""
    if session is not None:
        return f"session:{session}"
    if name is not None:
        return f"name:{name}"
    return ALL_SCOPE


def bump_scopes(sessions: Iterable[str], names: Iterable[str]) -> list[str]:
    """The counters a write of documents of these sessions and names must bump."""
    scopes = [f"session:{s}" for s in dict.fromkeys(sessions)]
    scopes += [f"name:{n}" for n in dict.fromkeys(names)]
    scopes.append(ALL_SCOPE)
    return scopes


def cache_namespace(store_uri: str, database: str = "") -> str:
    """A short name for one store (its URI, plus the database name where the URI
    does not include it), separating its Redis keys from other stores'."""
    scheme, sep, rest = store_uri.partition("://")
    if scheme == "sqlite" and sep:
        # sqlite:///rel.db and sqlite:////abs/rel.db may be the same file.
        path = rest[1:].partition("?")[0]
        store_uri = f"sqlite:///{os.path.abspath(path)}"
    return hashlib.sha1(f"{store_uri}|{database}".encode()).hexdigest()[:16]


def redis_gen_key(scope: str, namespace: str = "") -> str:
    """The Redis key of a generation counter (``INCR`` it after a store commit)."""
    return f"{REDIS_PREFIX}{namespace}:gen:{_short(scope)}"


def _redis_value_key(key: str, namespace: str) -> str:
    return f"{REDIS_PREFIX}{namespace}:val:{hashlib.sha1(key.encode()).hexdigest()}"


def _short(text: str) -> str:
    # Keep keys bounded whatever a session or name looks like.
    if len(text) <= 200:
        return text
    return "h:" + hashlib.sha1(text.encode()).hexdigest()


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypassed: int = 0  # lookups that could not use the cache (Redis down)
    errors: int = 0  # failed cache operations
    bumps: int = 0  # bump calls (writes seen)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses + self.bypassed
        return self.hits / total if total else 0.0


class QueryCache(Protocol):
    """What the app needs. ``gen`` from ``get`` goes back into ``put``."""

    backend: str
    stats: CacheStats

    async def get(self, key: str, scope: str) -> tuple[bytes | None, int | None]:
        """(payload, None) on a hit; (None, gen) on a miss; (None, None) if unusable."""
        ...

    async def put(self, key: str, gen: int, payload: bytes) -> None: ...

    async def bump(self, sessions: Iterable[str], names: Iterable[str]) -> None: ...

    def healthy(self) -> bool: ...

    async def aclose(self) -> None: ...


class LocalCache:
    """In-process LRU of answers keyed by query, checked against local generations."""

    backend = "memory"

    def __init__(self, size: int = 1024, ttl: float = 5.0) -> None:
        self.size = size
        self.ttl = ttl
        self.stats = CacheStats()
        self._gens: dict[str, int] = {}
        self._lru: OrderedDict[str, tuple[int, float, bytes]] = OrderedDict()

    async def get(self, key: str, scope: str) -> tuple[bytes | None, int | None]:
        gen = self._gens.get(scope, 0)
        entry = self._lru.get(key)
        if entry is not None:
            if entry[0] == gen and entry[1] > time.monotonic():
                self._lru.move_to_end(key)
                self.stats.hits += 1
                return entry[2], None
            del self._lru[key]
        self.stats.misses += 1
        return None, gen

    async def put(self, key: str, gen: int, payload: bytes) -> None:
        if self.size <= 0 or self.ttl <= 0:
            return
        self._lru[key] = (gen, time.monotonic() + self.ttl, payload)
        self._lru.move_to_end(key)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)

    async def bump(self, sessions: Iterable[str], names: Iterable[str]) -> None:
        self.stats.bumps += 1
        gens = self._gens
        for scope in bump_scopes(sessions, names):
            gens[scope] = gens.get(scope, 0) + 1
        if len(gens) > _MAX_LOCAL_GENS:
            # A forgotten counter reads 0 again, which an old entry may carry:
            # forget the entries too.
            gens.clear()
            self._lru.clear()

    def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._lru.clear()


class RedisCache:
    """Answers in Redis, shared by every API process using the same Redis."""

    backend = "redis"

    def __init__(
        self,
        uri: str,
        ttl: float = 5.0,
        namespace: str = "",
        retry_s: float = 3.0,
        timeout_s: float = 0.5,
    ) -> None:
        # Imported here so a deployment without Redis never needs the module.
        from redis.asyncio import ConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.uri = uri
        self.ttl = ttl
        self.namespace = namespace
        self.retry_s = retry_s
        self.stats = CacheStats()
        # No client-side retries: when Redis is down we answer from the store at
        # once instead of stalling the request through a retry schedule.
        pool = ConnectionPool.from_url(
            uri,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = Redis(connection_pool=pool)
        self._down = False
        self._retry_at = 0.0

    def _usable(self) -> bool:
        return not self._down or time.monotonic() >= self._retry_at

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self._retry_at = time.monotonic() + self.retry_s
        if not self._down:
            self._down = True
            log.warning(
                "redis cache unavailable, answering from the store (retrying every %.0fs): %s",
                self.retry_s,
                exc,
                extra={"redis": redact_uri(self.uri)},
            )

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.warning("redis cache reachable again", extra={"redis": redact_uri(self.uri)})

    async def get(self, key: str, scope: str) -> tuple[bytes | None, int | None]:
        if not self._usable():
            self.stats.bypassed += 1
            return None, None
        try:
            raw_gen, raw_val = await self._redis.mget(
                redis_gen_key(scope, self.namespace), _redis_value_key(key, self.namespace)
            )
        except Exception as e:  # any failure of the cache must not fail the request
            self._failed(e)
            self.stats.bypassed += 1
            return None, None
        self._ok()
        try:
            gen = int(raw_gen) if raw_gen is not None else 0
        except ValueError:  # someone else's junk under our key: do not cache at all
            self.stats.bypassed += 1
            return None, None
        if raw_val is not None:
            raw = raw_val if isinstance(raw_val, bytes) else str(raw_val).encode()
            tag, _, payload = raw.partition(b"\n")
            if tag == b"%d" % gen:
                self.stats.hits += 1
                return payload, None
        self.stats.misses += 1
        return None, gen

    async def put(self, key: str, gen: int, payload: bytes) -> None:
        if self.ttl <= 0 or not self._usable():
            return
        try:
            await self._redis.set(
                _redis_value_key(key, self.namespace),
                b"%d\n" % gen + payload,
                px=max(1, int(self.ttl * 1000)),
            )
        except Exception as e:
            self._failed(e)
        else:
            self._ok()

    async def bump(self, sessions: Iterable[str], names: Iterable[str]) -> None:
        self.stats.bumps += 1
        if not self._usable():
            return  # missed bumps are bounded by the TTL (see module doc)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for scope in bump_scopes(sessions, names):
                    pipe.incr(redis_gen_key(scope, self.namespace))
                await pipe.execute()
        except Exception as e:
            self._failed(e)
        else:
            self._ok()

    def healthy(self) -> bool:
        return not self._down

    async def aclose(self) -> None:
        try:
            await self._redis.aclose()
        except Exception:  # closing a dead connection may fail; nothing to do
            pass


def make_cache(
    redis_uri: str | None, ttl: float = 5.0, size: int = 1024, namespace: str = ""
) -> QueryCache:
    """Redis if a URI is given, else the in-process LRU."""
    if redis_uri:
        return RedisCache(redis_uri, ttl=ttl, namespace=namespace)
    return LocalCache(size=size, ttl=ttl)
