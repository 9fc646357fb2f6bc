"""The HTTP API's query cache: answers of ``GET /metrics`` and ``GET /query``.

Invalidation is by *generations*, never by finding and deleting entries. There is
one counter per session (``session:S``), per name (``name:N``), per kind
(``kind:K``: sample, event, session, metric) and a global one (``all``). Every
write of documents bumps the counters of their sessions, names and kinds *and*
``all``. A query depends on one counter, its *scope*:

- it filters on a session S -> ``session:S`` (every write that could change its
  answer touched a document of S; an extra name filter only narrows it);
- else it filters on a name N -> ``name:N``;
- else it filters on a kind K -> ``kind:K`` (so "the events of today" stays
  cached while agents stream samples: they bump ``kind:sample``, not
  ``kind:event``);
- else -> ``all``.

An entry remembers the generation of its scope that was read *before* the store
was queried; a lookup that sees the same generation is a hit. So a bump that
lands after the store commit can never let an older answer survive, and a
racing reader at worst stores an answer under a generation that is already
dead. Entries also expire after ``ttl`` seconds, which bounds every case the
generations cannot see (a write while Redis was unreachable).

Time ranges: with agents streaming, every scope is bumped every 100 ms, yet
most answers cannot change: "the first 100 documents of name N", a window in
the past, any page that ends before now. So a bump also says the time range
of what was written (``Span``; a stream writes at "now"), each scope keeps a
short log of its last bumps (generation, range), and an entry remembers the
range of timestamps its answer depends on. On a generation mismatch, the
entry is still good if no bump since its generation touched its range (closed
ranges never change); it is then re-tagged with the current generation. When
the log no longer reaches back to the entry's generation, it is a miss.

Three backends with one interface:

- ``LocalCache``: an in-process LRU (OrderedDict) and a dict of generations.
  Used when no Redis is configured. Only touched from the event loop thread.
- ``RedisCache``: generation counters are Redis integers (``INCR``), values are
  Redis strings with a TTL. A value is stored as ``b"<gen>\\n<payload>"`` so one
  ``MGET gen_key value_key`` (one round trip) answers a lookup. Redis down: the
  cache is bypassed (answers come from the store), a warning is logged once per
  outage, and reconnects are tried at most once every ``retry_s`` seconds.
  Bumps run the bump script on a connection of their own, in RESP
  (redis_link.py: a sixth of redis-py's CPU a call); the rest is redis-py.
- ``NearCache`` (what ``make_cache`` gives with Redis): a ``LocalCache`` in
  front of a ``RedisCache``, kept coherent by the bumps it makes and by those
  of other processes, which the bump script PUBLISHes (see its docstring).
  Anything that bumps generations must do it through that script: a bare
  ``INCR`` would go unheard by the other processes' near caches.

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

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

import orjson

from deltawire.formats import redact_uri

from .errors import ApiError
from .redis_link import RedisLink

__all__ = [
    "ALL_SCOPE",
    "EVERYTHING",
    "KINDS",
    "REDIS_PREFIX",
    "Answer",
    "CacheKey",
    "CacheStats",
    "CachedRead",
    "Keyed",
    "LocalCache",
    "NearCache",
    "NearGen",
    "QueryCache",
    "RedisCache",
    "Span",
    "StoreRead",
    "bump_scopes",
    "cache_namespace",
    "make_cache",
    "redis_channel",
    "redis_gen_key",
    "scope_for",
]

log = logging.getLogger("deltawire.collector.api.cache")

ALL_SCOPE = "all"
REDIS_PREFIX = "deltawire:cache:"

#: Generations kept by the local cache before it forgets them all (and, to stay
#: correct, every entry too): bounds memory with many short-lived sessions.
_MAX_LOCAL_GENS = 100_000
#: Bumps remembered per scope: ingest bumps every scope it writes about 10
#: times a second, so 64 reach back ~6 s, about a default TTL.
_LOG_LEN = 64


@dataclass(frozen=True, slots=True)
class Span:
    """A closed range of timestamps (seconds): what a write touched, or what
    a cached answer depends on."""

    lo: float = -math.inf
    hi: float = math.inf

    def touches(self, other: Span) -> bool:
        return other.lo <= self.hi and other.hi >= self.lo

    @classmethod
    def of(cls, timestamps: Iterable[float | None]) -> Span:
        """The smallest span holding ``timestamps`` (everything if one is unknown)."""
        stamps = list(timestamps)
        known = [t for t in stamps if t is not None]
        if not known or len(known) < len(stamps):
            return EVERYTHING
        return cls(min(known), max(known))


EVERYTHING = Span()


@dataclass(frozen=True, slots=True)
class Answer:
    """A computed answer and the span of timestamps it depends on."""

    payload: bytes
    span: Span = EVERYTHING


def _unchanged(log: Sequence[tuple[int, Span]] | None, since: int, span: Span) -> bool:
    """No bump after generation ``since`` touched ``span`` (as far as ``log``,
    oldest first, reaches back: not far enough is "changed")."""
    if span == EVERYTHING or not log or log[0][0] > since + 1:
        return False
    for gen, touched in reversed(log):
        if gen <= since:
            break
        if touched.touches(span):
            return False
    return True


def scope_for(session: str | None, name: str | None, kind: str | None = None) -> str:
    """The one generation counter a query filtered this way depends on."""
    if session is not None:
        return f"session:{session}"
    if name is not None:
        return f"name:{name}"
    if kind is not None:
        return f"kind:{kind}"
    return ALL_SCOPE


#: Every kind a document can have (the API's ``kind`` filter takes these):
#: a write whose kinds are not known bumps all of their scopes.
KINDS: Final = ("sample", "event", "session", "metric")


def bump_scopes(
    sessions: Iterable[str], names: Iterable[str], kinds: Iterable[str | None] | None = None
) -> list[str]:
    """The counters a write of documents of these sessions, names and kinds
    must bump. ``kinds`` None, or one of them None: not known, so every
    kind's (a bump too many costs a recomputation; one too few, a stale
    answer)."""
    scopes = [f"session:{s}" for s in dict.fromkeys(sessions)]
    scopes += [f"name:{n}" for n in dict.fromkeys(names)]
    written = KINDS if kinds is None else tuple(dict.fromkeys(kinds))
    scopes += [f"kind:{k}" for k in (KINDS if None in written else written)]
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


def _redis_log_key(scope: str, namespace: str) -> str:
    return f"{REDIS_PREFIX}{namespace}:log:{_short(scope)}"


def redis_channel(namespace: str = "") -> str:
    """The pub/sub channel bumps of ``namespace`` are published on (when
    another near cache than the bumper's listens: see ``_BUMP_LUA``)."""
    return f"{REDIS_PREFIX}{namespace}:bumps"


def _presence_channel(namespace: str, origin: str) -> str:
    """A channel only one near cache subscribes to (see ``_BUMP_LUA``)."""
    return f"{REDIS_PREFIX}{namespace}:near:{origin}"


def _redis_value_key(key: str, namespace: str) -> str:
    return f"{REDIS_PREFIX}{namespace}:val:{hashlib.sha1(key.encode()).hexdigest()}"


def _short(text: str) -> str:
    # Keep keys bounded whatever a session or name looks like.
    if len(text) <= 200:
        return text
    return "h:" + hashlib.sha1(text.encode()).hexdigest()


class Keyed(Protocol):
    """A cacheable request, parsed: its entry's key and the scope it depends on."""

    @property
    def key(self) -> str: ...

    @property
    def scope(self) -> str: ...


@dataclass(frozen=True, slots=True)
class CacheKey:
    """A ``Keyed`` that is only that: an answer's cache key and scope."""

    key: str
    scope: str


class StoreRead(NamedTuple):
    """An answer that is one store read: ``fn(*args)`` on a store thread,
    then ``answer(result)`` on the loop. ``refused``: the 422 a
    ``StoreError`` of this read stands for (``Deps.store_call``)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    answer: Callable[[Any], Answer]
    refused: ApiError | None = None


class CachedRead(NamedTuple):
    """A cacheable GET, parsed: its key, its scope, how to compute it, and
    whether that is cheap (``Deps.cached_answer``'s arguments). ``store``:
    the one store read it is, when it is one (a listing page), which the
    HTTP fast path then reads with no coroutine (``Deps.read_then``)."""

    key: str
    scope: str
    compute: Callable[[], Awaitable[Answer]]
    cheap: bool = False
    store: StoreRead | None = None


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypassed: int = 0  # lookups that could not use the cache (Redis down)
    errors: int = 0  # failed cache operations
    bumps: int = 0  # bump calls (writes seen)
    near_hits: int = 0  # hits answered by the near cache in front of Redis

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses + self.bypassed
        return self.hits / total if total else 0.0


class QueryCache(Protocol):
    """What the app needs. ``gen`` from ``get`` goes back into ``put``."""

    backend: str
    stats: CacheStats

    async def get(self, key: str, scope: str) -> tuple[bytes | None, Hashable | None]:
        """(payload, None) on a hit; (None, gen) on a miss; (None, None) if unusable."""
        ...

    def peek(self, key: str, scope: str) -> bytes | None:
        """The answer if this process holds it (counted as a hit), at no I/O;
        None (counting nothing) sends the caller to ``get``."""
        ...

    async def put(self, key: str, gen: Any, payload: bytes, span: Span = EVERYTHING) -> None: ...

    async def bump(
        self,
        sessions: Iterable[str],
        names: Iterable[str],
        span: Span = EVERYTHING,
        kinds: Iterable[str | None] | None = None,
    ) -> None:
        """Forget the answers a write of documents of these sessions, names
        and kinds (None: not known), with timestamps in ``span``, may
        have changed (``bump_scopes``)."""

    def healthy(self) -> bool: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    gen: int
    expires: float
    payload: bytes
    span: Span


class LocalCache:
    """In-process LRU of answers keyed by query, checked against local generations."""

    backend = "memory"

    def __init__(self, size: int = 1024, ttl: float = 5.0) -> None:
        self.size = size
        self.ttl = ttl
        self.stats = CacheStats()
        self._gens: dict[str, int] = {}
        self._logs: dict[str, deque[tuple[int, Span]]] = {}
        self._lru: OrderedDict[str, _Entry] = OrderedDict()
        #: Called first by every lookup: the other API workers' bumps are
        #: applied here before an answer is judged (peers.py).
        self.before_lookup: Callable[[], None] | None = None

    def lookup(self, key: str, scope: str) -> tuple[bytes | None, int]:
        """(payload, its generation) on a hit, else (None, the scope's current
        generation). Counts nothing: the near cache in front of Redis uses it too."""
        if self.before_lookup is not None:
            self.before_lookup()
        gen = self._gens.get(scope, 0)
        entry = self._lru.get(key)
        if entry is not None:
            if entry.expires > time.monotonic() and (
                entry.gen == gen or _unchanged(self._logs.get(scope), entry.gen, entry.span)
            ):
                entry.gen = gen
                self._lru.move_to_end(key)
                return entry.payload, gen
            del self._lru[key]
        return None, gen

    def store(self, key: str, gen: int, payload: bytes, span: Span = EVERYTHING) -> None:
        if self.size <= 0 or self.ttl <= 0:
            return
        self._lru[key] = _Entry(gen, time.monotonic() + self.ttl, payload, span)
        self._lru.move_to_end(key)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)

    def bump_scopes(self, scopes: Iterable[str], span: Span = EVERYTHING) -> None:
        gens, logs = self._gens, self._logs
        for scope in scopes:
            gen = gens[scope] = gens.get(scope, 0) + 1
            log_ = logs.get(scope)
            if log_ is None:
                log_ = logs[scope] = deque(maxlen=_LOG_LEN)
            log_.append((gen, span))
        if len(gens) > _MAX_LOCAL_GENS:
            # A forgotten counter reads 0 again, which an old entry may carry:
            # forget the entries too.
            gens.clear()
            logs.clear()
            self._lru.clear()

    def clear(self) -> None:
        self._lru.clear()

    def peek(self, key: str, scope: str) -> bytes | None:
        payload, _ = self.lookup(key, scope)
        if payload is not None:
            self.stats.hits += 1
        return payload

    async def get(self, key: str, scope: str) -> tuple[bytes | None, int | None]:
        payload, gen = self.lookup(key, scope)
        if payload is not None:
            self.stats.hits += 1
            return payload, None
        self.stats.misses += 1
        return None, gen

    async def put(self, key: str, gen: int, payload: bytes, span: Span = EVERYTHING) -> None:
        self.store(key, gen, payload, span)

    async def bump(
        self,
        sessions: Iterable[str],
        names: Iterable[str],
        span: Span = EVERYTHING,
        kinds: Iterable[str | None] | None = None,
    ) -> None:
        self.stats.bumps += 1
        self.bump_scopes(bump_scopes(sessions, names, kinds), span)

    def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._lru.clear()


#: One bump, atomically: for each scope (KEYS: n generation keys, then their
#: n log keys), INCR the generation and log "gen lo hi" under it; then PUBLISH
#: the bump (ARGV[6]) on the namespace's channel (ARGV[5]) for near caches,
#: but only if someone other than the bumper listens: ARGV[7] is the bumper's
#: own presence channel (``_presence_channel``), which its near cache's
#: subscription holds together with the namespace's, so
#: NUMSUB(namespace) - NUMSUB(presence) counts exactly the other listeners,
#: as Redis sees them now (a dropped subscription counts for nobody). Alone on
#: a Redis, an API process then never hears, parses and drops its own bumps
#: (~100 µs of its CPU per group commit through redis-py's pub/sub reader).
_BUMP_LUA = """
local n = #KEYS / 2
for i = 1, n do
  local gen = redis.call('INCR', KEYS[i])
  local log = KEYS[n + i]
  redis.call('RPUSH', log, gen .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
  redis.call('LTRIM', log, -tonumber(ARGV[3]), -1)
  redis.call('PEXPIRE', log, ARGV[4])
end
local subs = redis.call('PUBSUB', 'NUMSUB', ARGV[5], ARGV[7])
if subs[2] > subs[4] then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return n
"""


def _tag(gen: int, span: Span) -> bytes:
    """An entry's first line: its generation, and its span unless everything."""
    if span == EVERYTHING:
        return b"%d\n" % gen
    return f"{gen} {span.lo!r} {span.hi!r}\n".encode()


def _parse_tag(tag: bytes) -> tuple[int | None, Span]:
    parts = tag.split()
    if len(parts) == 1:
        return int(parts[0]), EVERYTHING
    if len(parts) == 3:
        return int(parts[0]), Span(float(parts[1]), float(parts[2]))
    return None, EVERYTHING


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
        origin: str | None = None,
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
        # Lookups, puts and bumps: on a connection of their own in RESP
        # (redis_link.py: a fifth of redis-py's CPU a command), or through
        # redis-py under TLS.
        self._link = RedisLink(uri, timeout_s) if RedisLink.supports(uri) else None
        self._command = (
            self._link.command if self._link is not None else self._redis.execute_command
        )
        self._bump_script = self._redis.register_script(_BUMP_LUA)
        # Names this cache's bumps on the channel. The API workers of one
        # collector share theirs (make_cache): they tell each other their
        # bumps through their journals (peers.py) before answering, so Redis
        # publishes only for processes beyond them, and they ignore each
        # other's messages.
        self.origin = origin or uuid.uuid4().hex
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

    def peek(self, key: str, scope: str) -> bytes | None:
        return None  # every answer is in Redis

    async def get(self, key: str, scope: str) -> tuple[bytes | None, int | None]:
        payload, _span, gen = await self.lookup(key, scope)
        return payload, gen

    async def lookup(self, key: str, scope: str) -> tuple[bytes | None, Span, int | None]:
        """``get``, also giving a hit's span (what the near cache keeps)."""
        if not self._usable():
            self.stats.bypassed += 1
            return None, EVERYTHING, None
        value_key = _redis_value_key(key, self.namespace)
        try:
            raw_gen, raw_val = await self._command(
                "MGET", redis_gen_key(scope, self.namespace), value_key
            )
            gen = int(raw_gen) if raw_gen is not None else 0
            if raw_val is not None:
                raw = raw_val if isinstance(raw_val, bytes) else str(raw_val).encode()
                tag, _, payload = raw.partition(b"\n")
                entry_gen, span = _parse_tag(tag)
                if entry_gen == gen or (
                    entry_gen is not None and await self._unchanged(scope, entry_gen, span)
                ):
                    if entry_gen != gen:  # the next lookups hit at once again
                        await self._command("SET", value_key, _tag(gen, span) + payload, "KEEPTTL")
                    self._ok()
                    self.stats.hits += 1
                    return payload, span, None
        except ValueError:  # someone else's junk under our keys: do not cache at all
            self.stats.bypassed += 1
            return None, EVERYTHING, None
        except Exception as e:  # any failure of the cache must not fail the request
            self._failed(e)
            self.stats.bypassed += 1
            return None, EVERYTHING, None
        self._ok()
        self.stats.misses += 1
        return None, EVERYTHING, gen

    async def _unchanged(self, scope: str, since: int, span: Span) -> bool:
        if span == EVERYTHING:
            return False
        raw = await self._command("LRANGE", _redis_log_key(scope, self.namespace), 0, -1)
        log_: list[tuple[int, Span]] = []
        for item in raw:
            gen, lo, hi = item.split()
            log_.append((int(gen), Span(float(lo), float(hi))))
        return _unchanged(log_, since, span)

    async def put(self, key: str, gen: int, payload: bytes, span: Span = EVERYTHING) -> None:
        if self.ttl <= 0 or not self._usable():
            return
        try:
            await self._command(
                "SET", _redis_value_key(key, self.namespace), _tag(gen, span) + payload,
                "PX", max(1, int(self.ttl * 1000)),
            )  # fmt: skip
        except Exception as e:
            self._failed(e)
        else:
            self._ok()

    async def bump(
        self,
        sessions: Iterable[str],
        names: Iterable[str],
        span: Span = EVERYTHING,
        kinds: Iterable[str | None] | None = None,
    ) -> None:
        self.stats.bumps += 1
        if not self._usable():
            return  # missed bumps are bounded by the TTL (see module doc)
        scopes = bump_scopes(sessions, names, kinds)
        keys = [redis_gen_key(scope, self.namespace) for scope in scopes]
        keys += [_redis_log_key(scope, self.namespace) for scope in scopes]
        # A log entry matters only while an entry older than it lives (ttl).
        keep_ms = max(1000, int(self.ttl * 2000))
        lo, hi = repr(span.lo), repr(span.hi)
        news = orjson.dumps({"o": self.origin, "s": scopes, "span": [lo, hi]})
        args = [
            lo.encode(),
            hi.encode(),
            b"%d" % _LOG_LEN,
            b"%d" % keep_ms,
            redis_channel(self.namespace).encode(),
            news,
            _presence_channel(self.namespace, self.origin).encode(),
        ]
        try:
            if self._link is not None:
                await self._link.script(_BUMP_LUA.encode(), [k.encode() for k in keys], args)
            else:
                await self._bump_script(keys=keys, args=args)
        except Exception as e:
            self._failed(e)
        else:
            self._ok()

    def healthy(self) -> bool:
        return not self._down

    async def aclose(self) -> None:
        if self._link is not None:
            await self._link.aclose()
        try:
            await self._redis.aclose()
        except Exception:  # closing a dead connection may fail; nothing to do
            pass


@dataclass(frozen=True, slots=True)
class NearGen:
    """A near cache's miss: the Redis generation, and the near cache's own
    (None: it was not in use) and connection epoch at the lookup."""

    remote: int
    local: int | None
    epoch: int


class NearCache:
    """Redis behind a small in-process LRU (a "near cache").

    Every lookup in Redis is a network round trip, most of the cost of a
    cached answer; the near LRU answers repeated lookups in-process. Its
    entries are checked against generations of its own (``LocalCache``, span
    logs included), bumped by

    - every bump made here (API writes, the ingest's control pipe): first in
      Redis, then here, before the bump returns. So a lookup that raced with
      it either read Redis after its INCR or is tagged with a generation the
      local bump makes stale;
    - every bump made elsewhere (other API processes sharing the Redis),
      heard on the namespace's pub/sub channel (the bump script PUBLISHes
      them while another process listens: ours never costs us a message
      when we are alone).

    The near cache is used only while the subscription is known to be up:
    until its confirmation, and from a broken connection until the next
    confirmation (which also empties it, as bumps may have been missed), every
    lookup goes to Redis as without it. ``epoch`` counts those changes, so an
    answer fetched across one is not kept.
    """

    backend = "redis"

    def __init__(self, remote: RedisCache, size: int = 1024) -> None:
        self.remote = remote
        self.stats = remote.stats
        self.near = LocalCache(size=size, ttl=remote.ttl)
        self.heard = 0  # bumps of other processes applied (tests wait on it)
        self.received = 0  # messages on the channel, ours included (tests)
        self._live = False
        self._lost = False  # the subscription broke (healthy() says so until back)
        self._epoch = 0
        self._subscribed: asyncio.Event | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    def _listen_once_started(self) -> None:
        if self._listener is None:
            self._subscribed = asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def wait_subscribed(self) -> None:
        """Until the near cache is in use (tests)."""
        self._listen_once_started()
        assert self._subscribed is not None
        await self._subscribed.wait()

    def _set_live(self, live: bool) -> None:
        if live != self._live:
            self._epoch += 1
            self.near.clear()
            self._live = live
        if live:
            self._lost = False
            assert self._subscribed is not None
            self._subscribed.set()

    async def _listen(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        channel = redis_channel(self.remote.namespace)
        # Subscribed with the namespace's channel in ONE command on ONE
        # connection: Redis counts both or neither (see _BUMP_LUA).
        presence = _presence_channel(self.remote.namespace, self.remote.origin)
        ours = b'{"o":"%s"' % self.remote.origin.encode()  # how our own bumps begin
        while True:
            # A client of its own: a blocking read must not meet the pool's
            # socket timeout (it waits for news for as long as there is none).
            client = Redis.from_url(self.remote.uri, socket_connect_timeout=1.0,
                                    retry=Retry(NoBackoff(), 0))  # fmt: skip
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel, presence)
                # redis-py can swallow a cancellation that lands while it
                # subscribes (aclose's): the subscribe then returns as if none
                # came, and the read below would wait for ever.
                while not self._closing:
                    msg = await pubsub.get_message(timeout=None)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        if msg["channel"] == presence.encode():  # the second: both hold
                            self._set_live(True)
                    elif msg["type"] == "message":
                        self.received += 1
                        if not msg["data"].startswith(ours):
                            self._heard(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis gone: plain Redis lookups until it is back
                if self._closing:
                    return  # whatever ended the subscription, aclose wants it stopped
                log.debug("near cache: subscription lost: %s", e)
                self._lost = True
                self._set_live(False)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            if self._closing:
                return
            await asyncio.sleep(self.remote.retry_s)

    def _heard(self, raw: bytes) -> None:
        try:
            news = orjson.loads(raw)
            if news["o"] == self.remote.origin:
                return  # ours (published while another listened): applied already
            lo, hi = news["span"]
            scopes = [str(s) for s in news["s"]]
            span = Span(float(lo), float(hi))
        except (ValueError, KeyError, TypeError):
            # Not a bump we can read: forget everything rather than guess.
            self.near.clear()
            return
        self.heard += 1
        self.near.bump_scopes(scopes, span)

    def _near_lookup(self, key: str, scope: str) -> tuple[bytes | None, int | None]:
        """A near hit (counted), or the near generation (None: not in use)."""
        if not self._live:
            return None, None
        payload, local = self.near.lookup(key, scope)
        if payload is not None:
            self.stats.hits += 1
            self.stats.near_hits += 1
        return payload, local

    def peek(self, key: str, scope: str) -> bytes | None:
        return self._near_lookup(key, scope)[0]

    async def get(self, key: str, scope: str) -> tuple[bytes | None, NearGen | None]:
        self._listen_once_started()
        payload, local = self._near_lookup(key, scope)
        if payload is not None:
            return payload, None
        epoch = self._epoch
        payload, span, remote = await self.remote.lookup(key, scope)
        if payload is not None:
            if local is not None and self._live and epoch == self._epoch:
                self.near.store(key, local, payload, span)
            return payload, None
        return (None, None) if remote is None else (None, NearGen(remote, local, epoch))

    async def put(self, key: str, gen: NearGen, payload: bytes, span: Span = EVERYTHING) -> None:
        await self.remote.put(key, gen.remote, payload, span)
        if gen.local is not None and self._live and gen.epoch == self._epoch:
            self.near.store(key, gen.local, payload, span)

    async def bump(
        self,
        sessions: Iterable[str],
        names: Iterable[str],
        span: Span = EVERYTHING,
        kinds: Iterable[str | None] | None = None,
    ) -> None:
        sessions, names = list(sessions), list(names)
        kinds = None if kinds is None else list(kinds)
        try:
            await self.remote.bump(sessions, names, span, kinds)  # counts the bump
        finally:
            self.near.bump_scopes(bump_scopes(sessions, names, kinds), span)

    def healthy(self) -> bool:
        return self.remote.healthy() and not self._lost

    async def aclose(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self.near.clear()
        await self.remote.aclose()


def make_cache(
    redis_uri: str | None,
    ttl: float = 5.0,
    size: int = 1024,
    namespace: str = "",
    origin: str | None = None,
) -> QueryCache:
    """Redis (behind a near cache of ``size`` entries) if a URI is given,
    else the in-process LRU. ``origin``: the name the bumps go by on Redis
    (one per collector's API workers; default: this process's own)."""
    if redis_uri:
        return NearCache(
            RedisCache(redis_uri, ttl=ttl, namespace=namespace, origin=origin), size=size
        )
    return LocalCache(size=size, ttl=ttl)
