"""The whole agent in-process: a real child, real samplers, a real event socket,
a real spool; the collector side is the protocol's sans-IO peer over in-memory
streams (the same session against a real collector process is in
test_watchdog_e2e.py)."""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

import pytest
import trio

from deltawire.protocol import Ack, Document, Hello, Welcome
from deltawire.watchdog.agent import Agent, AgentConfig, AgentError, open_agent, run_session
from deltawire.watchdog.spool import session_dirs

from .test_watchdog_link import Net, Peer

REPO = pathlib.Path(__file__).resolve().parents[2]


class MemCollector:
    """Stores documents by (session, seq), acks each frame, closes after a bye."""

    def __init__(self) -> None:
        self.net = Net()
        self.docs: dict[tuple[str, int], Document] = {}
        self.hellos: list[Any] = []
        self.changed = trio.Event()

    def acked(self, session: str) -> int:
        return max((seq for s, seq in self.docs if s == session), default=-1)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                nursery.start_soon(self._connection, await self.net.accept())

    async def _connection(self, peer: Peer) -> None:
        try:
            hello = await peer.frame()
            assert type(hello) is Hello
            self.hellos.append(hello)
            await peer.send(Welcome(session=hello.session, acked=self.acked(hello.session)))
            while True:
                await peer.frame()
                doc = peer.docs[-1]
                self.docs.setdefault((doc.session, doc.seq), doc)
                self.changed.set()
                self.changed = trio.Event()
                await peer.send(Ack(doc.seq))
                if doc.kind == "session":
                    await peer.stream.aclose()
                    return
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def session_docs(self, session: str) -> list[Document]:
        return [d for (s, _), d in sorted(self.docs.items()) if s == session]

    async def until(self, session: str, names: set[str], count: int = 1) -> None:
        """Wait until ``session`` holds ``count`` documents of each of ``names``."""
        while not all(sum(d.name == n for d in self.session_docs(session)) >= count
                      for n in names):  # fmt: skip
            await self.changed.wait()


def held(stop: pathlib.Path, code: int = 0) -> list[str]:
    """A command that runs until ``stop`` exists: a test ends it on a condition
    it waited for, never after a fixed time a slow machine could spend first."""
    return ["sh", "-c", f"while [ ! -e {stop} ]; do sleep 0.05; done; exit {code}"]


async def run_until(agent: Agent, collector: MemCollector, names: set[str], stop: pathlib.Path,
                    count: int = 1) -> int:  # fmt: skip
    """Run ``agent``'s session against ``collector``; once it holds ``count``
    documents of each of ``names``, create ``stop``; return the exit code."""
    codes: list[int] = []

    async def session() -> None:
        codes.append(await run_session(agent))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.serve)
        with trio.fail_after(60):  # generous: a slow machine is slow, not wrong
            async with trio.open_nursery() as run:
                run.start_soon(session)
                await collector.until(agent.spool.session, names, count)
                stop.touch()
        nursery.cancel_scope.cancel()
    return codes[0]


@pytest.fixture
def child_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def config(tmp_path: pathlib.Path, net: Net, command: list[str], **kw: Any) -> AgentConfig:
    defaults: dict[str, Any] = {
        "interval": 0.1, "push_every": 2, "tags": ("test", "agent"),
        "spool_dir": tmp_path / "spool", "replay_rate": 0, "shutdown_grace": 5.0,
    }  # fmt: skip
    defaults.update(kw)
    return AgentConfig(command=command, connect=net.connect, **defaults)


APP = r"""
import socket, subprocess, sys, os, time
from deltawire.watchdog.client import emit
assert emit("app.ready", {"pid": os.getpid()})
subprocess.run([sys.executable, "-m", "deltawire.watchdog", "emit", "shell.step", "--data", '{"n": 2}'],
               check=True)
s = socket.socket(socket.AF_UNIX); s.connect(os.environ["DELTAWIRE_EVENTS"])
s.sendall(b"this is not json\n"); s.close()
while not os.path.exists(sys.argv[1]):  # the test says when (it has what it asserts)
    time.sleep(0.02)
sys.exit(3)
"""


