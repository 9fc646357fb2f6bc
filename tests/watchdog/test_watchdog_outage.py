"""A long collector outage with a small spool (issue 11): the agent samples at a
1 s interval while every connection attempt is refused for 10 minutes of
trio's autojump clock; the spool's bound holds the whole time, the drop is
reported as a ``watchdog.spool_dropped`` event, and once the collector is back
the newest data is delivered, in order. The collector's side is the protocol
package's own sans-IO code over in-memory streams (test_watchdog_link.Peer).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import trio

from deltawire.protocol import Ack, Bye, Hello
from deltawire.watchdog.agent import AgentConfig, open_agent
from tests.watchdog.test_watchdog_link import Net, Peer

OUTAGE_S = 10 * 60
BOUND = 32 * 1024


async def _serve(peer: Peer) -> None:
    """Welcome the agent and ack every frame as it arrives."""
    await peer.hello()
    while True:
        frame = await peer.frame()
        seq = getattr(frame, "seq", None)
        if seq is not None:
            await peer.send(Ack(seq))
        if type(frame) is Bye:
            return


async def test_long_outage_bound_holds_drops_reported_newest_delivered(
    tmp_path: pathlib.Path, autojump_clock: Any
) -> None:
    net = Net()
    net.refuse = 10**9  # the collector is down
    cfg = AgentConfig(interval=1.0, push_every=1, session="outage", spool_dir=tmp_path,
                      spool_max_bytes=BOUND, fsync="never", pid=os.getpid(),
                      connect=net.connect)  # fmt: skip
    agent = open_agent(cfg)
    spool = agent.spool
    sizes: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.link.run)
            nursery.start_soon(agent.sample_loop, os.getpid())
            start = trio.current_time()
            while trio.current_time() - start < OUTAGE_S:
                sizes.append(spool.total_bytes)
                await trio.sleep(10)  # simulated time: how often the bound is checked
            assert len(net.attempts) > 10, "the agent kept trying to reconnect"
            newest = spool.last_seq
            net.refuse = 0  # the collector is back
            peer = await net.accept()
            nursery.start_soon(_serve, peer)
            with trio.fail_after(600):
                while not peer.docs or peer.docs[-1].seq < newest:
                    await trio.sleep(1)  # simulated time: let the link catch up
            nursery.cancel_scope.cancel()
    finally:
        agent.close()
    assert max(sizes) <= BOUND + 4096, "the spool outgrew its bound"
    assert agent.samples >= OUTAGE_S * 0.9  # it sampled on, at 1 s, all along
    assert isinstance(peer.frames[0], Hello)
    seqs = [d.seq for d in peer.docs]
    assert seqs == sorted(set(seqs))
    # Most of the outage was dropped, and the drop was said out loud.
    drops = [d.data for d in peer.docs if d.name == "watchdog.spool_dropped"]
    assert drops and drops[-1] is not None
    assert drops[-1]["total"] > 0
    missing = set(range(seqs[-1] + 1)) - set(seqs)
    assert len(missing) <= drops[-1]["total"]
    # The newest data made it: the last 20 records, without a gap.
    assert seqs[-1] >= newest
    assert len(seqs) >= 20 and seqs[-20:] == list(range(seqs[-20], seqs[-1] + 1))
