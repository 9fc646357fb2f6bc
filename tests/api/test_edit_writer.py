"""The edit writer process (edit_writer.py, edit_client.py): the API's writes
committed by a real child process on a real SQLite file; started, answering,
restarted after a crash (503s meanwhile, never a hang), gone with the API."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from deltawire.collector.api.auth import Role
from deltawire.collector.api.edit_client import EditWriter, EditWriterFailed
from deltawire.collector.api.edit_jobs import EditJob, apply_jobs
from deltawire.collector.lifeline import ORPHAN_GRACE_S
from deltawire.collector.stores import open_store
from deltawire.collector.stores.base import StoreUnavailable
from deltawire.protocol import Document
from deltawire.testing.harness import wait_until

from .inproc import sqlite_store
from .test_api import DEADLINE_S, start_api

T0 = 1_700_000_000.0


def _run(main: Callable[[], Awaitable[Any]]) -> Any:
    """The writer client is the API process's: asyncio, not trio."""
    return asyncio.run(main())


def _writer(db: Path) -> EditWriter:
    return EditWriter(["--store", f"sqlite:///{db}", "--parent-pid", str(os.getpid())])


def _applied(writer: EditWriter, jobs: list[EditJob]) -> list[Any]:
    """``jobs`` through a started writer, which is then stopped."""

    async def main() -> list[Any]:
        await writer.start()
        try:
            return await writer.apply(jobs)
        finally:
            await writer.aclose()

    return _run(main)  # type: ignore[no-any-return]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_writer_answers_what_apply_jobs_answers(tmp_path: Path) -> None:
    """The same jobs through the process and through ``apply_jobs`` in this
    process (one function) give the same answers, and it stops when closed."""
    seed = [Document("agent-1", 0, "sample", "process", T0, "h", (), {"cpu": 1.0})]
    jobs = [
        EditJob("create", None, Role.write, {"name": "a", "value": 1.0, "timestamp": T0}),
        EditJob("create", None, Role.write, {"value": 1.0}),  # no name: 422 alone
        EditJob("patch", "2", Role.write, {"value": 2.0, "data": {"k": 1}}),
        EditJob("replace", "2", Role.write, {"name": "b", "value": 3.0, "timestamp": T0}),
        EditJob("delete", "1", Role.write),  # streamed: admin only (403)
        EditJob("patch", "1", Role.admin, {"value": None}),
        EditJob("delete", "2", Role.write),
        EditJob("delete", "2", Role.write),  # gone: 404
    ]
    local = sqlite_store(tmp_path, "local.db")
    try:
        local.write_batch(seed)
        want = apply_jobs(local, jobs)
    finally:
        local.close()
    db = tmp_path / "child.db"
    store = open_store(f"sqlite:///{db}")
    store.open()
    store.write_batch(seed)
    writer = _writer(db)

    try:
        got = _applied(writer, jobs)
        assert [d.status for d in got] == [201, 422, 200, 200, 403, 200, 204, 404]
        timeless = [orjson.loads(d.payload or b"{}") for d in (*got, *want)]
        for body in timeless:
            body.pop("timestamp", None)  # "now" differs between the two stores
        assert timeless[: len(got)] == timeless[len(got) :]
        assert got[2].marks and got[0].created is not None and got[0].created["name"] == "a"
        assert store.get("2") is None and store.get("1").get("value") is None  # type: ignore[union-attr]
        assert writer.pid is not None and _gone(writer.pid)
    finally:
        store.close()


def test_the_writer_opens_a_mongodb_store_from_its_uri(mongo_uri: str) -> None:
    """The same process on the MongoDB-wire server: the store comes from
    the URI and options the API passes."""
    env = f"editw{uuid.uuid4().hex[:12]}"
    writer = EditWriter(
        ["--store", mongo_uri, "--options", orjson.dumps({"app_env": env}).decode()]
    )
    jobs = [
        EditJob("create", None, Role.write, {"name": "m", "value": 1.0, "timestamp": T0}),
        EditJob("patch", "no-such-id", Role.write, {"value": 2.0}),
    ]

    created, missing = _applied(writer, jobs)
    assert (created.status, missing.status) == (201, 404)
    doc_id = orjson.loads(created.payload)["id"]
    store = open_store(mongo_uri, app_env=env)
    store.open()
    try:
        assert store.get(doc_id)["value"] == 1.0  # type: ignore[index]
    finally:
        store.close()


