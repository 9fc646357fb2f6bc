"""One agent connection: read, decode, dispatch; acks and flow go out on a sender task.

The reader stays thin: ``receive_some`` under the idle deadline, feed the
sans-IO ``ServerConnection``, hand documents to the pipeline (which may block:
that is the backpressure), report rejected frames. Every write to the socket
happens under one lock.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from typing import IO, Any, Final, TypeAlias, TypeVar, cast

import trio

from deltawire.protocol import (
    Ack,
    AuthFailed,
    ErrorFrame,
    Flow,
    Hello,
    IdleTimeout,
    Overloaded,
    ProtocolError,
    Replaced,
    ServerConnection,
    ServerFrame,
    error_frame,
)

from .acks import AckTimes, AckTracker
from .hub import Hub
from .stores.base import STORE_BACKOFF, StoreUnavailable
from .writer import Item

__all__ = ["Connection", "handle_connection"]

log = logging.getLogger("deltawire.collector.connection")

T = TypeVar("T")

#: What one read of the socket yields: at most one hello (a connection's first
#: frame), then the documents, built by the writer's ``make_item`` as ``Item``s.
Inbound: TypeAlias = Hello | Item

#: Send deadline once replaced: the acks and the ``replaced`` error are a
#: courtesy to a peer that has most likely gone, and the session's new
#: connection waits for us.
_REPLACED_SEND_S = 1.0
#: How long a connection closed for an error waits for its peer to close too:
#: long enough for a live peer to read the error, short enough that a peer
#: that never closes cannot keep the slot.
_LINGER_SECONDS: Final = 1.0
#: Documents taken from one read before they go to the pipeline (a
#: checkpoint) and the rest are taken: a plain 64 KiB read is ~270 samples,
#: but a compressed one inflates to ~2,600, and taking those in one go kept
#: the event loop from the writer's tasks for tens of ms at a time. About a
#: plain read's worth, so that a run (a queued chunk) is alike whatever the
#: encoding: the queue holds as many chunks either way, and 770-sample runs
#: of batches (a 64 KiB piece) had it hold ~3x the samples of plain's, all
#: of them left to the writer alone at the end of a burst.
_RUN_DOCS: Final = 256
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


def _queues(events: list[Inbound]) -> bool:
    """Whether ``_accept`` queues this run into the slot its reader holds: it
    has documents and no hello first (a hello is answered before them, which
    may wait on the store or a take-over: the slot is not held over that)."""
    return bool(events) and not isinstance(events[0], Hello)


class _Close(Exception):
    """Stop serving this connection (after a fatal error was sent, or the peer left)."""


class Connection:
    def __init__(self, stream: trio.abc.Stream, hub: Hub, peer: str) -> None:
        cfg = hub.config
        self.stream = stream
        self.hub = hub
        self.peer = peer
        self.id = hub.next_id = hub.next_id + 1
        self.proto = ServerConnection(
            max_frame_bytes=cfg.max_frame_bytes,
            max_errors=cfg.max_errors,
            document=hub.pipeline.writer.make_item,
            compress=cfg.compress,
            # Captures record the decompressed lines: replayable as they are.
            tap=self._capture_write if cfg.capture_dir is not None else None,
        )
        self.tracker = AckTracker()
        self._ack_times = AckTimes()
        self.session: str | None = None
        self._send_lock = trio.Lock()
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._flow: float | None = None  # a flow value still to send
        self._flow_told = 0.0  # the last one sent (0 until one is: no limit)
        # Frames came since the last flow frame: a flow change is worth
        # telling now. An idle agent samples nothing it could slow down, so it
        # is told (the latest value only) once it sends again, not at every flip.
        self._active = False
        self._read_scope = trio.CancelScope()
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._late_errors: list[ErrorFrame] = []
        self._capture: IO[bytes] | None = None
        # One connection per session (PROTOCOL.md): a newer hello for our
        # session replaces us; it waits until we read no more and until
        # everything we accepted is stored or refused.
        self._replaced = False
        self._reading_done = trio.Event()
        self._stored_lot = trio.lowlevel.ParkingLot()
        self._send_scope: trio.CancelScope | None = None
        #: A fatal error was sent: let the peer read it before the close.
        self.linger = False

    # -- called by the pipeline and the hub (no awaiting) ---------------------
    def on_commit(self, seq: int) -> None:
        self.tracker.commit(seq)
        self._wake.set()
        self._progress.set()
        self._stored_lot.unpark_all()

    def on_store_reject(self, seq: int, reason: str) -> None:
        # The frame counts as rejected: acks may pass it, and the agent is told.
        self._late_errors.append(
            ErrorFrame("bad_frame", f"the store refused it: {reason}", False, seq)
        )
        self.hub.stats.errors["bad_frame"] += 1
        self.tracker.commit(seq)
        self._wake.set()
        self._progress.set()
        self._stored_lot.unpark_all()

    def notify_flow(self, interval: float) -> None:
        if self.session is None:
            return
        if interval == self._flow_told:
            # What the agent was last told (a change undone before the
            # sender ran, or the welcome said it): nothing to send.
            self._flow = None
            return
        self._flow = interval
        if self._active:
            self._wake.set()

    def stop_reading(self) -> None:
        self._stopping = True
        self._read_scope.cancel()

    def replace(self) -> None:
        """A newer connection took our session: read no more, drain, close
        with ``replaced``. Our peer is most likely gone (that is why its agent
        reconnected), so sends to it get a short deadline."""
        self._replaced = True
        self.stop_reading()
        if self._send_scope is not None:
            self._send_scope.deadline = min(
                self._send_scope.deadline, trio.current_time() + _REPLACED_SEND_S
            )

    async def handed_over(self) -> None:
        """Return once we read no more and all we accepted is stored or refused."""
        await self._reading_done.wait()
        while not self.tracker.idle:
            await self._stored_lot.park()

    # -- the connection's life -------------------------------------------------
    async def run(self) -> None:
        hub = self.hub
        stats = hub.stats
        if len(hub.connections) >= hub.config.max_connections:
            stats.connections_refused += 1
            await self._fatal(Overloaded("the collector is at its connection limit; retry later"))
            return
        hub.join(self)
        stats.connections_open += 1
        stats.connections_total += 1
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sender)
                try:
                    try:
                        await self._read_loop()
                    finally:
                        self._reading_done.set()
                    await self._drain()
                    if self._replaced:
                        await self._fatal(Replaced("another connection took this session over"))
                except _Close:
                    pass
                except _GONE:
                    pass  # the peer went away: what it sent is stored, unacked parts resent
                nursery.cancel_scope.cancel()
        finally:
            self._reading_done.set()
            self.proto.close()  # its buffers and zstd context go now, not at a GC
            if self.session is not None and hub.holders.get(self.session) is self:
                del hub.holders[self.session]
            hub.leave(self)
            stats.connections_open -= 1
            if self._capture is not None:
                self._capture.close()

    async def _read_loop(self) -> None:
        cfg = self.hub.config
        stats = self.hub.stats
        proto = self.proto
        pipeline = self.hub.pipeline
        last_frame = trio.current_time()
        while not self._stopping:
            data: bytes | bytearray = b""
            # One scope per read, for both the idle deadline and shutdown
            # (which cancels the read in progress, never a hand-over to the
            # pipeline); _stopping tells which of the two it was.
            self._read_scope = scope = trio.CancelScope(deadline=last_frame + cfg.idle_timeout)
            with scope:
                data = await self.stream.receive_some(cfg.recv_size)
            if scope.cancelled_caught:
                if self._stopping:
                    return
                await self._fatal(IdleTimeout(f"no complete frame for {cfg.idle_timeout:g} s"))
                raise _Close
            if not data:
                return  # EOF: the client is done sending; acks still go out
            stats.bytes_in += len(data)
            proto.receive_data(data)
            data = b""  # the decoder has it: not held twice while submit blocks
            now = trio.current_time()  # one clock read per read, not per frame
            while True:  # the read's documents, in runs of about _RUN_DOCS
                # Decoded only once the queue can take them (see Pipeline.room).
                await pipeline.room()
                events: list[Inbound] = []
                # pipeline.decoded() whatever came of it, before any wait. (The
                # error is not kept past its except clause: its traceback holds
                # this frame, and this frame would hold it, a reference cycle
                # that kept closed connections' buffers until a cyclic GC.)
                try:
                    proto.next_events(events, _RUN_DOCS)
                except ProtocolError as exc:
                    pipeline.decoded(_queues(events))
                    last_frame = now
                    stats.frames_in += len(events) + 1
                    await self._accept(events)
                    if exc.fatal:
                        await self._fatal(exc)
                        raise _Close from None
                    await self._reject(exc)
                    continue
                except BaseException:
                    pipeline.decoded(False)
                    raise
                pipeline.decoded(_queues(events))
                if not events:
                    break
                last_frame = now
                stats.frames_in += len(events)
                # A short run took every complete line buffered: asking again
                # would only wait for a slot of the queue to learn that.
                short = len(events) < _RUN_DOCS
                await self._accept(events)
                if proto.ended or short:
                    break
            if proto.ended:
                return

    async def _accept(self, events: list[Inbound]) -> None:
        """Hand accepted documents to the pipeline; answer a hello first.

        Documents go in runs: the tracker needs only a run's last seq, since
        a run commits in order and is acknowledged as a whole.
        """
        promised = _queues(events)  # see Pipeline.decoded
        if events and isinstance(hello := events[0], Hello):
            del events[0]
            await self._on_hello(hello)
        if events:
            items = cast(list[Item], events)  # only the first frame is a hello
            self._active = True
            if self._flow is not None:
                self._wake.set()  # a flow change that came while it was idle
            self.tracker.accepted(items[-1].seq)
            self._ack_times.received(items[-1].seq, trio.current_time(), len(items))
            await self.hub.pipeline.submit(self, items, promised)

    async def _reject(self, exc: ProtocolError) -> None:
        """A frame that is not stored: count it, tell the agent, let acks pass it."""
        self.hub.stats.errors[exc.code] += 1
        self.tracker.rejected(exc.seq)
        await self._send(error_frame(exc))
        if self.tracker.want_ack:
            self._wake.set()

    async def _on_hello(self, hello: Hello) -> None:
        hub = self.hub
        if hub.config.tokens and hello.token not in hub.config.tokens:
            await self._fatal(AuthFailed("missing or unknown token"))
            raise _Close
        await self._take_over(hello.session)
        acked = await self._retrying(hub.store.acked, hello.session)
        assert self._nursery is not None
        self._nursery.start_soon(self._retrying, hub.store.session_connected, hello, time.time())
        self.session = hello.session
        hub.session_refs[hello.session] += 1
        frames: list[ServerFrame] = [self.proto.welcome(acked)]
        if hub.pipeline.throttled:
            frames.append(Flow(hub.config.flow_min_interval))
            self._flow_told = hub.config.flow_min_interval
            hub.stats.flow_frames_sent += 1
        await self._send(*frames)
        log.info("session connected",
                 extra={"session": hello.session, "peer": self.peer, "acked": acked})  # fmt: skip

    async def _take_over(self, session: str) -> None:
        """Hold ``session``, replacing its holder: what the older connection
        accepted is stored (or refused) before our welcome reads ``acked``,
        so the welcome counts it, and the session's frames stay in order."""
        hub = self.hub
        older = hub.holders.get(session)
        hub.holders[session] = self
        if older is not None:
            older.replace()
            await older.handed_over()
        if self._replaced:  # a yet newer hello came while we waited
            await self._fatal(Replaced("another connection took this session over"))
            raise _Close

    async def _retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call in a worker thread, retried while the store is unavailable.

        A store outage must not cost a connection: the agent simply waits (and
        keeps spooling) until the store answers.
        """
        # The first try outside stamina's retry context: that context is a
        # reference cycle (freed only by the cyclic GC, which the collector
        # runs rarely), three per connection; a store that answers needs none.
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except StoreUnavailable:
            pass
        async for attempt in STORE_BACKOFF.attempts(on=StoreUnavailable):
            with attempt:
                return await trio.to_thread.run_sync(fn, *args)
        raise AssertionError("retried forever")  # for mypy: the loop only returns

    async def disconnected(self) -> None:
        """Mark the session disconnected in the store if no other connection
        holds it. Called once the socket is closed: a store that is down
        (retried for up to 5 s) must not keep a connection's socket open, nor
        a replaced one's, whose agent has already moved on."""
        if self.session is not None:
            await self._disconnected(self.session)

    async def _disconnected(self, session: str) -> None:
        refs = self.hub.session_refs
        refs[session] -= 1
        if refs[session] <= 0:
            del refs[session]
            try:
                with trio.move_on_after(5):
                    await self._retrying(self.hub.store.session_disconnected, session, time.time())
            except Exception as exc:  # the store being down must not take the daemon with it
                log.warning("could not mark session disconnected",
                            extra={"session": session, "error": repr(exc)})  # fmt: skip

    async def _drain(self) -> None:
        """Reading is over: wait (bounded) until the store has everything, ack, close."""
        with trio.move_on_after(self.hub.config.shutdown_grace):
            while not self.tracker.idle:
                self._progress = trio.Event()
                await self._progress.wait()
        await self._send_pending()

    async def _sender(self) -> None:
        """Coalesces acks (at most one per ack_interval) and relays flow changes."""
        interval = self.hub.config.ack_interval
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                sent = await self._send_pending()
            except _GONE:
                return
            if sent:
                await trio.sleep(interval)

    async def _send_pending(self) -> bool:
        """Send the latest flow value and ack, if any; True if something went out.

        ``tracker.sent`` moves only once the bytes are out, so a send cut short
        (by shutdown) is retried by whoever flushes next, never lost.
        """
        async with self._send_lock:
            frames: list[ServerFrame] = list(self._late_errors)
            self._late_errors.clear()
            flow = self._flow
            if flow is not None:
                frames.append(Flow(flow))
            acked = self.tracker.acked
            if acked > self.tracker.sent:
                frames.append(Ack(acked))
            if not frames:
                return False
            if flow is not None:
                # Told from now on: a change while the bytes go out is
                # compared with this (an advisory cut short by a close is lost).
                self._flow_told = flow
                self._flow = None
                self._active = False
            await self._send_locked(frames)
            if flow is not None:
                self.hub.stats.flow_frames_sent += 1
            if acked > self.tracker.sent:
                self.tracker.sent = acked
                self.hub.stats.acks_sent += 1
                now = trio.current_time()
                for waited, count in self._ack_times.covered(acked, now):
                    self.hub.stats.ack_latency.observe(waited, count)
            return True

    async def _send(self, *frames: ServerFrame) -> None:
        async with self._send_lock:
            await self._send_locked(list(frames))

    async def _send_locked(self, frames: list[ServerFrame]) -> None:
        data = self.proto.send(*frames)
        timeout = _REPLACED_SEND_S if self._replaced else self.hub.config.send_timeout
        with trio.move_on_after(timeout) as scope:
            self._send_scope = scope
            await self.stream.send_all(data)
        self._send_scope = None
        if scope.cancelled_caught:
            raise trio.BrokenResourceError("peer does not read")

    async def _fatal(self, exc: ProtocolError) -> None:
        self.hub.stats.errors[exc.code] += 1
        log.info(
            "closing connection", extra={"peer": self.peer, "code": exc.code, "detail": exc.msg}
        )
        try:
            await self._send(error_frame(exc))
            self.linger = True
        except _GONE:
            pass

    async def close(self) -> None:
        """Close the stream; after a fatal error, half-close and read until
        the peer closes first (bounded).

        Closing a socket that still holds unread input sends a TCP reset,
        which can reach the peer before the error frame it must read (a
        client dribbling bytes into an idle cut always has some in flight).
        Runs after the connection left the hub: it holds no slot.
        """
        if self.linger:
            with trio.move_on_after(_LINGER_SECONDS):
                await _half_close_and_drain(self.stream, self.hub.config.recv_size)
        await self.stream.aclose()

    def _capture_write(self, data: bytes | bytearray | memoryview) -> None:
        if self._capture is None:
            self._open_capture()  # on first data: port probes leave no empty files
        if self._capture is not None:
            self._capture.write(data)

    def _open_capture(self) -> None:
        directory = self.hub.config.capture_dir
        if directory is not None:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            safe_peer = "".join(c if c.isalnum() else "_" for c in self.peer)
            path = directory / f"{stamp}-{self.id:06d}-{safe_peer}.ndjson"
            self._capture = open(path, "ab", buffering=1 << 16)  # noqa: SIM115 - closed in run()


async def handle_connection(stream: trio.abc.Stream, hub: Hub) -> None:
    """The per-connection task the listeners run. Never raises: a bug in one
    connection is logged, it cannot take the daemon down."""
    peer = _peer_name(stream)
    conn = Connection(stream, hub, peer)
    try:
        await conn.run()
    except _GONE:
        pass
    except Exception:
        log.exception("connection handler failed", extra={"peer": peer})
    finally:
        with trio.move_on_after(_LINGER_SECONDS + 1) as scope:
            scope.shield = True
            try:
                await conn.close()
            except _GONE:
                pass
        await conn.disconnected()


async def _half_close_and_drain(stream: trio.abc.Stream, size: int) -> None:
    if isinstance(stream, trio.abc.HalfCloseableStream):  # TLS cannot half-close
        await stream.send_eof()
        while await stream.receive_some(size):
            pass


def _peer_name(stream: trio.abc.Stream) -> str:
    inner = getattr(stream, "transport_stream", stream)
    sock = getattr(inner, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("memory", 0)
    except OSError:
        return "unknown"
    return f"{host}:{port}"
