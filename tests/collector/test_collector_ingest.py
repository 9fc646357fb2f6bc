"""End-to-end ingest against a real collector process: many connections, a
stalled store, SIGTERM and kill -9 in the middle of a stream."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import tempfile

import psutil
import pytest
import trio

from deltawire.collector import server
from deltawire.collector.stores import MetricQuery, open_store
from deltawire.testing.harness import (
    Client,
    Level,
    collector_process,
    make_samples,
    stream_session,
    wait_until,
)
from deltawire.testing.servers import free_port

pytestmark = pytest.mark.slow


def _stored(uri: str, session: str) -> list[int]:
    store = open_store(uri)
    store.open()
    try:
        seqs: list[int] = []
        after = None
        while page := store.find(MetricQuery(session=session, limit=5000, after=after)):
            seqs += [d["seq"] for d in page]
            after = (page[-1]["ts"], page[-1]["id"])
        return seqs
    finally:
        store.close()


def _assert_exactly_once(uri: str, session: str, n: int) -> None:
    seqs = _stored(uri, session)
    assert sorted(seqs) == list(range(n)), f"{session}: {len(seqs)} stored, expected {n}"


async def test_thousand_concurrent_connections(tmp_path: pathlib.Path) -> None:
    samples = make_samples(20)
    with collector_process(tmp_path) as col:
        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(lambda i=i: stream_session(col.port, f"many-{i}", samples,
                                                             reconnect=False, deadline=120))  # fmt: skip
        store = open_store(col.store_uri)
        store.open()
        try:
            assert len(store.sessions(limit=5000)) == 1000
            for i in (0, 499, 999):
                _assert_exactly_once(col.store_uri, f"many-{i}", 20)
        finally:
            store.close()


async def test_stalled_store_pushes_back_then_stores_everything_once(
    tmp_path: pathlib.Path,
) -> None:
    db = tmp_path / "stall.db"
    uri = f"sqlite:///{db}"
    n = 3000
    samples = make_samples(n)
    with collector_process(tmp_path, "--queue-size", "4", "--batch-max-docs", "200",
                           store_uri=uri) as col:  # fmt: skip
        # Open the store first (schema), then hold its write lock from another
        # real connection: the collector's commits fail with "database is locked".
        probe = Client(await trio.open_tcp_stream("127.0.0.1", col.port))
        await probe.send({"t": "hello", "v": 1, "session": "probe"})
        await probe.until(lambda c: c.welcome)
        blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        proc = psutil.Process(col.pid)
        rss_before = proc.memory_info().rss
        acked = Level()
        # Flow control reaches the agents that send (an idle one is told the
        # latest value when it next sends, not at every flip).
        await probe.send({"t": "snap", "seq": 0, "ts": 1000.0, "name": "p", "data": {"v": 0}})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: stream_session(
                col.port, "stalled", samples, chunk=100, deadline=120, progress=acked.set))  # fmt: skip
            await probe.until(lambda c: any(f.min_interval > 0 for f in c.flows), timeout=30)
            # An observation window, not synchronisation: the agent pushes against
            # the full queue for a while, and nothing may come back acked.
            await trio.sleep(1.0)
            assert acked.value == -1, "nothing may be acked while the store is locked"
            rss_stalled = proc.memory_info().rss
            assert rss_stalled - rss_before < 50 * 2**20, "memory must stay bounded"
            blocker.execute("ROLLBACK")
            blocker.close()
            await probe.send({"t": "snap", "seq": 1, "ts": 1001.0, "name": "p", "data": {"v": 1}})
            await probe.until(lambda c: any(f.min_interval == 0 for f in c.flows), timeout=60)
        await probe.aclose()
        _assert_exactly_once(uri, "stalled", n)


async def test_sigterm_during_ingest_loses_nothing_acked(tmp_path: pathlib.Path) -> None:
    uri = f"sqlite:///{tmp_path / 'term.db'}"
    n = 20000
    samples = make_samples(n)
    acked = Level()
    with collector_process(tmp_path, store_uri=uri) as col:
        async with trio.open_nursery() as nursery:

            async def agent() -> None:
                try:
                    await stream_session(col.port, "term", samples, chunk=20, reconnect=False,
                                         pace=0.002, progress=acked.set)  # fmt: skip
                except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

            nursery.start_soon(agent)
            await acked.reach(1000, timeout=30)
            col.proc.send_signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(lambda: col.proc.wait(timeout=30)) == 0
        assert "shutting down" in col.log()
    stored = set(_stored(uri, "term"))
    assert acked.value >= 1000
    assert set(range(acked.value + 1)) <= stored, "every acked seq is stored"
    assert stored == set(range(len(stored))), "stored in order: no holes"


async def test_a_signal_delivered_twice_at_once_still_drains(tmp_path: pathlib.Path) -> None:
    """SIGTERM from the process group and again from a parent that passes it
    on (make does), a moment apart: one request. The collector drains and
    stops as for one, and removes its API workers' directory."""
    db = tmp_path / "twice.db"
    env = {"API_WORKERS": "2"}  # two workers share a directory (peers.py)
    with collector_process(tmp_path, store_uri=f"sqlite:///{db}", http=True, env=env) as col:
        dirs = list(pathlib.Path(tempfile.gettempdir()).glob(f"deltawire-api-{col.pid}-*"))
        assert len(dirs) == 1
        agent = Client(await trio.open_tcp_stream("127.0.0.1", col.port))
        await agent.send({"t": "hello", "v": 1, "session": "twice"})
        await agent.until(lambda c: c.welcome)
        # The drain waits for the store, so the second signal comes during it.
        blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        await agent.send(*({"t": "snap", "seq": i, "ts": 1000.0 + i, "name": "p", "data": {}}
                           for i in range(5)))  # fmt: skip
        col.proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(
            lambda: wait_until(lambda: "shutting down" in col.log(), what="the drain")
        )
        col.proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(
            lambda: wait_until(lambda: "signal ignored" in col.log(), what="the second")
        )
        blocker.execute("ROLLBACK")
        blocker.close()
        await agent.until(lambda c: c.acked == 4)  # the drain stored and acked them
        assert await trio.to_thread.run_sync(lambda: col.proc.wait(timeout=30)) == 0
        log = col.log()
    assert "collector stopped" in log and "exiting at once" not in log
    assert not dirs[0].exists()