def test_a_crashed_writer_gives_503s_and_is_restarted(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "w.db")
    job = EditJob("create", None, Role.write, {"name": "a", "value": 1.0})

    async def main() -> None:
        await writer.start()
        try:
            first = writer.pid
            assert first is not None
            assert (await writer.apply([job]))[0].status == 201
            os.kill(first, signal.SIGKILL)
            failed = 0
            deadline = time.monotonic() + DEADLINE_S
            while True:  # 503 (StoreUnavailable) until it is back, never a hang
                try:
                    done = await asyncio.wait_for(writer.apply([job]), DEADLINE_S)
                except StoreUnavailable:
                    failed += 1
                    assert time.monotonic() < deadline, "the writer was not restarted"
                    await asyncio.sleep(0.01)
                    continue
                assert done[0].status == 201
                break
            assert writer.restarts == 1 and writer.pid != first and _gone(first)
        finally:
            await writer.aclose()

    _run(main)


def test_a_writer_that_cannot_open_its_store_fails_its_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    writer = EditWriter(["--store", f"sqlite:///{tmp_path / 'a-file' / 'api.db'}"])
    with pytest.raises(EditWriterFailed):
        _run(writer.start)


def _writer_of(api_pid: int) -> psutil.Process | None:
    for child in psutil.Process(api_pid).children():
        if "deltawire.collector.api.edit_writer" in child.cmdline():
            return child
    return None


def test_the_served_api_writes_through_its_writer_and_takes_it_along(tmp_path: Path) -> None:
    """The API process's writes go through its edit writer child (a crash
    of it: 503s, then writes again), and a killed API leaves no writer."""
    api = start_api(tmp_path, f"sqlite:///{tmp_path / 'api.db'}", control=False)
    try:
        child = wait_until(lambda: _writer_of(api.proc.pid), DEADLINE_S, "the edit writer")
        body = {"name": "a", "value": 1.0}
        assert api.client.post("/metrics", json=body).status_code == 201
        child.kill()
        statuses = set()

        def written() -> bool:
            r = api.client.post("/metrics", json=body)
            statuses.add(r.status_code)
            assert r.status_code in (201, 503), r.text
            return r.status_code == 201

        wait_until(written, DEADLINE_S, "writes after the writer's restart")
        again = wait_until(lambda: _writer_of(api.proc.pid), DEADLINE_S, "a new writer")
        assert again.pid != child.pid
        api.proc.kill()
        api.proc.wait(DEADLINE_S)
        wait_until(lambda: _gone(again.pid), ORPHAN_GRACE_S + DEADLINE_S,
                   "the writer of a killed API to exit")  # fmt: skip
    finally:
        api.close()


def test_a_sigterm_to_everyone_stops_the_api_and_then_its_writer(tmp_path: Path) -> None:
    """As an init system stops a service (SIGTERM to every process): the
    writer waits for the API to close its stdin, so it is neither cut short
    nor restarted during the API's shutdown."""
    api = start_api(tmp_path, f"sqlite:///{tmp_path / 'api.db'}", control=False)
    try:
        child = wait_until(lambda: _writer_of(api.proc.pid), DEADLINE_S, "the edit writer")
        assert api.client.post("/metrics", json={"name": "a", "value": 1.0}).status_code == 201
        child.send_signal(signal.SIGTERM)
        assert api.client.post("/metrics", json={"name": "b", "value": 2.0}).status_code == 201
        api.proc.send_signal(signal.SIGTERM)
        assert api.proc.wait(DEADLINE_S) == 0
        wait_until(lambda: _gone(child.pid), DEADLINE_S, "the writer to exit after the API")
        assert "edit writer process exited" not in api.log.read_text()
    finally:
        api.close()
