"""MongoDB down for 10 s in the middle of ingest: the collector stops acking,
pushes back, retries, and once the server is back everything is stored exactly
once. A real collector process, a real MongoDB-wire server killed by PID."""

from __future__ import annotations

import pathlib
import uuid

import pytest
import trio

from deltawire.collector.stores import MetricQuery, open_store
from deltawire.testing.harness import Level, collector_process, make_samples, stream_session
from deltawire.testing.servers import ferretdb_at, free_port

pytestmark = [pytest.mark.slow, pytest.mark.mongo]

OUTAGE_S = 10.0


async def test_store_killed_for_ten_seconds_loses_nothing(tmp_path: pathlib.Path) -> None:
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/"
    app_env = f"outage{uuid.uuid4().hex[:8]}"
    data, log = tmp_path / "ferret", tmp_path / "ferret.log"
    n = 4000
    samples = make_samples(n)
    acked = Level()
    # SHUTDOWN_GRACE: once every sample is acked (stored), the drain has nothing
    # left to commit; a long grace only lets the writer's idle tier compaction
    # keep FerretDB busy (seconds of CPU) until the grace runs out.
    env = {"APP_ENV": app_env, "MONGO_TIMEOUT_MS": "1000", "SHUTDOWN_GRACE": "1"}
    server = ferretdb_at(port, data, log)
    proc = server.__enter__()
    try:
        with collector_process(tmp_path, store_uri=uri, env=env) as col:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: stream_session(
                    col.port, "outage", samples, chunk=20, pace=0.02, deadline=120,
                    progress=acked.set))  # fmt: skip
                await acked.reach(500, timeout=60)
                proc.kill()  # the store dies mid-stream
                server.__exit__(None, None, None)
                frozen = acked.value
                await trio.sleep(OUTAGE_S)  # the outage itself: what the test is about
                assert acked.value - frozen <= 200, "no acks while the store is gone"
                server = ferretdb_at(port, data, log)
                proc = server.__enter__()
                await acked.reach(n - 1, timeout=90)
            assert "store unavailable" in col.log()
    finally:
        server.__exit__(None, None, None)
        if proc.poll() is None:
            proc.kill()
    with ferretdb_at(port, data, log):
        # FerretDB sorts the 4000 documents in seconds on a loaded machine: a
        # generous socket timeout keeps that from failing the check.
        store = open_store(uri, app_env=app_env, timeout_ms=60_000)
        store.open()
        try:
            seqs = sorted(d["seq"] for d in store.find(MetricQuery(session="outage", limit=10000)))
        finally:
            store.close()
    assert seqs == list(range(n))
