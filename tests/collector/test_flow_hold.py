"""Flow control flips at most once per ``FLOW_HOLD_S``: a queue hovering
around its high water must not send a ``flow`` frame to every connection
several times a second. Time is trio's autojump clock; the queue is the
pipeline's own, filled by ``submit`` and drained as its writer would."""

from __future__ import annotations

import itertools
import pathlib
from typing import Any

import trio
import trio.testing

from deltawire.collector.connection import handle_connection
from deltawire.collector.hub import Hub, IngestConfig
from deltawire.collector.pipeline import FLOW_HOLD_S, Pipeline, PipelineConfig
from deltawire.collector.stats import Stats
from deltawire.collector.stores import open_store
from deltawire.collector.writer import Item, ThreadWriter
from deltawire.protocol import NEED_DATA, ClientConnection, Flow, Hello


class _Nobody:
    def on_commit(self, seq: int) -> None:
        pass

    def on_store_reject(self, seq: int, reason: str) -> None:
        pass


async def test_a_hovering_queue_flips_flow_once_per_hold(
    tmp_path: pathlib.Path, autojump_clock: Any
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'flow.db'}")
    flows: list[tuple[float, float]] = []
    pipeline = Pipeline(store, Stats(), PipelineConfig(queue_size=4),
                        on_flow=lambda i: flows.append((trio.current_time(), i)),
                        writer=ThreadWriter(store))  # fmt: skip
    who = _Nobody()

    async def fill() -> None:  # to 3/4: the high water
        for seq in range(3):
            await pipeline.submit(who, [Item("s", seq, "n", 1.0, None)])

    def drain() -> None:  # to 0: below the low water
        while True:
            try:
                pipeline._receive.receive_nowait()
            except trio.WouldBlock:
                break
        pipeline._check_flow()

    t0 = trio.current_time()
    await fill()
    assert [i for _, i in flows] == [5.0]  # the first crossing is told at once
    # Twenty crossings each way within 2 holds: two more flips at most, each
    # at least a hold after the one before.
    for _ in range(20):
        drain()
        await trio.sleep(FLOW_HOLD_S / 10)
        await fill()
    assert len(flows) <= 3, flows
    assert all(b[0] - a[0] >= FLOW_HOLD_S for a, b in itertools.pairwise(flows))
    # A state that holds is announced once the hold is over (the monitor's look).
    drain()
    await trio.sleep(FLOW_HOLD_S)
    pipeline._check_flow()
    assert flows[-1][1] == 0.0 and not pipeline.throttled
    assert trio.current_time() - t0 < 4 * FLOW_HOLD_S


async def test_a_connection_is_told_each_flow_change_once(tmp_path: pathlib.Path) -> None:
    """A change undone before the sender ran sends nothing; the same value
    twice is sent once; the agent ends up told the latest value."""
    store = open_store(f"sqlite:///{tmp_path / 'told.db'}")
    store.open()
    stats = Stats()
    pipeline = Pipeline(store, stats, PipelineConfig())
    hub = Hub(store, pipeline, stats, IngestConfig(ack_interval=0.01))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    conn = ClientConnection()
    flows: list[float] = []

    async def until_welcome() -> None:
        while conn.welcome is None:
            conn.receive_data(await client_stream.receive_some())
            while conn.next_event() is not NEED_DATA:
                pass

    async def next_flow() -> float:
        while True:
            conn.receive_data(await client_stream.receive_some())
            while (frame := conn.next_event()) is not NEED_DATA:
                if type(frame) is Flow:
                    return frame.min_interval

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipeline.run)
                nursery.start_soon(handle_connection, server_stream, hub)
                await client_stream.send_all(conn.send(Hello(session="told")))
                await until_welcome()
                hub.broadcast_flow(5.0)
                hub.broadcast_flow(0.0)  # undone before the sender ran
                hub.broadcast_flow(7.0)
                hub.broadcast_flow(7.0)
                flows.append(await next_flow())
                hub.broadcast_flow(7.0)  # told already: nothing goes out
                # An observation window, not synchronisation: the sender (20x
                # its ack interval) would have sent a second 7 by now.
                await trio.sleep(0.2)
                hub.broadcast_flow(0.0)
                flows.append(await next_flow())
                assert stats.flow_frames_sent == 2
                await client_stream.aclose()
                pipeline.close()
    finally:
        store.close()
    assert flows == [7.0, 0.0]
