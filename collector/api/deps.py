"""What every route module gets: ONE object, ``Deps``, built once per process.

It holds the store, the cache, the stream hub, the counters and the API's
configuration, and the three ways a route reaches the store:

- ``store_call``: a short call on a worker thread (reads: at most ``store_threads``);
- ``heavy_call``: a query that may scan (``/query``, ``/aggregate``): at
  most ``heavy_queries`` at once and a deadline; past it the client gets
  503 ``query_timeout`` and the slot stays taken until the
  abandoned call ends, so a pile of slow queries can never take every
  thread (``/readyz`` pings on a thread of its own);
- ``edit``: a write (POST/PUT/PATCH/DELETE), committed together with the
  others pending (group commit, edits.py) by the edit writer process
  (edit_writer.py) if there is one, else on a thread here (the same
  ``apply_jobs``);
- ``cached``: an answer from the query cache, or computed and stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, TypeVar

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from starlette.requests import Request
from starlette.responses import Response

from deltawire.collector.aggregate import QueryTooHeavy
from deltawire.collector.stores.base import Store, StoreError, StoreUnavailable

from .admission import Doorkeeper
from .auth import Keys
from .cache import (
    EVERYTHING,
    Answer,
    CachedRead,
    Keyed,
    QueryCache,
    Span,
    StoreRead,
    bump_scopes,
)
from .edit_jobs import EditDone, EditJob, apply_jobs
from .edits import EditBatcher
from .errors import ApiError
from .hub import StreamHub
from .stats import ApiCounters, IngestStats, RequestStats
from .store_threads import StoreThreads, auto_size

if TYPE_CHECKING:
    from .writes import MetricWrites

__all__ = ["ApiConfig", "CachedGet", "Deps", "KnownQueries"]

log = logging.getLogger("deltawire.collector.api")

T = TypeVar("T")
K = TypeVar("K", bound=Keyed)
_NO_SLOT: Any = object()  # heavy_call: no slot came free within the deadline


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The API's knobs (from API_KEYS, RATE_LIMIT, QUERY_TIMEOUT, ...; see settings)."""

    keys: Keys = field(default_factory=Keys)
    rate_limit: float = 0.0  # requests/s per key (per client address without keys); 0: off
    rate_burst: int = 100
    query_timeout: float = 10.0
    heavy_queries: int = 2
    store_threads: int = 0  # 0: auto (store_threads.auto_size)
    max_body_bytes: int = 1 << 20
    page_bytes: int = 4 << 20  # a listing answer stops before this many bytes (then next)
    header_timeout: float = 10.0
    max_subscribers: int = 10_000
    shared_limits: str = ""  # the API workers' shared rate-limit file ("": this process's own)
    workers: int = 1  # API processes sharing the port (peers.py)


class Editor(Protocol):
    """Who commits a group of writes: the edit writer process (edit_client.py)."""

    async def apply(self, jobs: list[EditJob]) -> list[EditDone]: ...


class Neighbours(Protocol):
    """The other API workers (peers.py), told what this one's writes did."""

    def bumped(self, scopes: Iterable[str], span: Span) -> None: ...

    def created(self, ids: Iterable[str]) -> None: ...

    @property
    def count(self) -> int:
        """The API workers, this one included."""
        ...

    async def gather(self) -> list[ApiCounters]:
        """The others' counters (for ``/stats``)."""
        ...


@dataclass(frozen=True, slots=True)
class CachedGet:
    """A GET path whose answers are cached (``Deps.cached_answer``): how the
    fast path (fast.py) answers it without Starlette's routing and objects."""

    #: A query string validated before -> its cache key (no parsing: a hit
    #: costs a dict lookup); None for one not seen yet.
    known: Callable[[bytes], Keyed | None]
    #: The request parsed (ApiError: 422) -> its key and how to compute it;
    #: None where parsing needs the event loop (``/query`` reads the names
    #: it knows from the store): a miss then takes the full path.
    read: Callable[[Request], CachedRead] | None


