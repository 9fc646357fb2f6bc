"""End to end: real `watchdog` processes, real children, a real `collector` process
on the SQLite store (killed and restarted at will), read back through the store."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deltawire.collector.stores import open_store
from deltawire.collector.stores.base import MetricQuery
from deltawire.testing.harness import wait_until
from deltawire.testing.servers import free_port, stop_process, wait_port
from deltawire.watchdog.spool import session_dir, summarize

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
DEADLINE = 60.0


def wait_for(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``deadline`` s."""
    return wait_until(check, deadline, what)


def base_env(tmp_path: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WATCHDOG_", "DELTAWIRE_", "LOG_", "COLLECTOR_", "STORE_"))}  # fmt: skip
    env.update(PYTHONPATH=str(REPO), DELTAWIRE_CONFIG_DIR=str(tmp_path))
    return env


class Collector:
    """A collector process on a fixed port and store, which can be killed and restarted."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.uri = f"sqlite:///{tmp_path / 'collector.db'}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._store: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.tmp_path / "collector.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deltawire.collector", "serve", "--listen", self.address, "--no-http",
             "--store", self.uri],
            env=base_env(self.tmp_path), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        wait_port("127.0.0.1", self.port, DEADLINE, self.proc)  # a process start: generous

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = open_store(self.uri)
            self._store.open()
        return self._store

    def docs(self, session: str) -> list[dict[str, Any]]:
        docs = self.store.find(MetricQuery(session=session, limit=100_000))
        return sorted(docs, key=lambda d: d["seq"])

    def session(self, session: str) -> dict[str, Any] | None:
        return next((s for s in self.store.sessions() if s["session"] == session), None)


@pytest.fixture
def collector(tmp_path: pathlib.Path) -> Iterator[Collector]:
    c = Collector(tmp_path)
    try:
        yield c
    finally:
        c.stop()
        if c._store is not None:
            c._store.close()


class Watchdog:
    """One `watchdog run` process."""

    def __init__(self, tmp_path: pathlib.Path, collector: Collector, *args: str,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.spool_dir = tmp_path / "spool"
        full_env = base_env(tmp_path)
        full_env.update(WATCHDOG_SPOOL_DIR=str(self.spool_dir), WATCHDOG_REPLAY_RATE="0",
                        WATCHDOG_SHUTDOWN_GRACE="10")  # fmt: skip
        full_env.update(env or {})
        self.stderr_path = tmp_path / f"watchdog-{time.monotonic_ns()}.log"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deltawire.watchdog", "run", "--collector", collector.address, *args],
                env=full_env, stdin=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def held(stop: pathlib.Path, code: int = 0) -> list[str]:
    """A command that runs until ``stop`` exists, then exits ``code``: the test
    ends the run on a condition it waited for, never after a fixed time that
    a slow machine would spend before the samples it asserts were taken."""
    return ["sh", "-c", f"while [ ! -e {stop} ]; do sleep 0.05; done; exit {code}"]


def running(wd: Watchdog, check: Callable[[], Any]) -> Callable[[], Any]:
    """``check``, failing at once if the watchdog ended before it held."""

    def probe() -> Any:
        assert wd.proc.poll() is None, f"the watchdog exited early: {wd.stderr}"
        return check()

    return probe


def assert_exactly_once_in_order(docs: list[dict[str, Any]]) -> None:
    seqs = [d["seq"] for d in docs]
    assert seqs == list(range(len(seqs))), f"gaps or duplicates: {seqs}"


def test_done_when_exit_code_3_with_process_and_system_samples(
    tmp_path: pathlib.Path, collector: Collector
) -> None:
    collector.start()
    # The command runs until the collector holds 5 samples of each (then
    # exits 3): a condition, not a time, so a slow start under load cannot
    # leave the run with fewer samples than it asserts.
    stop = tmp_path / "stop"
    wd = Watchdog(tmp_path, collector, "--interval", "0.2", "--push-every", "2", "--session",
                  "done-when", "--tag", "e2e", "--", *held(stop, 3))  # fmt: skip

    def stored(name: str) -> int:
        return sum(d["name"] == name for d in collector.docs("done-when"))

    wait_for("5 process and 5 system samples stored",
             lambda: stored("process") >= 5 and stored("system") >= 5)  # fmt: skip
    stop.touch()
    assert wd.wait() == 3, wd.stderr
    session = wait_for("the session end", lambda: (s := collector.session("done-when"))
                       and s["ended"] and s)  # fmt: skip
    assert session["exit_code"] == 3
    assert session["tags"] == ["e2e"] and session["agent"].startswith("deltawire-watchdog/")
    docs = collector.docs("done-when")
    assert_exactly_once_in_order(docs)
    process = [d for d in docs if d["name"] == "process"]
    system = [d for d in docs if d["name"] == "system"]
    assert len(process) >= 5 and len(system) >= 5
    assert {"pid", "status", "cpu", "mem", "threads", "ctx", "children"} <= set(process[-1]["data"])
    assert {"cpu", "load", "mem", "swap"} <= set(system[-1]["data"])
    assert docs[-1]["kind"] == "session" and docs[-1]["data"] == {"exit_code": 3}
    assert "Traceback" not in wd.stderr


def test_collector_down_at_start_then_up_no_sample_missing(
    tmp_path: pathlib.Path, collector: Collector
) -> None:
    stop = tmp_path / "stop"
    wd = Watchdog(tmp_path, collector, "--interval", "0.1", "--push-every", "2", "--session",
                  "late-collector", "--", *held(stop))  # fmt: skip
    spool = session_dir(wd.spool_dir, "late-collector")
    wait_for("samples spooled while nobody listens",
             running(wd, lambda: spool.exists() and summarize(spool).records >= 10))  # fmt: skip
    collector.start()
    # The run ends once 25 system samples are stored (a condition, not the
    # 4 s it used to sleep, which a slow start could spend with fewer taken).
    wait_for("25 system samples stored", running(wd, lambda: sum(
        d["name"] == "system" for d in collector.docs("late-collector")) >= 25))  # fmt: skip
    stop.touch()
    assert wd.wait() == 0, wd.stderr
    docs = collector.docs("late-collector")
    assert_exactly_once_in_order(docs)
    assert sum(d["name"] == "system" for d in docs) >= 25
    assert docs[-1]["data"] == {"exit_code": 0}


def test_collector_killed_mid_stream_and_restarted(tmp_path: pathlib.Path,
                                                   collector: Collector) -> None:  # fmt: skip
    collector.start()
    stop = tmp_path / "stop"
    wd = Watchdog(tmp_path, collector, "--interval", "0.05", "--push-every", "2", "--session",
                  "collector-crash", "--", *held(stop))  # fmt: skip
    wait_for("the first samples stored",
             running(wd, lambda: len(collector.docs("collector-crash")) >= 10))  # fmt: skip
    collector.kill()
    spool = session_dir(wd.spool_dir, "collector-crash")
    spooled = wait_for("samples spooled while the collector is down",
                       running(wd, lambda: (s := summarize(spool)).records >= 20 and s))  # fmt: skip
    collector.start()
    # What was spooled during the outage is stored while the run goes on: the
    # end does not depend on the shutdown grace being long enough for it.
    wait_for("the outage's samples stored", running(wd, lambda: (
        d := collector.docs("collector-crash")) and d[-1]["seq"] >= spooled.last_seq))  # fmt: skip
    stop.touch()
    assert wd.wait() == 0, wd.stderr
    docs = collector.docs("collector-crash")
    assert_exactly_once_in_order(docs)
    assert docs[-1]["kind"] == "session"


def test_watchdog_killed_and_restarted_delivers_the_spool(tmp_path: pathlib.Path,
                                                          collector: Collector) -> None:  # fmt: skip
    pidfile = tmp_path / "app.pid"
    sockfile = tmp_path / "app.sock-path"
    first = Watchdog(tmp_path, collector, "--interval", "0.05", "--session", "killed-run", "--",
                     "sh", "-c", f"echo $DELTAWIRE_EVENTS > {sockfile}; echo $$ > {pidfile}; "
                     "exec sleep 60")  # fmt: skip
    spool = session_dir(first.spool_dir, "killed-run")
    wait_for("a backlog", lambda: spool.exists() and summarize(spool).records >= 20)
    first.kill()  # SIGKILL: no bye, no cleanup
    app_pid = int(wait_for("the app's pid", lambda: pidfile.read_text().strip()))
    os.kill(app_pid, signal.SIGKILL)  # our grandchild, orphaned by the SIGKILL
    # The killed watchdog could not remove its event socket's directory.
    shutil.rmtree(pathlib.Path(sockfile.read_text().strip()).parent, ignore_errors=True)
    left = summarize(spool)
    assert left.owner_pid is None and left.first_seq == 0

    collector.start()
    stop = tmp_path / "stop"
    second = Watchdog(tmp_path, collector, "--interval", "0.2", "--", *held(stop))
    docs = wait_for("the backlog stored", running(second, lambda: len(
        d := collector.docs("killed-run")) >= left.records and d))  # fmt: skip
    stop.touch()
    assert second.wait() == 0, second.stderr
    assert_exactly_once_in_order(docs)
    assert docs[-1]["seq"] == left.last_seq
    wait_for("the backlog removed from the spool", lambda: not spool.exists())


def test_spool_bound_respected_and_drops_reported(tmp_path: pathlib.Path,
                                                  collector: Collector) -> None:  # fmt: skip
    bound = 16 * 1024
    stop = tmp_path / "stop"
    wd = Watchdog(tmp_path, collector, "--interval", "0.01", "--push-every", "1",
                  "--spool-max-bytes", str(bound), "--session", "bounded", "--", *held(stop),
                  env={"WATCHDOG_SHUTDOWN_GRACE": "0.1"})  # fmt: skip
    spool = session_dir(wd.spool_dir, "bounded")
    sizes: list[int] = []
    first_drop: int | None = None  # the last seq when the first drop was seen
    deadline = time.monotonic() + DEADLINE
    while wd.proc.poll() is None:
        size = 0
        for seg in spool.glob("*.seg"):
            with contextlib.suppress(FileNotFoundError):  # dropped meanwhile
                size += seg.stat().st_size
        sizes.append(size)
        # The run ends once a whole spool's worth was dropped (everything held
        # at the first drop is gone): a condition, not a time.
        with contextlib.suppress(FileNotFoundError):  # a segment dropped meanwhile
            now = summarize(spool) if spool.exists() else None
            if now is not None and (now.first_seq or 0) > 0:
                first_drop = now.last_seq if first_drop is None else first_drop
                if (now.first_seq or 0) > (first_drop or 0):
                    stop.touch()
        assert time.monotonic() < deadline, f"the spool did not turn over in {DEADLINE}s"
        time.sleep(0.02)  # the sampling period of the size, not synchronisation
    assert wd.proc.returncode == 0
    assert sizes and max(sizes) <= bound + 4096  # within one record of the bound
    assert (summarize(spool).first_seq or 0) > 0  # the oldest were dropped

    collector.start()
    send = subprocess.run(
        [sys.executable, "-m", "deltawire.watchdog", "spool", "send", "--collector", collector.address,
         "--spool-dir", str(wd.spool_dir), "--timeout", "20"],
        env=base_env(tmp_path), capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert send.returncode == 0, send.stderr
    docs = collector.docs("bounded")
    seqs = [d["seq"] for d in docs]
    assert seqs == sorted(seqs)
    drops = [d["data"] for d in docs if d["name"] == "watchdog.spool_dropped"]
    assert drops, "the drop was not reported"
    missing = set(range(seqs[-1] + 1)) - set(seqs)
    assert drops[-1]["total"] == len(missing)
    assert docs[-1]["kind"] == "session"


def test_corrupt_segment_is_skipped_and_the_rest_replayed(tmp_path: pathlib.Path,
                                                          collector: Collector) -> None:  # fmt: skip
    stop = tmp_path / "stop"
    wd = Watchdog(tmp_path, collector, "--interval", "0.01", "--push-every", "1",
                  "--spool-max-bytes", "128k", "--session", "corrupt", "--", *held(stop),
                  env={"WATCHDOG_SHUTDOWN_GRACE": "0.1"})  # fmt: skip
    spool = session_dir(wd.spool_dir, "corrupt")
    # The run ends once the spool has several segments (it used to sleep 1.5 s
    # and hope for them).
    wait_for("several segments", running(wd, lambda: len(list(spool.glob("*.seg"))) >= 4))
    stop.touch()
    assert wd.wait() == 0
    segments = sorted(spool.glob("*.seg"))
    assert len(segments) >= 3, "want several segments"
    before = summarize(spool)
    victim = segments[len(segments) // 2]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    victim.write_bytes(bytes(raw))

    collector.start()
    stop_second = tmp_path / "stop-second"
    second = Watchdog(tmp_path, collector, "--interval", "0.2", "--", *held(stop_second),
                      env={"LOG_LEVEL": "warning"})  # fmt: skip
    docs = wait_for("the backlog stored", running(second, lambda: (d := collector.docs("corrupt"))
                    and d[-1]["kind"] == "session" and d))  # fmt: skip
    stop_second.touch()
    assert second.wait() == 0
    assert "corrupt" in second.stderr
    seqs = [d["seq"] for d in docs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[0] == 0 and seqs[-1] == before.last_seq  # before and after the victim
    assert 0 < before.records - len(docs) < before.records // 2  # only the victim's tail lost


def test_events_from_the_socket_and_from_watchdog_emit(tmp_path: pathlib.Path,
                                                       collector: Collector) -> None:  # fmt: skip
    collector.start()
    app = ("from watchdog.client import emit\n"
           "import subprocess, sys\n"
           "assert emit('app.started', {'version': '1.2.3'})\n"
           "subprocess.run([sys.executable, '-m', 'watchdog', 'emit', 'shell.step', '--data',"
           " '{\"n\": 1}'], check=True)\n"
           "import socket, os\n"
           "s = socket.socket(socket.AF_UNIX); s.connect(os.environ['DELTAWIRE_EVENTS'])\n"
           "s.sendall(b'{broken\\n'); s.close()\n")  # fmt: skip
    wd = Watchdog(tmp_path, collector, "--interval", "0.2", "--session", "events", "--",
                  sys.executable, "-c", app)  # fmt: skip
    assert wd.wait() == 0, wd.stderr
    events = {d["name"]: d.get("data") for d in collector.docs("events") if d["kind"] == "event"}
    assert events["app.started"] == {"version": "1.2.3"}
    assert events["shell.step"] == {"n": 1}
    assert events["watchdog.malformed_events"] == {"count": 1, "total": 1}
    assert "malformed event line" in wd.stderr  # logged, not fatal