async def test_a_later_second_signal_exits_at_once(tmp_path: pathlib.Path) -> None:
    """A second signal once the first is past (a person's second Ctrl-C)
    still ends a drain that waits for a locked store, by that signal."""
    db = tmp_path / "held.db"
    with collector_process(tmp_path, store_uri=f"sqlite:///{db}") as col:
        agent = Client(await trio.open_tcp_stream("127.0.0.1", col.port))
        await agent.send({"t": "hello", "v": 1, "session": "held"})
        await agent.until(lambda c: c.welcome)
        blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # nothing commits: the drain waits
        try:
            await agent.send({"t": "snap", "seq": 0, "ts": 1000.0, "name": "p", "data": {}})
            col.proc.send_signal(signal.SIGTERM)
            await trio.to_thread.run_sync(
                lambda: wait_until(lambda: "shutting down" in col.log(), what="the drain")
            )
            # The property under test: a signal later than the window counts.
            await trio.sleep(server._SAME_SIGNAL_S + 0.2)
            assert col.proc.poll() is None, "still draining (the store is locked)"
            col.proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(lambda: col.proc.wait(timeout=5))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert code == -signal.SIGTERM
        assert "second signal: exiting at once" in col.log()


async def test_kill_9_restart_resend_exactly_once(tmp_path: pathlib.Path) -> None:
    uri = f"sqlite:///{tmp_path / 'kill.db'}"
    port = free_port()
    n = 20000
    samples = make_samples(n)
    acked = Level()
    with collector_process(tmp_path, store_uri=uri, port=port) as col:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: stream_session(
                port, "killed", samples, chunk=20, pace=0.002, deadline=120,
                progress=acked.set))  # fmt: skip
            await acked.reach(1000, timeout=30)
            os.kill(col.pid, signal.SIGKILL)
            col.proc.wait(timeout=10)
            with collector_process(tmp_path, store_uri=uri, port=port):
                await acked.reach(n - 1, timeout=120)
    _assert_exactly_once(uri, "killed", n)


def test_wait_until_fails_when_condition_never_holds() -> None:
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, timeout=0.05, what="never")
