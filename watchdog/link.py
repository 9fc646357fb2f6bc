"""The link: one long-lived connection per session that drains the spool to the collector.

Per connection: ``hello`` -> ``welcome`` (whose ``acked`` says where to resume),
then a fresh ``DeltaEncoder`` (the delta chain never crosses connections, so
the first sample of each stream is a snap again) and three tasks: the sender
reads committed records from the spool after ``acked``, the receiver applies
acks (which free the spool) and flow hints, and a stall watch drops a
connection whose acks stopped coming. Any failure closes the connection and a
new one is made after an exponential backoff with jitter; nothing is lost
because nothing leaves the spool before it is acked.

The link is done when the spool is sealed (a bye, or a backlog from an earlier
run) and everything in it was acknowledged.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from deltawire.protocol import (
    BATCH,
    CODECS,
    COUNTER,
    EXTENSIONS,
    NEED_DATA,
    Ack,
    Bye,
    ClientConnection,
    ClientFrame,
    Closed,
    DeltaEncoder,
    ErrorFrame,
    Event,
    Flow,
    Hello,
    ProtocolError,
    ServerEvent,
    Welcome,
    group_batches,
)
from deltawire.retry import backoff_delay

from .spool import Cursor, Record, Spool

__all__ = [
    "CollectorRefused",
    "Connect",
    "Link",
    "LinkError",
    "RateLimiter",
    "backoff_delay",
    "tcp_connector",
]

log = logging.getLogger("deltawire.watchdog.link")

Connect = Callable[[], Awaitable[trio.abc.Stream]]

#: Error codes that will not go away by retrying soon: back off to the maximum.
_PERMANENT: Final = frozenset({"auth", "version", "bad_hello"})
_RECV_BYTES: Final = 65536


class LinkError(Exception):
    """The connection must be dropped and made again."""


class CollectorRefused(LinkError):
    """The collector sent a fatal error frame."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"collector refused: {code}: {msg}")
        self.code = code
        self.msg = msg


