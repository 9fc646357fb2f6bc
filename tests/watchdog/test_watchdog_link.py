"""The link against a collector side driven by hand over in-memory streams.

The peer is the protocol package's own sans-IO code (Decoder + Reassembler +
Encoder), so every rule of the wire contract is checked on what the link sends
(seq order, snap before delta per connection). The end-to-end tests with a
real collector process are in test_watchdog_e2e.py. Time is trio's autojump
clock: backoffs and timeouts take no wall time.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from deltawire.protocol import (
    CLIENT,
    NEED_DATA,
    Ack,
    Bye,
    Decoder,
    Delta,
    Document,
    Encoder,
    ErrorFrame,
    Flow,
    Frame,
    Hello,
    Reassembler,
    Snap,
    Welcome,
)
from deltawire.watchdog.link import Link, RateLimiter, backoff_delay
from deltawire.watchdog.spool import Spool, session_dir

META = {"session": "sess-1", "host": "box", "agent": "deltawire-watchdog/test", "tags": ["t1"]}


class Peer:
    """The collector's end of one in-memory connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = Decoder(CLIENT)
        self.encoder = Encoder()
        self.reassembler: Reassembler | None = None
        self.frames: list[Frame] = []
        self.docs: list[Document] = []

    async def frame(self) -> Frame:
        while True:
            f = self.decoder.next_event()
            if f is not NEED_DATA:
                self.frames.append(f)
                if type(f) is Hello:
                    self.reassembler = Reassembler.for_hello(f)
                else:
                    assert self.reassembler is not None, "a frame before hello"
                    self.docs.append(self.reassembler.feed(f))  # type: ignore[arg-type]
                return f
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.decoder.receive_data(bytes(data))

    async def hello(self, acked: int = -1) -> Hello:
        f = await self.frame()
        assert type(f) is Hello
        await self.send(Welcome(session=f.session, acked=acked))
        return f

    async def read_until(self, seq: int) -> list[Document]:
        while not self.docs or self.docs[-1].seq < seq:
            await self.frame()
        return self.docs

    async def send(self, *frames: Frame) -> None:
        await self.stream.send_all(self.encoder.send_many(list(frames)))


class Net:
    """Hands out in-memory connections; the test accepts them as ``Peer``s."""

    def __init__(self, lockstep: bool = False) -> None:
        self.send, self.recv = trio.open_memory_channel[Peer](10)
        self.refuse = 0  # refuse this many connection attempts
        self.attempts: list[float] = []
        self.lockstep = lockstep

    async def connect(self) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        if self.refuse:
            self.refuse -= 1
            raise OSError(111, "Connection refused")
        pair = (trio.testing.lockstep_stream_pair() if self.lockstep
                else trio.testing.memory_stream_pair())  # fmt: skip
        await self.send.send(Peer(pair[1]))
        return pair[0]

    async def accept(self) -> Peer:
        return await self.recv.receive()


@pytest.fixture
def spool(tmp_path: pathlib.Path) -> Iterator[Spool]:
    sp = Spool(session_dir(tmp_path, "sess-1"), segment_bytes=600, fsync="never", meta=META)
    yield sp
    sp.close()


