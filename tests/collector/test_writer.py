"""The store writers: the child-process writer survives its own death, and a
document the store refuses for good is isolated instead of blocking the rest."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import uuid

import psutil
import pytest
import trio

from deltawire.collector.stores import MetricQuery, open_store
from deltawire.collector.writer import ProcessWriter, ThreadWriter, commit_batch
from deltawire.protocol import Document
from deltawire.testing.harness import wait_until


def _docs(session: str, seqs: range, **data: object) -> list[Document]:
    return [Document(session, s, "sample", "cpu", 1_700_000_000.0 + s, "h", ("t",), {"v": s, **data})
            for s in seqs]  # fmt: skip


def _stored(uri: str, session: str, **opts: object) -> list[int]:
    store = open_store(uri, **opts)
    store.open()
    try:
        return sorted(d["seq"] for d in store.find(MetricQuery(session=session, limit=10000)))
    finally:
        store.close()


async def test_process_writer_restarts_and_resends(sqlite_uri: str) -> None:
    writer = ProcessWriter(sqlite_uri, {})
    try:
        result = await writer.write(_docs("pw", range(0, 100)))
        assert result.rejected == [] and result.seconds > 0
        assert writer.process is not None
        first_pid = writer.process.pid
        os.kill(first_pid, signal.SIGKILL)
        with trio.fail_after(10):
            await writer.process.wait()
        # The next batch finds the writer dead, starts a new one, and commits.
        await writer.write(_docs("pw", range(50, 200)))
        assert writer.process.pid != first_pid
    finally:
        await writer.aclose()
    assert _stored(sqlite_uri, "pw") == list(range(200))


async def test_process_writer_start_waits_until_the_store_is_open(sqlite_uri: str) -> None:
    import sqlite3

    writer = ProcessWriter(sqlite_uri, {})
    try:
        await writer.start()
        # Ready means the child opened the store: the schema is there before
        # any batch was sent.
        db = sqlite3.connect(sqlite_uri.removeprefix("sqlite:///"))
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
        assert {"docs", "sessions"} <= tables
        assert writer.process is not None and writer.process.returncode is None
        result = await writer.write(_docs("started", range(5)))
        assert result.rejected == []
    finally:
        await writer.aclose()
    assert _stored(sqlite_uri, "started") == list(range(5))


async def test_process_writer_start_gives_up_waiting_on_an_unavailable_store(
    tmp_path: pathlib.Path,
) -> None:
    """A store that cannot open yet does not hold the collector's start for
    ever; batches then wait for it, and land once it is free."""
    import sqlite3

    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a real lock on a new file: no schema can be made
    writer = ProcessWriter(f"sqlite:///{db}", {})
    try:
        with trio.fail_after(20):
            await writer.start(timeout=0.5)
        assert writer.process is not None and writer.process.returncode is None
        holder.execute("ROLLBACK")
        with trio.fail_after(30):
            result = await writer.write(_docs("late", range(3)))
        assert result.rejected == []
    finally:
        holder.close()
        await writer.aclose()
    assert _stored(f"sqlite:///{db}", "late") == [0, 1, 2]


@pytest.mark.slow
def test_collector_starts_its_writer_before_any_connection(tmp_path: pathlib.Path) -> None:
    from deltawire.testing.harness import collector_process

    with collector_process(tmp_path, "--writer", "process") as col:
        me = psutil.Process(col.proc.pid)

        def writer_running() -> bool:
            return any("collector.writer" in " ".join(c.cmdline()) for c in me.children())

        wait_until(writer_running, timeout=15, what="the writer child, with no agent connected")


async def test_process_writer_closes_cleanly(sqlite_uri: str) -> None:
    writer = ProcessWriter(sqlite_uri, {})
    await writer.write(_docs("close", range(3)))
    proc = writer.process
    await writer.aclose()
    assert proc is not None and proc.returncode == 0


async def test_thread_writer(sqlite_uri: str) -> None:
    store = open_store(sqlite_uri)
    store.open()
    try:
        result = await ThreadWriter(store).write(_docs("tw", range(10)))
        assert result.rejected == []
    finally:
        store.close()
    assert _stored(sqlite_uri, "tw") == list(range(10))


def test_poison_document_is_isolated(mongo_uri: str) -> None:
    # 2**64 - 1 is valid JSON (orjson reads it) but no BSON integer holds it:
    # the store refuses that one document for good; the others must land.
    app_env = f"w{uuid.uuid4().hex[:10]}"
    store = open_store(mongo_uri, app_env=app_env)
    store.open()
    try:
        docs = _docs("poison", range(5))
        bad = docs[2]
        docs[2] = Document(bad.session, bad.seq, bad.kind, bad.name, bad.ts, bad.host, bad.tags,
                           {"v": 2**64 - 1})  # fmt: skip
        result = commit_batch(store, docs)
        assert [i for i, _ in result.rejected] == [2]
    finally:
        store.close()
    assert _stored(mongo_uri, "poison", app_env=app_env) == [0, 1, 3, 4]


@pytest.mark.slow
async def test_collector_with_process_writer(tmp_path: object) -> None:
    import pathlib

    from deltawire.testing.harness import collector_process, make_samples, stream_session

    assert isinstance(tmp_path, pathlib.Path)
    uri = f"sqlite:///{tmp_path / 'pw.db'}"
    with collector_process(tmp_path, "--writer", "process", store_uri=uri) as col:
        await stream_session(col.port, "via-process", make_samples(3000), reconnect=False)
        assert col.terminate() == 0
    assert _stored(uri, "via-process") == list(range(3000))


def test_writer_exits_when_its_collector_dies_mid_retry(tmp_path: pathlib.Path) -> None:
    """A writer retrying a batch against a locked store gives up once the
    process that started it is gone, instead of retrying for ever."""
    import sqlite3

    db = tmp_path / "locked.db"
    uri = f"sqlite:///{db}"
    store = open_store(uri)
    store.open()  # the schema
    store.close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a real lock: every commit of the writer fails
    # An intermediate "collector": starts the writer, hands it one batch, dies.
    parent = textwrap.dedent(f"""
        import os, pickle, struct, subprocess, sys
        w = subprocess.Popen([sys.executable, "-m", "deltawire.collector.writer", "--store", {uri!r},
                              "--parent-pid", str(os.getpid())],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        rows = [("orphan", 0, "sample", "cpu", "h", "[]", 1.7e9, "{{}}")]
        payload = pickle.dumps(("rows", [pickle.dumps(rows)]))
        w.stdin.write(struct.pack(">I", len(payload)) + payload)
        w.stdin.flush()
        print(w.pid, flush=True)
    """)
    try:
        out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                             cwd=pathlib.Path(__file__).resolve().parents[2], timeout=30,
                             check=True)  # fmt: skip
        writer = psutil.Process(int(out.stdout.split()[0]))
        try:
            wait_until(lambda: not writer.is_running() or writer.status() == psutil.STATUS_ZOMBIE,
                       timeout=15, what="the orphaned writer to exit")  # fmt: skip
        finally:
            if writer.is_running():
                writer.kill()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_collector_reports_a_refused_document_and_stores_the_rest(
    tmp_path: pathlib.Path, mongo_uri: str, writer: str
) -> None:
    """End to end through the pipeline: the store refuses one document for
    good (a key with a NUL character is valid JSON but no BSON key; an
    integer beyond int64 no longer gets this far, the collector rejects it on
    arrival); its agent gets a non-fatal bad_frame for that seq, the ack
    still covers everything, and every other document is stored."""
    from deltawire.protocol import Welcome
    from deltawire.testing.harness import Client, collector_process

    app_env = f"r{uuid.uuid4().hex[:10]}"
    with collector_process(tmp_path, "--writer", writer, store_uri=mongo_uri,
                           env={"APP_ENV": app_env}) as col:  # fmt: skip
        c = await Client.connect(col.port)
        await c.send({"t": "hello", "v": 1, "session": "refused"})
        await c.until(lambda cl: isinstance(cl.welcome, Welcome))
        frames: list[bytes | dict[str, object]] = [
            {"t": "snap", "seq": 0, "ts": 1.7e9, "name": "p", "data": {"v": 0}}
        ]
        for seq in range(1, 6):
            # An event: the refused key must not stay in a delta chain.
            t, key = (b"event", b"v\\u0000") if seq == 3 else (b"delta", b"v")
            frames.append(b'{"t":"%s","seq":%d,"ts":1.7e9,"name":"p","data":{"%s":%d}}\n'
                          % (t, seq, key, seq))  # fmt: skip
        await c.send(*frames)
        await c.until(lambda cl: cl.acked >= 5)
        assert [(e.code, e.seq, e.fatal) for e in c.errors] == [("bad_frame", 3, False)]
        assert "refused" in c.errors[0].msg
    assert _stored(mongo_uri, "refused", app_env=app_env) == [0, 1, 2, 4, 5]
