"""Test helpers for the collector: a protocol client written from PROTOCOL.md,
and a real collector process on free 127.0.0.1 ports, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
import trio

from deltawire.protocol import (
    NEED_DATA,
    Ack,
    ClientConnection,
    Closed,
    ErrorFrame,
    Flow,
    Frame,
    Welcome,
)
from deltawire.testing.servers import free_port, stop_process, wait_port

if TYPE_CHECKING:
    from deltawire.collector.stores.sqlite import SqliteStore

__all__ = [
    "COLLECTOR_STOP_TIMEOUT_S",
    "Client",
    "CollectorProcess",
    "Level",
    "collector_in_process",
    "collector_process",
    "sqlite_with_folder",
    "wait_for",
    "wait_until",
]

REPO = pathlib.Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """``wait_until`` for trio code: for state outside this process (a child's
    children, a file another process writes) that no event announces."""
    with trio.move_on_after(timeout):
        while not (value := predicate()):
            await trio.sleep(0.02)
        return value
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Level:
    """A number that only grows (an acked seq, a count of events), and a wait
    for it to reach a mark: woken by each ``set``, never polled."""

    def __init__(self, value: int = -1) -> None:
        self.value = value
        self._lot = trio.lowlevel.ParkingLot()

    def set(self, value: int) -> None:
        if value > self.value:
            self.value = value
            self._lot.unpark_all()

    async def reach(self, mark: int, timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while self.value < mark:
                await self._lot.park()


class Client:
    """A raw protocol client: send lines, collect what the collector says."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = ClientConnection()
        self.frames: list[Frame] = []
        #: Woken after every ``pump``: what ``changed`` waits on.
        self._pumped = trio.lowlevel.ParkingLot()

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> Client:
        return cls(await trio.open_tcp_stream(host, port))

    async def send(self, *lines: bytes | dict[str, Any]) -> None:
        data = b"".join(
            line if isinstance(line, bytes) else orjson.dumps(line) + b"\n" for line in lines
        )
        await self.stream.send_all(self.conn.send_raw(data))

    @property
    def closed(self) -> bool:
        return self.conn.closed

    async def pump(self) -> None:
        """Read one chunk (or EOF) into ``frames``."""
        try:
            self.conn.receive_data(await self.stream.receive_some(65536))
            while (frame := self.conn.next_event()) is not NEED_DATA and type(frame) is not Closed:
                self.frames.append(frame)  # type: ignore[arg-type]
        finally:
            self._pumped.unpark_all()

    async def changed(self, predicate: Callable[[Client], Any], timeout: float = 20.0) -> Any:
        """Like ``until``, while another task pumps: wait for its reads."""
        with trio.fail_after(timeout):
            while not (result := predicate(self)):
                if self.closed:
                    raise trio.BrokenResourceError(f"connection closed; frames: {self.frames}")
                await self._pumped.park()
            return result

    async def until(self, predicate: Callable[[Client], Any], timeout: float = 20.0) -> Any:
        with trio.fail_after(timeout):
            while not (result := predicate(self)):
                if self.closed:
                    raise AssertionError(f"connection closed; frames: {self.frames}")
                await self.pump()
            return result

    async def until_closed(self, timeout: float = 20.0) -> None:
        with trio.fail_after(timeout):
            while not self.closed:
                await self.pump()

    @property
    def acked(self) -> int:
        return max((f.seq for f in self.frames if isinstance(f, Ack)), default=-1)

    @property
    def welcome(self) -> Welcome | None:
        return next((f for f in self.frames if isinstance(f, Welcome)), None)

    @property
    def errors(self) -> list[ErrorFrame]:
        return [f for f in self.frames if isinstance(f, ErrorFrame)]

    @property
    def flows(self) -> list[Flow]:
        return [f for f in self.frames if isinstance(f, Flow)]

    async def aclose(self) -> None:
        await self.stream.aclose()


class CollectorProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, http_port: int | None,
                 store_uri: str, log_path: pathlib.Path) -> None:  # fmt: skip
        self.proc = proc
        self.port = port
        self.http_port = http_port
        self.store_uri = store_uri
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


#: How long a collector asked to stop gets before it is SIGKILLed: more than
#: its SHUTDOWN_GRACE (10 s of draining) plus the stop of its writer child
#: (up to 10 s), so a slow but clean shutdown is never cut short. (A killed
#: collector's children end by themselves: collector/lifeline.py.)
COLLECTOR_STOP_TIMEOUT_S = 30.0


def _wait_log(cp: CollectorProcess, text: str, deadline_s: float) -> None:
    """Until the collector's log says ``text`` (it logs at info here)."""
    end = time.monotonic() + deadline_s
    while text not in cp.log():
        if cp.proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"the collector never logged {text!r}")
        time.sleep(0.05)  # polling a file another process writes, within the deadline