class RateLimiter:
    """A token bucket over bytes, shared by every link of the agent.

    ``take`` lets a sender run into debt and then sleeps it off, so one big
    batch is sent at once but the average stays at ``rate`` bytes/s.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 4096.0)
        self._tokens = self.burst
        self._stamp: float | None = None

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = trio.current_time()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= n
        if self._tokens < 0:
            await trio.sleep(-self._tokens / self.rate)


def tcp_connector(
    host: str, port: int, *, tls: bool = False, ca_file: str | None = None, timeout: float = 10.0
) -> Connect:
    """A ``Connect`` for TCP (optionally TLS, verifying the collector's certificate).

    ``ValueError`` if ``ca_file`` cannot be used."""
    ctx: ssl.SSLContext | None = None
    if tls or ca_file:
        try:
            ctx = ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{ca_file}: {exc}") from None

    async def connect() -> trio.abc.Stream:
        with trio.fail_after(timeout):
            if ctx is not None:
                stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=ctx
                )
                await stream.do_handshake()  # type: ignore[attr-defined]
                return stream
            return await trio.open_tcp_stream(host, port)

    return connect


class Link:
    """Delivers one session's spool; see the module docstring."""

    def __init__(
        self,
        spool: Spool,
        connect: Connect,
        *,
        token: str | None = None,
        keyframe_every: int = 100,
        limiter: RateLimiter | None = None,
        on_flow: Callable[[float], None] | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        hello_timeout: float = 15.0,
        ack_timeout: float = 60.0,
        batch_bytes: int = 65536,
        name: str = "live",
        compress: tuple[str, ...] = CODECS,
        ext: tuple[str, ...] = EXTENSIONS,
    ) -> None:
        self.spool = spool
        self._connect = connect
        self.token = token or None
        self.keyframe_every = keyframe_every
        self.limiter = limiter or RateLimiter(0)
        self.on_flow = on_flow
        self.backoff = backoff
        self.hello_timeout = hello_timeout
        self.ack_timeout = ack_timeout
        # Small batches under a tight rate cap keep the pacing smooth.
        rate = self.limiter.rate
        self.batch_bytes = batch_bytes if rate <= 0 else max(2048, min(batch_bytes, int(rate / 4)))
        self.name = name
        #: Stream codecs offered in the hello (zstd: ~5x fewer bytes on the wire).
        self.compress = compress
        #: Extensions offered (counter: integer leaves as increments, ~13% fewer bytes).
        self.ext = ext
        self.connected = False  # welcomed on the current connection
        self.healthy = False  # and acked at least once there
        #: trio time at which a send_all started that has not returned yet: a
        #: send that stays blocked means the socket does not drain.
        self.send_started: float | None = None
        self.bytes_sent = 0
        self.frames_sent = 0
        self.connections = 0
        self.last_error: str | None = None
        self._kick = trio.Event()
        self._rejected: set[int] = set()
        self._failure: BaseException | None = None
        self._ack_scope = trio.CancelScope()
        self._sent_seq = -1

    # -- control ------------------------------------------------------------
    def kick(self) -> None:
        """Retry now instead of finishing the current backoff (e.g. the session ended)."""
        self._kick.set()

    async def run(self) -> None:
        """Deliver until the spool is done; never raises for network trouble."""
        failures = 0
        while not self.spool.done:
            permanent = False
            try:
                stream = await self._connect()
            except (OSError, trio.TooSlowError) as exc:
                failures += 1
                self._failed(f"cannot connect: {exc or type(exc).__name__}", failures)
                await self._pause(backoff_delay(failures, *self.backoff))
                continue
            try:
                await self._session(stream)
            except (LinkError, ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                    trio.TooSlowError, OSError, ssl.SSLError) as exc:  # fmt: skip
                # After a working connection the backoff starts afresh.
                failures = 1 if self.healthy else failures + 1
                if isinstance(exc, CollectorRefused) and exc.code in _PERMANENT:
                    # Retrying soon will not fix a wrong token or version.
                    permanent = True
                    log.error("collector refused the session",
                              extra={"link": self.name, "code": exc.code, "detail": exc.msg})  # fmt: skip
                self._failed(f"{type(exc).__name__}: {exc}", failures)
            except Exception as exc:
                # A bug here must not end delivery (nor take the application
                # down with the watchdog): log it, start over from the spool.
                failures += 1
                log.exception("link failed unexpectedly; reconnecting", extra={"link": self.name})
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                return
            finally:
                self.connected = self.healthy = False
                self.send_started = None
                await trio.aclose_forcefully(stream)
            if not self.spool.done:
                await self._pause(self.backoff[1] if permanent
                                  else backoff_delay(failures, *self.backoff))  # fmt: skip

    # -- one connection -----------------------------------------------------------
    async def _session(self, stream: trio.abc.Stream) -> None:
        """Run one connection; returns when the spool is done, raises for any
        reason to reconnect (``self.connected`` tells whether it got a welcome)."""
        spool = self.spool
        state = spool.state
        hello = Hello(
            session=spool.session,
            token=self.token,
            host=state.get("host"),
            agent=state.get("agent"),
            tags=tuple(state.get("tags") or ()),
            compress=self.compress,
            ext=self.ext,
        )
        conn = ClientConnection()
        await stream.send_all(conn.send(hello))
        with trio.fail_after(self.hello_timeout):
            first = await _next_event(stream, conn)
        if type(first) is ErrorFrame:
            raise CollectorRefused(first.code, first.msg)
        if type(first) is not Welcome:
            raise LinkError(f"expected welcome, got {type(first).__name__}")
        self.connections += 1
        if first.acked >= spool.next_seq and not spool.sealed:
            # The collector holds more of this session than we ever wrote (the
            # spool was wiped, the id reused): new records must come after it.
            log.warning("collector is ahead of the spool; skipping seqs",
                        extra={"link": self.name, "acked": first.acked,
                               "next_seq": spool.next_seq})  # fmt: skip
            spool.next_seq = first.acked + 1
        spool.ack(first.acked)
        self.connected = True
        self.healthy = False
        self._failure = None
        self._sent_seq = first.acked
        log.info("connected to the collector",
                 extra={"link": self.name, "session": spool.session,
                        "resume_after": first.acked})  # fmt: skip
        if spool.done:
            self._healthy()
            return
        cursor = spool.cursor(first.acked)
        self._ack_scope = trio.CancelScope()
        try:
            async with trio.open_nursery() as nursery:
                scope = nursery.cancel_scope
                nursery.start_soon(self._guard, scope, self._receiver, stream, conn)
                nursery.start_soon(self._guard, scope, self._sender, stream, conn, cursor)
                nursery.start_soon(self._guard, scope, self._stall_watch)
        finally:
            cursor.close()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    async def _guard(
        self, scope: trio.CancelScope, fn: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Run a connection task: when it ends, so does the connection, and its
        failure is re-raised alone (not as an exception group) by ``_session``."""
        try:
            await fn(*args)
        except (LinkError, ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                OSError, ssl.SSLError) as exc:  # fmt: skip
            if self._failure is None:
                self._failure = exc
        scope.cancel()

    async def _sender(
        self, stream: trio.abc.Stream, conn: ClientConnection, cursor: Cursor
    ) -> None:
        delta = DeltaEncoder(self.keyframe_every, counter=COUNTER in conn.ext)
        spool = self.spool
        while True:
            batch = cursor.next_batch(self.batch_bytes)
            if not batch:
                await spool.wait_changed()
                continue
            frames = self._frames(batch, delta)
            if not frames:
                continue
            # Counted as frames below, sent as batches where negotiated.
            data = conn.send_many(group_batches(frames) if BATCH in conn.ext else frames)
            await self.limiter.take(len(data))
            self.send_started = trio.current_time()
            await stream.send_all(data)
            self.send_started = None
            self.bytes_sent += len(data)
            self.frames_sent += len(frames)
            self._sent_seq = batch[-1].seq
            if self._ack_scope.deadline == math.inf:
                self._ack_scope.deadline = trio.current_time() + self.ack_timeout
            if type(frames[-1]) is Bye:
                # The collector reads nothing after a bye; what is left is its ack.
                await trio.sleep_forever()

    def _frames(self, batch: list[Record], delta: DeltaEncoder) -> list[ClientFrame]:
        frames: list[ClientFrame] = []
        for rec in batch:
            if rec.seq in self._rejected:
                continue
            if rec.kind == "sample":
                try:
                    frames.append(delta.encode(rec.seq, rec.ts, rec.name or "", rec.data or {}))
                except (ValueError, TypeError) as exc:
                    log.warning("unsendable sample skipped",
                                extra={"seq": rec.seq, "error": str(exc)})  # fmt: skip
            elif rec.kind == "event":
                frames.append(Event(rec.seq, rec.ts, rec.name or "event", rec.data))
            else:
                frames.append(Bye(rec.seq, rec.ts, rec.data))
                break
        return frames

    async def _receiver(self, stream: trio.abc.Stream, conn: ClientConnection) -> None:
        spool = self.spool
        while True:
            frame = await _next_event(stream, conn)
            if type(frame) is Ack:
                spool.ack(frame.seq)
                if not self.healthy:
                    self._healthy()
                if spool.done:
                    return
                now = trio.current_time()
                self._ack_scope.deadline = (
                    math.inf if frame.seq >= self._sent_seq else now + self.ack_timeout
                )
            elif type(frame) is Flow:
                if self.on_flow is not None:
                    self.on_flow(frame.min_interval)
            elif type(frame) is ErrorFrame:
                if frame.fatal:
                    raise CollectorRefused(frame.code, frame.msg)
                log.warning("collector rejected a frame",
                            extra={"link": self.name, "code": frame.code, "detail": frame.msg,
                                   "seq": frame.seq})  # fmt: skip
                if frame.seq is not None:
                    self._rejected.add(frame.seq)
                # A rejected frame does not move the collector's delta chain, but
                # ours moved: start clean on a new connection.
                raise LinkError(f"frame rejected ({frame.code}); restarting the delta chain")

    async def _stall_watch(self) -> None:
        with self._ack_scope:
            await trio.sleep_forever()
        raise LinkError(f"no ack for {self.ack_timeout:g} s")

    # -- helpers -------------------------------------------------------------------
    async def _pause(self, delay: float) -> None:
        with trio.move_on_after(delay):
            await self._kick.wait()
        self._kick = trio.Event()

    def _healthy(self) -> None:
        """The first ack on a connection: it works, the outage (if any) is over.

        Not the welcome: a collector that welcomes and then fails would make
        every retry look like a recovery (and reset the backoff)."""
        self.healthy = True
        if self.last_error is not None:
            log.warning("delivering to the collector again",
                        extra={"link": self.name, "session": self.spool.session})  # fmt: skip
            self.last_error = None

    def _failed(self, error: str, failures: int) -> None:
        """Warn once per outage; the rest of the episode goes to debug."""
        extra = {"link": self.name, "session": self.spool.session, "error": error,
                 "attempt": failures, "pending": self.spool.pending}  # fmt: skip
        if self.last_error is None:
            log.warning("collector unreachable; spooling and retrying", extra=extra)
        else:
            log.debug("collector still unreachable", extra=extra)
        self.last_error = error


async def _next_event(stream: trio.abc.Stream, conn: ClientConnection) -> ServerEvent:
    while True:
        event = conn.next_event()
        if type(event) is Closed:
            raise LinkError("the collector closed the connection")
        if event is not NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(_RECV_BYTES))
