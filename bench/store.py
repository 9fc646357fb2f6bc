"""Store bench: documents/s through the SQLite and MongoDB stores side by side,
and the HTTP API's GET latency and cache hit rate with no cache, the in-process
LRU, and Redis. Real servers: FerretDB (MongoDB wire protocol) and redis-server
on free 127.0.0.1 ports, as the tests use them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from deltawire.collector.stores import open_store
from deltawire.protocol import Document

from .codec import load_recording
from .report import Table, show

__all__ = ["main", "run"]

REPO = pathlib.Path(__file__).resolve().parent.parent


def _documents(n: int, sessions: int = 20, step: float = 1.0) -> list[Document]:
    """``n`` recorded samples over ``sessions``, ``step`` seconds apart in
    all (``step=1/sessions``: each session samples once a second, as the
    watchdog does; 1.0: each of a session's 3 streams once a minute)."""
    samples = load_recording()
    base = time.time() - n * step
    return [
        Document(f"bench-{i % sessions}", i // sessions, "sample", samples[i % len(samples)][0],
                 round(base + i * step, 3), f"host-{i % 5}", ("bench", f"rack-{i % 3}"),
                 samples[i % len(samples)][2])
        for i in range(n)
    ]  # fmt: skip


def _write_rate(uri: str, docs: list[Document], batch: int = 2000, **opts: Any) -> float:
    store = open_store(uri, **opts)
    store.open()
    try:
        t0 = time.perf_counter()
        for i in range(0, len(docs), batch):
            store.write_batch(docs[i : i + batch])
        return len(docs) / (time.perf_counter() - t0)
    finally:
        store.close()


def _tiers_tables(mongo_uri: str, n: int) -> list[Table]:
    """The tiers' cost on dense streams (each session sampling once a
    second: ~60 values per minute bucket) and on sparse ones (the table
    above's documents: one value per minute bucket, a partial per value)."""
    return [
        _mongo_tiers_cost(mongo_uri, _documents(n, step=1 / 20), "1 sample/s per session"),
        _mongo_tiers_cost(mongo_uri, _documents(n), "1 sample/min per stream"),
    ]


def _mongo_tiers_cost(mongo_uri: str, docs: list[Document], label: str, rounds: int = 3) -> Table:
    """MongoDB writes with the rollup tiers kept (partials inserted, compacted
    as the writer goes) beside the same store without them, interleaved
    A/B/A/B so that load on the machine hits both alike; each rate is the
    median of ``rounds``, with the range."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for tiers in (False, True):
            env = f"bench{uuid.uuid4().hex[:8]}"
            # A loaded machine can make FerretDB take seconds per insert_many.
            rate = _write_rate(mongo_uri, docs, app_env=env, rollups=tiers, timeout_ms=120_000)
            rates[tiers].append(rate)
    t = Table(f"MongoDB store writes with and without rollup tiers — {len(docs)} docs "
              f"({label}), "
              f"median of {rounds} interleaved runs [min-max]",
              ["tiers kept", "no tiers"], baseline=1)  # fmt: skip
    on, off = sorted(rates[True]), sorted(rates[False])
    t.row("documents stored / s", on[len(on) // 2], off[len(off) // 2])
    t.row("slowest run, docs / s", on[0], off[0])
    t.row("fastest run, docs / s", on[-1], off[-1])
    return t


@contextlib.contextmanager
def _api(store_uri: str, *args: str) -> Iterator[int]:
    from deltawire.testing.servers import free_port, stop_process, wait_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deltawire.collector.api", "--http", f"127.0.0.1:{port}",
                             "--store", store_uri, "--cache-ttl", "60", *args],
                            cwd=REPO, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port("127.0.0.1", port, 30, proc)
        yield port
    finally:
        stop_process(proc)


def _get_load(port: int, requests: int, concurrency: int = 8, seed: int = 1) -> dict[str, float]:
    import httpx

    rnd = random.Random(seed)
    hot = [f"/metrics?session=bench-{i}&limit=100" for i in range(10)]
    paths = [rnd.choice(hot) if rnd.random() < 0.8 else
             f"/metrics?session=bench-{rnd.randrange(20)}&limit={rnd.randrange(1, 500)}"
             for _ in range(requests)]  # fmt: skip
    latencies: list[float] = []
    hits = 0

    async def go() -> float:
        nonlocal hits
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            queue = list(reversed(paths))

            async def worker() -> None:
                nonlocal hits
                while queue:
                    path = queue.pop()
                    t0 = time.perf_counter()
                    r = await client.get(path)
                    latencies.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    hits += r.headers.get("x-cache") == "hit"

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0

    elapsed = asyncio.run(go())
    latencies.sort()
    return {"rps": requests / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000, "hit": hits / requests}  # fmt: skip


def run(scale: float = 1.0) -> list[Table]:
    from deltawire.testing.servers import run_ferretdb, run_redis

    n = max(2000, int(40_000 * scale))
    docs = _documents(n)
    tables = []
    with tempfile.TemporaryDirectory(prefix="deltawire-store-bench-") as tmpname:
        tmp = pathlib.Path(tmpname)
        with run_ferretdb(tmp / "ferret") as mongo_uri, run_redis(tmp / "redis") as redis_uri:
            sqlite_rate = _write_rate(f"sqlite:///{tmp / 'w.db'}", docs)
            mongo_rate = _write_rate(mongo_uri, docs, app_env=f"bench{uuid.uuid4().hex[:8]}")
            t = Table(f"store writes — {n} docs (~400 B) in batches of 2000",
                      ["SQLite (embedded)", "MongoDB store on FerretDB"])  # fmt: skip
            t.row("documents stored / s", sqlite_rate, mongo_rate)
            tables.append(t)
            tables += _tiers_tables(mongo_uri, n)

            api_db = f"sqlite:///{tmp / 'api.db'}"
            store = open_store(api_db)
            store.open()
            store.write_batch(_documents(min(n, 20_000)))
            store.close()
            requests = max(500, int(3000 * scale))
            results = {}
            for label, args in (("no cache", ["--cache-size", "0"]), ("in-process LRU", []),
                                ("Redis", ["--redis", redis_uri])):  # fmt: skip
                with _api(api_db, *args) as port:
                    results[label] = _get_load(port, requests)
            t = Table(f"GET /metrics — {requests} requests, 8 concurrent, 80% on 10 hot queries",
                      ["in-process LRU", "Redis", "no cache"], baseline=2)  # fmt: skip
            lru, red, none = results["in-process LRU"], results["Redis"], results["no cache"]
            t.row("requests / s", lru["rps"], red["rps"], none["rps"])
            t.row("latency p50 ms", lru["p50"], red["p50"], none["p50"], lower_is_better=True)
            t.row("latency p99 ms", lru["p99"], red["p99"], none["p99"], lower_is_better=True)
            t.row(
                "cache hit rate %",
                lru["hit"] * 100,
                red["hit"] * 100,
                none["hit"] * 100,
                ratio=False,
            )
            tables.append(t)
    return tables


def tiers_only(scale: float = 1.0) -> list[Table]:
    """Only the MongoDB tiers' cost (``--tiers-only``): quick to rerun."""
    from deltawire.testing.servers import run_ferretdb

    n = max(2000, int(40_000 * scale))
    with (
        tempfile.TemporaryDirectory(prefix="deltawire-store-bench-") as tmpname,
        run_ferretdb(pathlib.Path(tmpname) / "ferret") as mongo_uri,
    ):
        return _tiers_tables(mongo_uri, n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies the document counts (default: 1.0: 40,000 documents)",
    )
    ap.add_argument("--tiers-only", action="store_true",
                    help="only MongoDB writes with and without rollup tiers (default: everything)")  # fmt: skip
    args = ap.parse_args(argv)
    return show(tiers_only(args.scale) if args.tiers_only else run(args.scale))


if __name__ == "__main__":
    raise SystemExit(main())
