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
from deltawire.protocol import NEED_DATA, ClientConnection, Flow, Hello, Snap


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
    twice is sent once; the agent ends up told the latest value; an agent
    that sent nothing since its last flow frame is told at its next frame,
    not at every flip (issue 16: idle connections got a frame per flip)."""
    store = open_store(f"sqlite:///{tmp_path / 'told.db'}")
    store.open()
    stats = Stats()
    pipeline = Pipeline(store, stats, PipelineConfig())
    hub = Hub(store, pipeline, stats, IngestConfig(ack_interval=0.01))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    conn = ClientConnection()
    flows: list[float] = []
    seq = 0

    async def frames() -> list[Any]:
        conn.receive_data(await client_stream.receive_some())
        out = []
        while (frame := conn.next_event()) is not NEED_DATA:
            out.append(frame)
        return out

    async def until_welcome() -> None:
        while conn.welcome is None:
            await frames()

    async def send_one() -> list[float]:
        """A sample, then what came up to its ack: the flow values among it."""
        nonlocal seq
        seq += 1
        await client_stream.send_all(conn.send(Snap(seq, 1.0 + seq, "p", {"v": seq})))
        told: list[float] = []
        while conn.acked < seq:
            told += [f.min_interval for f in await frames() if type(f) is Flow]
        return told

    async def next_flow() -> float:
        while True:
            for frame in await frames():
                if type(frame) is Flow:
                    return frame.min_interval

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipeline.run)
                nursery.start_soon(handle_connection, server_stream, hub)
                await client_stream.send_all(conn.send(Hello(session="told")))
                await until_welcome()
                # Idle since its welcome: flips are not sent, even with the
                # sender free to run between them.
                hub.broadcast_flow(5.0)
                await trio.testing.wait_all_tasks_blocked()
                hub.broadcast_flow(0.0)
                await trio.testing.wait_all_tasks_blocked()
                hub.broadcast_flow(7.0)
                await trio.testing.wait_all_tasks_blocked()
                assert stats.flow_frames_sent == 0
                assert await send_one() == [7.0]  # told the latest once it sends
                assert await send_one() == []  # active: told below at once
                hub.broadcast_flow(5.0)
                hub.broadcast_flow(0.0)  # undone before the sender ran
                hub.broadcast_flow(7.0)  # told already: nothing goes out
                hub.broadcast_flow(3.0)
                hub.broadcast_flow(3.0)
                flows.append(await next_flow())
                hub.broadcast_flow(3.0)  # told already: nothing goes out
                assert await send_one() == []
                hub.broadcast_flow(0.0)
                flows.append(await next_flow())
                assert stats.flow_frames_sent == 3
                await client_stream.aclose()
                pipeline.close()
    finally:
        store.close()
    assert flows == [3.0, 0.0]