class KnownQueries(Generic[K]):
    """Query strings a route's full path has read, and what it read each as
    (``K``: at least its answer's cache key and scope), for ``CachedGet.known``:
    a hit on a query string seen before then costs a dict lookup, not a parse.
    At most ``size`` of them (a crude bound: emptied when full; refilling
    costs one read each)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._reads: dict[bytes, K] = {}

    def get(self, raw: bytes) -> K | None:
        return self._reads.get(raw)

    def remember(self, raw: bytes, read: K) -> K:
        if len(self._reads) >= self.size:
            self._reads.clear()
        self._reads[raw] = read
        return read


class _Flight:
    """One computation of a missed answer that other requests may wait for."""

    __slots__ = ("_done", "finished", "gen", "payload")

    def __init__(self, gen: Hashable | None) -> None:
        self.gen = gen
        self.payload: bytes | None = None
        self.finished = False
        # Made by the first request that waits: most flights (a new URL) have
        # none, and an anyio Event was ~2 % of the loop's CPU a new page.
        self._done: anyio.Event | None = None

    async def wait(self) -> None:
        """Until the computation has ended (``payload``: its answer, or None)."""
        if not self.finished:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()

    def finish(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()


class Deps:
    def __init__(
        self,
        store: Store,
        cache: QueryCache,
        ingest: IngestStats | None = None,
        config: ApiConfig | None = None,
        request_stats: RequestStats | None = None,
        editor: Editor | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.ingest = ingest if ingest is not None else IngestStats()
        self.config = config if config is not None else ApiConfig()
        self.stats = request_stats if request_stats is not None else RequestStats()
        self.hub = StreamHub(store, self.config.max_subscribers)
        self.reads = StoreThreads(
            self.config.store_threads or auto_size(store, self.config.workers)
        )
        self.write_limiter = CapacityLimiter(2)  # SQLite writes one at a time anyway
        # Without a writer process (tests, in-process apps) the group
        # commits run here on a thread: the same apply_jobs.
        self.editor = editor
        self.edits: EditBatcher[EditJob, EditDone] = EditBatcher(
            self._apply_jobs, self._bump_edited, self.spawn
        )
        self._tasks: set[asyncio.Task[None]] = set()  # the fast paths' (spawn)
        # Heavy queries run on threads of their own: an abandoned one (past its
        # deadline) keeps its thread but never blocks short calls.
        self._heavy_slots = threading.BoundedSemaphore(max(1, self.config.heavy_queries))
        self._heavy_threads = CapacityLimiter(max(1, self.config.heavy_queries) * 4)
        self.ready_limiter = CapacityLimiter(1)
        self._store_down = False  # for "logged once per outage"
        self._flights: dict[str, _Flight] = {}  # cache misses being computed, by key
        self.doorkeeper = Doorkeeper()  # which cheap answers the cache keeps (admission.py)
        # The GET paths whose answers are cached, for the fast path (fast.py).
        self.cached_gets: dict[str, CachedGet] = {}
        # The metric writes (writes.py; set by routes/metrics.py): the write
        # fast path (fast.py) calls the same functions as the routes.
        self.writes: MetricWrites | None = None
        # The other API processes sharing the port (peers.py), if any.
        self.peers: Neighbours | None = None

    # -- the store ------------------------------------------------------------------------

    def _failed(self, fn: Callable[..., Any], e: Exception) -> NoReturn:
        self.stats.store_errors += 1
        if not self._store_down:  # once per outage: a down store fails every request
            self._store_down = True
            if isinstance(e, StoreUnavailable):
                log.warning("store unavailable: %s", e)
            else:
                log.error("store call %s failed", getattr(fn, "__name__", fn), exc_info=e)
        raise ApiError(
            503, "store_unavailable", "the store failed or cannot be reached; retry later"
        )

    def _outcome(self, fn: Callable[..., Any], e: Exception, refused: ApiError | None) -> NoReturn:
        # A StoreError is the client's fault only where the caller says so
        # (input the API cannot check itself, such as a store's cursor id).
        if (
            refused is not None
            and isinstance(e, StoreError)
            and not isinstance(e, StoreUnavailable)
        ):
            refused.detail = f"{refused.detail}: {e}"
            raise refused from None
        self._failed(fn, e)

    def _recovered(self) -> None:
        if self._store_down:
            self._store_down = False
            log.warning("store available again")

    async def store_call(
        self, fn: Callable[..., T], *args: Any, refused: ApiError | None = None, write: bool = False
    ) -> T:
        """``fn(*args)`` on a worker thread; 503 if the store fails. Writes run
        on threads of their own: one waiting for the store's write lock (the
        ingest writer holds it while it commits) must never hold up reads.
        A write's caller always waits for it, even cancelled (anyio's
        hand-off); a read's may leave it running (store_threads.py)."""
        try:
            if write:
                result = await anyio.to_thread.run_sync(fn, *args, limiter=self.write_limiter)
            else:
                result = await self.reads.run(fn, *args)
        except Exception as e:  # a store bug or driver error must still not be a 500
            self._outcome(fn, e, refused)
        self._recovered()
        return result

    async def compute_read(self, read: StoreRead) -> Answer:
        """The answer of one store read (``store_call``, then ``read.answer``)."""
        return read.answer(await self.store_call(read.fn, *read.args, refused=read.refused))

    def read_then(
        self, read: StoreRead, done: Callable[[Answer | None, BaseException | None], None]
    ) -> None:
        """``compute_read`` as a callback, for the HTTP fast path (asyncio
        only): ``done(answer, None)``, or ``done(None, error)`` with the error
        ``store_call`` would raise (503, or the read's ``refused`` 422), on
        the loop. An uncached listing page is one such read: no task and no
        coroutine chain around it (store_threads.py)."""

        def told(result: Any, error: BaseException | None) -> None:
            if error is None:
                self._recovered()
                try:
                    answer = read.answer(result)
                except Exception as e:  # a bug: answered (500, logged), never left hanging
                    done(None, e)
                    return
                done(answer, None)
                return
            if isinstance(error, Exception):
                try:
                    self._outcome(read.fn, error, read.refused)
                except ApiError as e:
                    error = e
            done(None, error)

        self.reads.then(read.fn, read.args, told)

    async def edit(self, job: EditJob) -> EditDone:
        """``job``'s answer once committed (with whichever others are
        pending), the cache bumped; ApiError 503 if the store failed."""
        return await self.edits.run(job)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """``work`` as a task of its own: a group commit, or a GET's answer
        (the fast paths', fast.py: only ever in the served process, on asyncio)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # a reference: the loop keeps only weak ones
        task.add_done_callback(self._tasks.discard)

    async def _apply_jobs(self, jobs: list[EditJob]) -> list[EditDone]:
        """One group commit: by the writer process, or on a write thread here."""
        if self.editor is None:
            return await self.store_call(functools.partial(apply_jobs, self.store), jobs,
                                         write=True)  # fmt: skip
        try:
            done = await self.editor.apply(jobs)
        except StoreError as e:
            self._failed(self.editor.apply, e)
        self._recovered()
        return done

    async def _bump_edited(self, results: list[EditDone]) -> None:
        """ONE cache bump for a committed group of edits, before any of them
        is answered: with Redis, a bump per edit was a round trip per request
        (and a PUBLISH every process hears). Its span covers every document
        the group touched, before and after (coarser than one per edit, never
        narrower: what it spares stays valid)."""
        marks = [m for done in results for m in done.marks]
        if marks:
            sessions = [m.session for m in marks if m.session is not None]
            names = [m.name for m in marks if m.name is not None]
            kinds = [m.kind for m in marks]  # a None among them: every kind
            span = Span.of(m.ts for m in marks)
            await self.bump(sessions, names, span, kinds)
            if self.peers is not None:  # the other API workers, before any answer
                self.peers.bumped(bump_scopes(sessions, names, kinds), span)

    async def heavy_call(
        self, fn: Callable[..., T], *args: Any, refused: ApiError | None = None
    ) -> T:
        """``fn(*args)`` within the query deadline, at most ``heavy_queries`` at once."""
        timeout = self.config.query_timeout
        abandoned = threading.Event()
        slots = self._heavy_slots

        def job() -> Any:
            if not slots.acquire(timeout=timeout):
                return _NO_SLOT
            try:
                return _NO_SLOT if abandoned.is_set() else fn(*args)
            finally:
                slots.release()

        result: Any = _NO_SLOT
        with anyio.move_on_after(timeout) as scope:
            try:
                result = await anyio.to_thread.run_sync(
                    job, limiter=self._heavy_threads, abandon_on_cancel=True
                )
            except QueryTooHeavy as e:  # it would pass the deadline: say so now
                raise ApiError(503, "query_timeout", str(e)) from None
            except Exception as e:
                self._outcome(fn, e, refused)
        if scope.cancelled_caught or result is _NO_SLOT:
            abandoned.set()  # if it has not started yet, it never will
            raise ApiError(
                503,
                "query_timeout",
                f"the query did not finish within the {timeout:g} s deadline; narrow it or retry",
            )
        self._recovered()
        return result

    # -- the cache ----------------------------------------------------------------------------

    def uncached(self, key: str, cheap: bool) -> bool:
        """Whether ``key``'s answer is computed without the cache: a cheap
        one not computed here lately, so not in this process's cache, and
        not stored this time (admission.py; ``doorkeeper.admit(key)`` once
        computed). Asking Redis for a cheap answer nobody asked for before
        costs more than computing it (a round trip: ~60 µs of this loop's
        CPU against the page's ~150 on a store thread; most listing URLs are
        asked once). No single flight either: without a generation, a
        computation that began before a write could be shared after its
        answer. Counted as the miss it nearly always is."""
        if cheap and not self.doorkeeper.seen(key):
            self.cache.stats.misses += 1
            return True
        return False

    async def cached(
        self,
        key: str,
        scope: str,
        compute: Callable[[], Awaitable[bytes | Answer]],
        cheap: bool = False,
    ) -> Response:
        """``cached_answer`` as a Starlette response."""
        payload, how = await self.cached_answer(key, scope, compute, cheap)
        return Response(payload, media_type="application/json", headers={"x-cache": how})

    async def cached_answer(
        self,
        key: str,
        scope: str,
        compute: Callable[[], Awaitable[bytes | Answer]],
        cheap: bool = False,
    ) -> tuple[bytes, str]:
        """The cached answer, or one computation shared by every request for
        ``key`` that misses meanwhile (single flight): after a write bumps a
        hot query's generation, 100 concurrent clients must not all run it.
        That stampede was the p99 tail of cached GETs under live ingest:
        wrk -c100 on a cached listing with a bump every 100 ms (as the ingest
        side sends) measured 602 req/s, p99 654 ms without this, and 10-12k
        req/s, p99 67-103 ms with it (same shared machine, load ~10).
        Returns the answer and how it came (its x-cache header): ``hit``,
        ``shared`` (another request's computation) or ``miss``.

        ``cheap``: an answer computed in one short store read (a listing
        page): stored only from the second time its key is computed lately
        (admission.py), since most such URLs are asked once. Others (an
        aggregate, a /query) are stored the first time: computing them again
        costs more than storing them.

        ``compute`` may return an ``Answer`` with the span of timestamps the
        answer depends on: writes outside it then leave it cached."""
        if self.uncached(key, cheap):
            answer = await compute()
            self.doorkeeper.admit(key)
            return (answer.payload if type(answer) is Answer else answer), "miss"  # type: ignore[return-value]
        payload, gen = await self.cache.get(key, scope)
        if payload is not None:
            return payload, "hit"
        flight = self._flights.get(key)
        if flight is not None and flight.gen == gen:
            await flight.wait()
            if flight.payload is not None:
                return flight.payload, "shared"
        flight = self._flights[key] = _Flight(gen)
        try:
            answer = await compute()
            if type(answer) is not Answer:
                answer = Answer(answer)  # type: ignore[arg-type]
            payload = flight.payload = answer.payload
        finally:
            flight.finish()
            if self._flights.get(key) is flight:
                del self._flights[key]
        if gen is not None and (not cheap or self.doorkeeper.admit(key)):
            await self.cache.put(key, gen, payload, answer.span)
        return payload, "miss"

    async def bump(
        self,
        sessions: Iterable[str | None],
        names: Iterable[str | None],
        span: Span = EVERYTHING,
        kinds: Iterable[str | None] | None = None,
    ) -> None:
        await self.cache.bump(
            [s for s in sessions if s is not None],
            [n for n in names if n is not None],
            span,
            kinds,
        )
