"""Several API workers on one port (peers.py): the journal, the shared rate
limits, and a real collector with ``--api-workers 2``: a write answered by
one worker is seen by the other's cache at once, ``/stats`` sums both,
``/stream`` carries documents either created, and a dead worker comes back."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.api.auth import LocalBuckets, RateLimiter, SharedBuckets
from deltawire.collector.api.cache import EVERYTHING, Span
from deltawire.collector.api.errors import ApiError
from deltawire.collector.api.peers import JOURNAL_BYTES, Journal, PeerNews, Peers
from deltawire.testing.harness import collector_process

DEADLINE_S = 20.0


def wait_for(cond: Any, what: str, deadline_s: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- the journal -------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.integers(0, 40_000), st.booleans()),  # a record's size; read after it?
        min_size=1,
        max_size=120,
    )
)
def test_journal_reader_sees_every_record_in_order_or_knows_it_lost_some(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, bool]]
) -> None:
    path = tmp_path_factory.mktemp("journal") / "0.journal"
    writer, reader = Journal(path), Journal(path)
    unread: list[bytes] = []
    behind = 0  # bytes appended since the reader's last read
    for n, (size, read_now) in enumerate(steps):
        payload = bytes([n % 251]) * size
        writer.append(1, payload)
        unread.append(payload)
        behind += size + 5
        if read_now or n == len(steps) - 1:
            got = reader.read()
            if behind > JOURNAL_BYTES:
                assert got is None  # lapped: it must say so, never hand out garbage
            else:
                assert got == [(1, p) for p in unread]
            unread, behind = [], 0
    assert reader.read() == []
    writer.close()
    reader.close()


def test_a_restarted_writer_appends_after_what_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "0.journal"
    first, reader = Journal(path), Journal(path)
    first.append(1, b"one")
    first.close()
    again = Journal(path)  # the worker's next life
    again.append(2, b"two")
    assert reader.read() == [(1, b"one"), (2, b"two")]


def test_peers_hand_bumps_and_counters_to_each_other(tmp_path: Path) -> None:
    async def body() -> None:
        news: list[PeerNews | None] = []
        a = Peers(tmp_path, 0, 2, counters=lambda: {"worker": 0})
        b = Peers(tmp_path, 1, 2, counters=lambda: {"worker": 1}, on_news=news.append)
        a.open()
        b.open()
        try:
            a.bumped(["session:s", "all"], Span(1.0, 2.0))
            b.sync()  # what a lookup does first
            assert news == [PeerNews(("session:s", "all"), Span(1.0, 2.0))]
            a.created(["7"])  # b has no /stream subscriber: nothing for it
            b.sync()
            assert len(news) == 1
            # Now it has one: a wakes it (no lookup needed).
            b.listening(1)
            a.created(["8"])
            async with asyncio.timeout(DEADLINE_S):
                while news[-1] != PeerNews(created=("8",)):
                    await asyncio.sleep(0.005)
            a.bumped(["x" * 200] * 1000, EVERYTHING)  # too big: "everything changed"
            b.sync()
            assert news[-1] is None
            assert await a.gather() == [{"worker": 1}]
            assert await b.gather() == [{"worker": 0}]
        finally:
            a.close()
            b.close()
        # A peer that is gone does not answer: gather gives what came in time.
        c = Peers(tmp_path, 0, 2, counters=lambda: {})
        c.open()
        try:
            started = time.monotonic()
            assert await c.gather(10.0) == []  # its peer's socket is gone: no waiting
            assert time.monotonic() - started < 5
        finally:
            c.close()

    asyncio.run(body())


# -- shared rate limits --------------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 2)), max_size=60),
       st.floats(0.5, 50), st.integers(1, 5))  # fmt: skip
def test_shared_buckets_limit_like_local_ones(
    tmp_path_factory: pytest.TempPathFactory,
    calls: list[tuple[str, float]],
    rate: float,
    burst: int,
) -> None:
    shared = SharedBuckets(str(tmp_path_factory.mktemp("limits") / "limits"))
    local = LocalBuckets()
    now = 1000.0
    for who, dt in calls:
        now += dt
        assert shared.take(who, now, rate, burst) == pytest.approx(
            local.take(who, now, rate, burst)
        )
    shared.close()


def _take_all(path: str, n: int, out: Any) -> None:
    buckets = SharedBuckets(path)
    limiter = RateLimiter(1e-9, 300_000, buckets=buckets)  # no refill to speak of
    took = 0
    for _ in range(n):
        try:
            limiter.check("client")
            took += 1
        except ApiError:
            pass
    out.put(took)


def test_one_limit_across_processes(tmp_path: Path) -> None:
    """Four processes take 400,000 tokens of one bucket of 300,000 at once:
    exactly 300,000 are admitted (the flock makes each take whole)."""
    path = str(tmp_path / "limits")
    SharedBuckets(path).close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take_all, args=(path, 100_000, out)) for _ in range(4)]
    for p in procs:
        p.start()
    took = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert took == 300_000


# -- a collector with two API workers -------------------------------------------------------


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /stats")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_two_workers_serve_one_port_coherently(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {"RATE_LIMIT": "0"}
    if backend == "redis":  # the near caches in front of it take the journals' bumps too
        env["REDIS_URI"] = request.getfixturevalue("redis_uri")
    with collector_process(tmp_path, "--api-workers", "2", http=True, env=env) as cp:
        base = f"http://127.0.0.1:{cp.http_port}"
        pids = wait_for(lambda: _api_pids(cp.proc.pid) if len(_api_pids(cp.proc.pid)) == 2
                        else None, "two API processes")  # fmt: skip

        # /stream: a subscriber on one worker gets what is created on either.
        received: list[dict[str, Any]] = []
        ready = asyncio.Event()

        async def subscribe() -> None:
            async with (
                httpx.AsyncClient(base_url=base, timeout=30) as client,
                client.stream("GET", "/stream", params={"name": "w"}) as r,
            ):
                async for line in r.aiter_lines():
                    ready.set()
                    if line.startswith("data: "):
                        received.append(orjson.loads(line[6:]))
                        if len(received) == 12:
                            return

        async def write_and_read() -> tuple[int, int]:
            task = asyncio.create_task(subscribe())
            await asyncio.wait_for(ready.wait(), DEADLINE_S)
            stale = 0
            # Fresh connections: the kernel hands them to either worker.
            for i in range(12):
                async with httpx.AsyncClient(base_url=base) as c:
                    r = await c.post("/metrics", json={"name": "w", "value": float(i)})
                    assert r.status_code == 201, r.text
            doc_id = r.json()["id"]
            readers = [httpx.AsyncClient(base_url=base) for _ in range(8)]
            try:
                for k in range(60):
                    reader = readers[k % 8]
                    for _ in range(2):  # cached on the reader's worker
                        await reader.get("/metrics", params={"name": "w", "limit": 100})
                    async with httpx.AsyncClient(base_url=base) as writer:
                        r = await writer.patch(f"/metrics/{doc_id}", json={"value": 1000.0 + k})
                        assert r.status_code == 200, r.text
                    page = (await reader.get("/metrics", params={"name": "w", "limit": 100})).json()
                    if [d["value"] for d in page["items"] if d["id"] == doc_id] != [1000.0 + k]:
                        stale += 1
            finally:
                for reader in readers:
                    await reader.aclose()
            await asyncio.wait_for(task, DEADLINE_S)
            return stale, len(received)

        stale, _streamed = asyncio.run(write_and_read())
        assert stale == 0
        assert sorted(d["value"] for d in received) == [float(i) for i in range(12)]

        # /stats: both workers' counters in one answer.
        text = httpx.get(base + "/stats").text
        assert _metric(text, "deltawire_api_workers") == 2
        assert _metric(text, "deltawire_api_workers_counted") == 2
        assert _metric(text, "deltawire_api_edits_total") == 12 + 60

        # A worker that dies is restarted; the port answers meanwhile.
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: len(_api_pids(cp.proc.pid)) == 2 and pids[0] not in _api_pids(cp.proc.pid),
                 "the worker restarted")  # fmt: skip
        for _ in range(20):
            with httpx.Client(base_url=base) as c:  # new connections, either worker
                assert c.get("/healthz").status_code == 200
        wait_for(lambda: _metric(httpx.get(base + "/stats").text,
                                 "deltawire_api_workers_counted") == 2, "both counted")  # fmt: skip


@pytest.mark.slow
def test_rate_limit_is_one_limit_across_workers(tmp_path: Path) -> None:
    env = {"RATE_LIMIT": "0.001", "RATE_BURST": "10"}
    with collector_process(tmp_path, "--api-workers", "2", http=True, env=env) as cp:
        base = f"http://127.0.0.1:{cp.http_port}"
        codes = []
        for _ in range(30):
            with httpx.Client(base_url=base) as c:  # a fresh connection: either worker
                codes.append(c.get("/metrics").status_code)
        assert codes.count(200) == 10
        assert set(codes[10:]) == {429}


def _api_pids(collector_pid: int) -> list[int]:
    """The collector's API worker processes."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == collector_pid and b"deltawire.collector.api" in cmd:
            pids.append(int(entry.name))
    return sorted(pids)


def test_workers_flags_are_checked() -> None:
    for argv, says in (
        (["--workers", "2"], "--peers"),
        (["--workers", "2", "--worker", "2", "--peers", "/tmp"], "--worker"),
        (["--workers", "0"], "--workers"),
    ):
        r = subprocess.run([sys.executable, "-m", "deltawire.collector.api", *argv],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr


def test_a_killed_collectors_worker_directory_is_removed_by_the_next(tmp_path: Path) -> None:
    from deltawire.collector.api_process import remove_orphan_dirs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    orphan = tmp_path / f"deltawire-api-{gone}-abc"  # its collector exited
    alive = tmp_path / f"deltawire-api-{os.getpid()}-def"  # ours runs
    other = tmp_path / "deltawire-api-notapid-x"
    for d in (orphan, alive, other):
        d.mkdir()
        (d / "0.journal").write_bytes(b"x")
    assert remove_orphan_dirs(str(tmp_path)) == 1
    assert not orphan.exists() and alive.exists() and other.exists()