def fill(spool: Spool, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        spool.append("sample", 1000.0 + i, "process", {"i": i, "mem": {"rss": 1 << 20}})
        spool.append("sample", 1000.0 + i, "system", {"cpu": 1.5, "i": i})
    spool.commit()


def kinds_by_name(frames: list[Frame]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in frames:
        if type(f) in (Snap, Delta):
            out.setdefault(f.name, []).append(f.t)  # type: ignore[union-attr]
    return out


async def test_hello_then_everything_after_acked_in_order(
    spool: Spool, autojump_clock: Any
) -> None:
    fill(spool, 10)  # seqs 0..19
    net = Net()
    link = Link(spool, net.connect, token="sekret", keyframe_every=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        hello = await peer.hello(acked=5)
        assert (hello.session, hello.host, hello.agent, hello.tags, hello.token) == (
            "sess-1", "box", "deltawire-watchdog/test", ("t1",), "sekret")  # fmt: skip
        docs = await peer.read_until(19)
        assert [d.seq for d in docs] == list(range(6, 20))
        # Full samples come back out of the reassembler unchanged.
        assert docs[-2].data == {"i": 9, "mem": {"rss": 1 << 20}}
        by_name = kinds_by_name(peer.frames)
        assert all(k[0] == "snap" and set(k[1:]) == {"delta"} for k in by_name.values())
        await peer.send(Ack(19))
        await spool.wait_changed()
        assert spool.pending == 0 and not list(spool.directory.glob("*.seg"))
        nursery.cancel_scope.cancel()


async def test_new_records_flow_as_they_are_committed(spool: Spool, autojump_clock: Any) -> None:
    net = Net()
    link = Link(spool, net.connect)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        await peer.hello()
        spool.append("sample", 1.0, "process", {"a": 1})  # not committed: not sent
        spool.append("event", 1.0, "deploy", {"v": "1"})
        spool.commit()
        docs = await peer.read_until(1)
        assert [(d.kind, d.name) for d in docs] == [("sample", "process"), ("event", "deploy")]
        nursery.cancel_scope.cancel()


async def test_reconnect_resumes_after_acked_and_restarts_with_snaps(
    spool: Spool, autojump_clock: Any
) -> None:
    fill(spool, 5)  # 0..9
    net = Net()
    link = Link(spool, net.connect, backoff=(0.5, 4.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        first = await net.accept()
        await first.hello()
        await first.read_until(9)
        await first.send(Ack(3))
        await spool.wait_changed()
        await first.stream.aclose()  # the collector dies; it had stored up to 6
        fill(spool, 2, start=5)  # 10..13 while disconnected
        t0 = trio.current_time()
        second = await net.accept()
        assert trio.current_time() - t0 <= 0.5  # one short backoff after a working connection
        await second.hello(acked=6)
        docs = await second.read_until(13)
        assert [d.seq for d in docs] == list(range(7, 14))
        by_name = kinds_by_name(second.frames)
        assert by_name["process"][0] == "snap" and by_name["system"][0] == "snap"
        nursery.cancel_scope.cancel()


async def test_collector_down_backs_off_exponentially_with_jitter(
    spool: Spool, autojump_clock: Any
) -> None:
    fill(spool, 1)
    net = Net()
    net.refuse = 6
    link = Link(spool, net.connect, backoff=(1.0, 8.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        await peer.hello()
        await peer.read_until(1)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(net.attempts, net.attempts[1:], strict=False)]
    caps = [1, 2, 4, 8, 8, 8]
    for gap, cap in zip(gaps, caps, strict=True):
        assert cap / 2 <= gap <= cap + 1e-6
    assert "cannot connect" in (link.last_error or "") or link.last_error is None


def test_backoff_delay_bounds() -> None:
    for failures in range(1, 12):
        d = backoff_delay(failures, 0.5, 30.0)
        cap = min(30.0, 0.5 * 2 ** (failures - 1))
        assert cap / 2 <= d <= cap


async def test_bye_acked_ends_the_link(spool: Spool, autojump_clock: Any) -> None:
    fill(spool, 2)
    spool.append("bye", 2000.0, None, {"exit_code": 3})
    spool.commit()
    net = Net()
    link = Link(spool, net.connect)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        await peer.hello()
        docs = await peer.read_until(4)
        assert docs[-1].kind == "session" and docs[-1].data == {"exit_code": 3}
        assert type(peer.frames[-1]) is Bye
        await peer.send(Ack(4))
    assert spool.done  # run() returned by itself


async def test_flow_reaches_the_agent(spool: Spool, autojump_clock: Any) -> None:
    seen: list[float] = []
    net = Net()
    link = Link(spool, net.connect, on_flow=seen.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        await peer.hello()
        await peer.send(Flow(5.0), Flow(0.0))
        fill(spool, 1)
        await peer.read_until(1)  # the link read past both flows by now
        await peer.send(Ack(1))
        await spool.wait_changed()
        assert seen == [5.0, 0.0]
        nursery.cancel_scope.cancel()


async def test_fatal_auth_error_backs_off_to_the_maximum(
    spool: Spool, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    net = Net()
    link = Link(spool, net.connect, backoff=(0.5, 20.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        await peer.frame()
        await peer.send(ErrorFrame(code="auth", msg="missing or unknown token", fatal=True))
        t0 = trio.current_time()
        await net.accept()
        assert trio.current_time() - t0 == pytest.approx(20.0)
        nursery.cancel_scope.cancel()
    assert any("refused" in r.getMessage() and getattr(r, "code", "") == "auth"
               for r in caplog.records)  # fmt: skip


async def test_a_rejected_frame_restarts_the_chain_and_is_not_resent(
    spool: Spool, autojump_clock: Any
) -> None:
    fill(spool, 3)  # 0..5
    net = Net()
    link = Link(spool, net.connect, backoff=(0.5, 4.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        first = await net.accept()
        await first.hello()
        await first.read_until(5)
        await first.send(ErrorFrame(code="bad_frame", msg="nope", fatal=False, seq=2))
        second = await net.accept()
        await second.hello(acked=1)
        docs = await second.read_until(5)
        assert [d.seq for d in docs] == [3, 4, 5]
        nursery.cancel_scope.cancel()


async def test_missing_acks_drop_the_connection(spool: Spool, autojump_clock: Any) -> None:
    fill(spool, 1)
    net = Net()
    link = Link(spool, net.connect, ack_timeout=10.0, backoff=(0.5, 1.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        first = await net.accept()
        await first.hello()
        await first.read_until(1)
        t0 = trio.current_time()
        second = await net.accept()  # the link gave up on the silent one
        assert 10.0 <= trio.current_time() - t0 <= 11.5
        assert "no ack" in (link.last_error or "")
        await second.hello(acked=1)
        nursery.cancel_scope.cancel()


async def test_a_send_that_does_not_drain_is_visible(spool: Spool, autojump_clock: Any) -> None:
    net = Net(lockstep=True)  # no buffer at all: send_all waits for the reader
    link = Link(spool, net.connect)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        await peer.hello()
        fill(spool, 1)
        await trio.sleep(5)  # the peer reads nothing for 5 s of (virtual) time
        assert link.send_started is not None
        assert trio.current_time() - link.send_started >= 5
        await peer.read_until(1)
        await trio.testing.wait_all_tasks_blocked()
        assert link.send_started is None
        nursery.cancel_scope.cancel()


async def test_rate_limiter_caps_bytes_per_second(spool: Spool, autojump_clock: Any) -> None:
    for i in range(200):
        spool.append("event", 1.0, "e", {"i": i, "pad": "x" * 200})
    spool.commit()
    net = Net()
    limiter = RateLimiter(2000.0)
    link = Link(spool, net.connect, limiter=limiter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        peer = await net.accept()
        await peer.hello()
        t0 = trio.current_time()
        await peer.read_until(199)
        elapsed = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    # Everything beyond the first second's burst went at the capped rate.
    assert elapsed >= (link.bytes_sent - limiter.burst) / limiter.rate - 1e-6
    assert link.bytes_sent / max(elapsed, 1e-9) <= 2000.0 * 1.2


async def test_rate_limiter_zero_means_no_cap(autojump_clock: Any) -> None:
    limiter = RateLimiter(0)
    t0 = trio.current_time()
    await limiter.take(10**9)
    assert trio.current_time() == t0
    assert math.isfinite(limiter.burst)
