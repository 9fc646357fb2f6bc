"""The event socket with real Unix sockets, the Python helper and `watchdog emit`."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from deltawire.watchdog import client
from deltawire.watchdog.events import MAX_EVENT_LINE, EventServer, parse_event_line

REPO = pathlib.Path(__file__).resolve().parents[2]


class Received:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any] | None]] = []
        self._changed = trio.Event()

    def __call__(self, name: str, data: dict[str, Any] | None) -> None:
        self.events.append((name, data))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, n: int, server: EventServer | None = None, malformed: int = 0) -> None:
        with trio.fail_after(10):
            while len(self.events) < n or (server is not None and server.malformed < malformed):
                # Malformed lines do not call us: re-check after any progress.
                with trio.move_on_after(0.05):
                    await self._changed.wait()


@pytest.fixture
async def served(tmp_path: pathlib.Path) -> AsyncIterator[tuple[EventServer, Received]]:
    got = Received()
    server = EventServer(got, directory=tmp_path)
    server.bind()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        yield server, got
        nursery.cancel_scope.cancel()
    server.close()


def test_parse_event_line() -> None:
    assert parse_event_line(b'{"name": "a", "data": {"x": 1}}') == ("a", {"x": 1})
    assert parse_event_line(b'{"name": "a"}') == ("a", None)
    for bad, why in [
        (b"{nope", "JSON"),
        (b"[1]", "object"),
        (b'{"data": {}}', "name"),
        (b'{"name": ""}', "name"),
        (b'{"name": "a", "data": [1]}', "data"),
        (b'{"name": 5}', "name"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_event_line(bad)


async def test_events_from_the_python_helper(served: tuple[EventServer, Received]) -> None:
    server, got = served
    path = str(server.path)
    assert await trio.to_thread.run_sync(lambda: client.emit("started", {"v": "1.2"}, path=path))
    assert await trio.to_thread.run_sync(lambda: client.emit("tick", path=path))
    await got.wait_for(2)
    assert got.events == [("started", {"v": "1.2"}), ("tick", None)]


async def test_malformed_lines_are_counted_not_fatal(served: tuple[EventServer, Received]) -> None:
    server, got = served
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(server.path))
    await sock.send(b'{"name": "ok1"}\nnot json\n\n[1,2]\n{"name": "ok2", "data": {"a": 1}}\n')
    await sock.send(b"x" * (MAX_EVENT_LINE + 10))  # an endless line ...
    await sock.send(b'still the long line\n{"name": "ok3"}\n{"name": "tail"}')  # ... then more
    sock.close()
    await got.wait_for(4, server, malformed=3)
    assert [n for n, _ in got.events] == ["ok1", "ok2", "ok3", "tail"]
    assert server.malformed == 3  # "not json", "[1,2]", the over-long line
    assert server.received == 4


async def test_emit_command_for_shell_scripts(served: tuple[EventServer, Received]) -> None:
    server, got = served
    env = {**os.environ, client.ENV_VAR: str(server.path), "PYTHONPATH": str(REPO)}
    result = await trio.run_process(
        [sys.executable, "-m", "deltawire.watchdog", "emit", "backup.done", "--data", '{"files": 12}'],
        env=env, capture_stderr=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    await got.wait_for(1)
    assert got.events == [("backup.done", {"files": 12})]


def test_emit_without_a_watchdog_returns_false(tmp_path: pathlib.Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv(client.ENV_VAR, raising=False)
    assert client.emit("x") is False
    assert client.emit("x", path=str(tmp_path / "nobody.sock")) is False
    assert client.emit("x", {"bad": object()}, path=str(tmp_path / "a.sock")) is False


def test_emit_command_errors_are_messages(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != client.ENV_VAR}
    env["PYTHONPATH"] = str(REPO)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deltawire.watchdog", "emit", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    r = run("x")
    assert r.returncode == 1 and "DELTAWIRE_EVENTS is not set" in r.stderr
    r = run("x", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 1 and "no watchdog listens" in r.stderr
    r = run("x", "--data", "{bad")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    for r in (run("x"), run("x", "--data", "[]")):
        assert "Traceback" not in r.stderr


async def test_drain_reads_connections_serve_has_not_reached(tmp_path: pathlib.Path) -> None:
    """A command that writes its last events and exits at once: its
    connections are still in the listen queue (or unread) when the agent
    learns of the exit. ``drain`` reads them all (the agent calls it before
    the bye), with no ``serve`` running at all here."""
    got = Received()
    server = EventServer(got, directory=tmp_path)
    server.bind()
    try:
        for i in range(3):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(server.path))
                sock.sendall(b'{"name": "last", "data": {"i": %d}}\n{"name": "bye-line"}' % i)
        assert got.events == []  # nothing reads them until drain
        with trio.fail_after(10):
            await server.drain()
        assert sorted(d["i"] for n, d in got.events if n == "last" and d) == [0, 1, 2]
        assert [n for n, _ in got.events].count("bye-line") == 3
        with trio.fail_after(10):
            await server.drain()  # nothing left: returns at once
        assert len(got.events) == 6
    finally:
        server.close()


async def test_drain_waits_for_a_client_being_read(served: tuple[EventServer, Received]) -> None:
    server, got = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(server.path))
        sock.sendall(b'{"name": "first"}\n')
        await got.wait_for(1)
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def drain() -> None:
                await server.drain()
                done.set()

            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # the connection is open: drain waits for its end
            sock.sendall(b'{"name": "second"}\n')
            sock.shutdown(socket.SHUT_WR)
            with trio.fail_after(10):
                await done.wait()
    assert [n for n, _ in got.events] == ["first", "second"]