async def test_a_session_from_start_to_bye(tmp_path: pathlib.Path, child_env: None) -> None:
    collector = MemCollector()
    stop = tmp_path / "stop"
    cfg = config(tmp_path, collector.net, [sys.executable, "-c", APP, str(stop)])
    agent = open_agent(cfg)
    session = agent.spool.session
    wanted = {"process", "system", "app.ready", "shell.step", "watchdog.malformed_events"}
    assert await run_until(agent, collector, wanted, stop) == 3
    docs = collector.session_docs(session)
    seqs = [d.seq for d in docs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert docs[-1].kind == "session" and docs[-1].data == {"exit_code": 3}
    names = [d.name for d in docs]
    assert {"process", "system", "app.ready", "shell.step", "watchdog.malformed_events"} <= set(
        names
    )
    process = next(d for d in docs if d.name == "process")
    assert process.data is not None and {"cpu", "mem", "threads", "pid"} <= set(process.data)
    system = next(d for d in docs if d.name == "system")
    assert system.data is not None and {"cpu", "mem", "load"} <= set(system.data)
    events = {d.name: d.data for d in docs if d.kind == "event"}
    assert events["shell.step"] == {"n": 2}
    assert events["watchdog.malformed_events"] == {"count": 1, "total": 1}
    hello = collector.hellos[0]
    assert hello.tags == ("test", "agent") and hello.agent.startswith("deltawire-watchdog/")
    # Delivered: nothing is left in the spool.
    assert session_dirs(cfg.spool_dir) == []


async def test_collector_down_at_start_then_up(tmp_path: pathlib.Path, child_env: None) -> None:
    collector = MemCollector()
    collector.net.refuse = 3  # the first connection attempts fail
    stop = tmp_path / "stop"
    cfg = config(tmp_path, collector.net, held(stop))
    agent = open_agent(cfg)
    agent.link.backoff = (0.2, 0.4)
    # The run ends once 8 system samples are stored (a condition, not the
    # 1.5 s it used to sleep): some were taken while nobody listened.
    assert await run_until(agent, collector, {"system"}, stop, count=8) == 0
    assert collector.net.refuse == 0, "the collector was never down"
    docs = collector.session_docs(agent.spool.session)
    samples = [d for d in docs if d.name == "system"]
    assert len(samples) >= 8  # none lost while nobody listened
    seqs = [d.seq for d in docs]
    assert seqs == list(range(len(seqs)))  # every seq, exactly once, in order
    assert docs[-1].data == {"exit_code": 0}


async def test_unacknowledged_end_stays_in_the_spool(tmp_path: pathlib.Path) -> None:
    net = Net()
    net.refuse = 10**6  # never reachable
    cfg = config(tmp_path, net, ["true"], shutdown_grace=0.3)
    agent = open_agent(cfg)
    with trio.fail_after(30):
        assert await run_session(agent) == 0
    (left,) = session_dirs(cfg.spool_dir)
    assert left.name == f"s-{agent.spool.session}"


async def test_command_not_found(tmp_path: pathlib.Path) -> None:
    cfg = config(tmp_path, Net(), ["/nonexistent/cmd"])
    with pytest.raises(AgentError) as info:
        await run_session(open_agent(cfg))
    assert info.value.exit_code == 127
    assert session_dirs(cfg.spool_dir) == []  # no empty session left behind


def test_bad_session_and_pid_are_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(AgentError, match="--session"):
        open_agent(config(tmp_path, Net(), ["true"], session="a b"))
    with pytest.raises(AgentError, match="--pid"):
        open_agent(AgentConfig(pid=2**22 + 12345, spool_dir=tmp_path))


def test_a_live_session_cannot_be_opened_twice(tmp_path: pathlib.Path) -> None:
    first = open_agent(config(tmp_path, Net(), ["true"], session="same"))
    try:
        with pytest.raises(AgentError, match="already being watched"):
            open_agent(config(tmp_path, Net(), ["true"], session="same"))
    finally:
        first.close()
    assert os.path.isdir(tmp_path / "spool")


async def test_attached_to_a_running_pid(tmp_path: pathlib.Path) -> None:
    collector = MemCollector()
    stop = tmp_path / "stop"
    target = await trio.lowlevel.open_process(held(stop))
    cfg = config(tmp_path, collector.net, [], pid=target.pid)
    agent = open_agent(cfg)
    # The target ends once a process sample is stored (it used to sleep 1 s,
    # which a slow start could spend before the first sample).
    assert await run_until(agent, collector, {"process"}, stop) == 0
    await target.wait()
    docs = collector.session_docs(agent.spool.session)
    process = [d for d in docs if d.name == "process"]
    assert process and process[0].data is not None and process[0].data["pid"] == target.pid
    assert docs[-1].data == {"reason": "exited"}


async def test_flow_and_congestion_widen_the_interval(
    tmp_path: pathlib.Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    agent = open_agent(config(tmp_path, Net(), ["true"], interval=1.0))
    try:
        assert agent.interval == 1.0
        agent._on_flow(5.0)  # the collector asks for at most one sample per 5 s
        assert agent.interval == 5.0
        agent._on_flow(0.0)
        assert agent.interval == 1.0
        # A send blocked for longer than an interval: sample less, keep spooling.
        agent.link.send_started = trio.current_time()
        await trio.sleep(2.0)
        agent._check_congestion()
        agent._check_congestion()
        assert agent.interval == 4.0
        for _ in range(10):
            agent._check_congestion()
        assert agent.interval == 16.0  # capped
        agent.link.send_started = None  # drained
        agent._check_congestion()
        assert agent.interval == 1.0
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert sum("does not drain" in w for w in warnings) == 1  # once per episode
        assert sum("drains again" in w for w in warnings) == 1
    finally:
        agent.close()


async def test_the_first_sample_goes_out_at_once(tmp_path: pathlib.Path, child_env: None) -> None:
    # An hour between samples and four per send: only the first-sample flush
    # can deliver anything within the deadline.
    collector = MemCollector()
    cfg = config(tmp_path, collector.net, ["sleep", "60"], interval=3600, push_every=4)
    agent = open_agent(cfg)
    session = agent.spool.session
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.serve)
        nursery.start_soon(run_session, agent)
        with trio.fail_after(30):  # far below the hour between samples
            await collector.until(session, {"process", "system"})
        nursery.cancel_scope.cancel()
