"""The black-box session: a client written only from PROTOCOL.md — a plain
blocking socket, no deltawire code — against a real collector process, checked
through the HTTP API. Run against every store."""

from __future__ import annotations

import json
import pathlib
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deltawire.testing.harness import collector_process

pytestmark = pytest.mark.slow


def _session_lines(session: str) -> list[str]:
    base = 1763884800.0
    return [
        json.dumps({"t": "hello", "v": 1, "session": session, "host": "bb-host", "tags": ["bb", "v1"]}),
        json.dumps({"t": "snap", "seq": 1, "ts": base + 1, "name": "process",
                    "data": {"cpu": {"percent": 12.5, "user": 1.25}, "mem": {"rss": 1024},
                             "status": "running", "threads": [1, 2, 3]}}),
        json.dumps({"t": "delta", "seq": 2, "ts": base + 2, "name": "process",
                    "data": {"cpu": {"percent": 14.0}}}),
        "this line is not json",
        json.dumps({"t": "snap", "seq": 3, "ts": base + 3, "name": "system",
                    "data": {"load": [0.5, 0.4, 0.3], "disk": {"/": {"used": 10, "total": 100}}}}),
        json.dumps({"t": "delta", "seq": 4, "ts": base + 4, "name": "process",
                    "data": {"status": None, "mem": {"rss": 2048, "vms": 4096}, "threads": [1]}}),
        json.dumps({"t": "delta", "seq": 5, "ts": base + 4.5, "name": "ghost", "data": {"x": 1}}),
        json.dumps({"t": "event", "seq": 6, "ts": base + 5, "name": "deploy",
                    "data": {"version": "1.2.3", "ok": True, "ünï": "cødé"}}),
        json.dumps({"t": "delta", "seq": 7, "ts": base + 6, "name": "system",
                    "data": {"disk": {"/": None, "/data": {"used": 1}}, "load": [0.9, 0.5, 0.3]}}),
        json.dumps({"t": "wat", "seq": 8}),
        json.dumps({"t": "delta", "seq": 9, "ts": base + 7, "name": "process", "data": {}}),
        json.dumps({"t": "bye", "seq": 10, "ts": base + 8, "data": {"exit_code": 3}}),
    ]  # fmt: skip


EXPECTED = [  # (seq, kind, name, data) ordered by timestamp
    (1, "sample", "process", {"cpu": {"percent": 12.5, "user": 1.25}, "mem": {"rss": 1024},
                              "status": "running", "threads": [1, 2, 3]}),
    (2, "sample", "process", {"cpu": {"percent": 14.0, "user": 1.25}, "mem": {"rss": 1024},
                              "status": "running", "threads": [1, 2, 3]}),
    (3, "sample", "system", {"load": [0.5, 0.4, 0.3], "disk": {"/": {"used": 10, "total": 100}}}),
    (4, "sample", "process", {"cpu": {"percent": 14.0, "user": 1.25}, "mem": {"rss": 2048, "vms": 4096},
                              "threads": [1]}),
    (6, "event", "deploy", {"version": "1.2.3", "ok": True, "ünï": "cødé"}),
    (7, "sample", "system", {"load": [0.9, 0.5, 0.3], "disk": {"/data": {"used": 1}}}),
    (9, "sample", "process", {"cpu": {"percent": 14.0, "user": 1.25}, "mem": {"rss": 2048, "vms": 4096},
                              "threads": [1]}),
    (10, "session", "end", {"exit_code": 3}),
]  # fmt: skip


def _talk(port: int, payload: bytes, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Send everything, half-close, read every reply line until the collector closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        deadline = time.monotonic() + timeout
        while chunk := sock.recv(65536):
            data += chunk
            assert time.monotonic() < deadline
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture(params=["sqlite", "mongo"])
def store_uri(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bb.db'}"
    else:
        yield request.getfixturevalue("mongo_uri")


def test_black_box_session(tmp_path: pathlib.Path, store_uri: str) -> None:
    session = f"bb-{uuid.uuid4().hex[:12]}"
    payload = ("\n".join(_session_lines(session)) + "\n").encode()
    with collector_process(tmp_path, store_uri=store_uri, http=True,
                           env={"APP_ENV": f"bb{uuid.uuid4().hex[:8]}"}) as col:  # fmt: skip
        replies = _talk(col.port, payload)
        assert replies[0] == {"t": "welcome", "v": 1, "session": session, "acked": -1}
        errors = [(r["code"], r.get("seq"), r["fatal"]) for r in replies if r["t"] == "error"]
        assert errors == [
            ("bad_json", None, False),
            ("no_base", 5, False),
            ("unknown_type", 8, False),
        ]
        acks = [r["seq"] for r in replies if r["t"] == "ack"]
        assert acks and acks == sorted(acks) and acks[-1] == 10

        with httpx.Client(base_url=f"http://127.0.0.1:{col.http_port}", timeout=10) as http:
            got = http.get("/metrics", params={"session": session}).json()
            assert got["next"] is None
            items = got["items"]
            assert [(d["seq"], d["kind"], d["name"], d["data"]) for d in items] == EXPECTED
            assert all(d["host"] == "bb-host" and d["tags"] == ["bb", "v1"] for d in items)
            assert items[0]["timestamp"] == "2025-11-23T08:00:01.000Z"
            # Paging two at a time gives the same documents, in the same order.
            paged, cursor = [], None
            while True:
                params: dict[str, Any] = {"session": session, "limit": 2}
                if cursor:
                    params["after"] = cursor
                page = http.get("/metrics", params=params).json()
                paged += page["items"]
                if not (cursor := page["next"]):
                    break
            assert [d["id"] for d in paged] == [d["id"] for d in items]

            # The same bytes again: nothing stored twice; welcome says what is stored.
            again = _talk(col.port, payload)
            assert again[0]["acked"] == 10
            assert [r["seq"] for r in again if r["t"] == "ack"][-1] == 10
            http_items = http.get("/metrics", params={"session": session, "limit": 1000}).json()[
                "items"
            ]
            assert len(http_items) == len(EXPECTED)

            sessions = {s["session"]: s for s in http.get("/sessions").json()["items"]}
            assert sessions[session]["exit_code"] == 3
            assert sessions[session]["ended"] is not None