@contextlib.contextmanager
def collector_process(
    tmp: pathlib.Path,
    *args: str,
    store_uri: str | None = None,
    http: bool = False,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[CollectorProcess]:
    """A real ``collector serve`` on free ports; yields once the ingest port accepts."""
    port = port or free_port()
    http_port = free_port() if http else None
    store_uri = store_uri or f"sqlite:///{tmp / 'collector.db'}"
    log_path = tmp / f"collector-{port}-{time.monotonic_ns()}.log"
    argv = [sys.executable, "-m", "deltawire.collector", "serve", "--listen", f"127.0.0.1:{port}",
            "--store", store_uri, "--log-level", "info"]  # fmt: skip
    argv += ["--http", f"127.0.0.1:{http_port}"] if http_port else ["--no-http"]
    argv += list(args)
    full_env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DELTAWIRE_CONFIG_DIR": str(tmp),
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=full_env)
    cp = CollectorProcess(proc, port, http_port, store_uri, log_path)
    try:
        try:
            wait_port("127.0.0.1", port, 30, proc)
            if http_port:
                wait_port("127.0.0.1", http_port, 30, proc)
                # Every API worker listens (the port answers once the first does).
                _wait_log(cp, "collector ready", 30)
        except Exception as exc:
            raise RuntimeError(f"collector did not start: {exc}\n{cp.log()}") from exc
        yield cp
    finally:
        stop_process(proc, COLLECTOR_STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def collector_in_process(tmp: pathlib.Path, **ingest: Any) -> AsyncIterator[int]:
    """A collector serving in this trio loop (``serve``, the thread writer, no
    HTTP) on a free 127.0.0.1 port, over SQLite in ``tmp``; yields the port.
    ``ingest``: ``IngestConfig`` fields. For tests of the wire, not of the process."""
    from deltawire.collector.hub import IngestConfig
    from deltawire.collector.server import ServeConfig, serve

    cfg = ServeConfig(listen=("127.0.0.1", 0), http=None,
                      store_uri=f"sqlite:///{tmp / 'collector.db'}", writer="thread",
                      ingest=IngestConfig(**ingest))  # fmt: skip
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve, cfg)
        nursery.cancel_scope.cancel()


@contextlib.contextmanager
def sqlite_with_folder(db: pathlib.Path) -> Iterator[tuple[SqliteStore, subprocess.Popen[bytes]]]:
    """An open SQLite store at ``db`` with its folder process started
    (``start_checkpointer``); yields (store, folder). On a clean exit the
    store is closed and the folder must have stopped with it."""
    from deltawire.collector.stores.sqlite import SqliteStore

    store = SqliteStore(f"sqlite:///{db}")
    store.open()
    try:
        store.start_checkpointer()
        folder = store._folder_proc
        assert folder is not None
        yield store, folder
    finally:
        store.close()
    assert folder.returncode is not None  # stopped with the store


def make_samples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Samples that change a little each time, like real process stats."""
    out = []
    for i in range(n):
        out.append({
            "cpu": {"percent": round((i * 7 + seed) % 100 / 3, 1), "user": i * 0.01 + seed},
            "mem": {"rss": 1_000_000 + (i % 13) * 4096, "vms": 9_000_000},
            "threads": 4 + (i % 3),
            "status": "running",
            "io": {"read_bytes": i * 512, "write_bytes": i * 256},
        })  # fmt: skip
    return out


async def stream_session(
    port: int,
    session: str,
    samples: list[dict[str, Any]],
    *,
    chunk: int = 50,
    deadline: float = 60.0,
    progress: Callable[[int], Any] | None = None,
    reconnect: bool = True,
    pace: float = 0.0,
    t0: float = 1_700_000_000.0,
    step: float = 1.0,
) -> int:
    """An agent written from PROTOCOL.md: send ``samples`` (seq = index, stamped
    ``t0 + index * step``) until all are acked, reconnecting and resuming after
    ``welcome.acked`` whenever the link breaks. ``progress`` gets the acked seq
    as acks arrive. Returns the number of connections it took."""
    from deltawire.protocol import DeltaEncoder, Encoder, Hello

    enc = Encoder()
    last = len(samples) - 1
    connections = 0
    with trio.fail_after(deadline):
        while True:
            try:
                client = await Client.connect(port)
            except OSError:
                if not reconnect:
                    raise
                await trio.sleep(0.05)  # retry backoff while the collector is down
                continue
            connections += 1
            done = False
            try:
                async with trio.open_nursery() as nursery:

                    async def reader(client: Client) -> None:
                        while not client.closed:
                            await client.pump()
                            if progress is not None:
                                progress(client.acked)

                    nursery.start_soon(reader, client)
                    await client.send(enc.send(Hello(session=session, host="test-host")))
                    welcome = await client.changed(lambda c: c.welcome)
                    delta = DeltaEncoder()
                    pos = welcome.acked + 1
                    while pos <= last:
                        part = samples[pos : pos + chunk]
                        await client.send(b"".join(
                            enc.send(delta.encode(pos + i, t0 + (pos + i) * step, "process", s))
                            for i, s in enumerate(part)
                        ))  # fmt: skip
                        pos += len(part)
                        if pace:
                            await trio.sleep(pace)  # pacing a stream, not synchronising
                    await client.changed(lambda c: c.acked >= last, timeout=deadline)
                    nursery.cancel_scope.cancel()
                await client.aclose()
                done = True
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                if not reconnect:
                    raise
                done = False
            if done:
                return connections
            await trio.sleep(0.05)  # reconnect backoff, as an agent's


__all__ += ["make_samples", "stream_session"]
