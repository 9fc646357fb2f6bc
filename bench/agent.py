"""Agent bench: what the watchdog costs the machine it watches.

A real ``watchdog run -- sleep`` against a real collector (SQLite store), once
per interval (1 s and 0.1 s by default, ``--seconds`` each, after a warm-up).
Measured from outside with psutil on the watchdog process: CPU as % of one core
and peak RSS; the bytes on the wire are counted by a TCP relay between the
watchdog and the collector (watchdog -> collector direction). The sampling
cost per tick is the watchdog's own figure (its end-of-session log).

    python -m bench.agent --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import psutil

from deltawire.testing.servers import free_port, stop_process, wait_port

from .report import Table

__all__ = ["AgentFigures", "main", "measure", "run"]

REPO = pathlib.Path(__file__).resolve().parent.parent
GOAL_CPU_PERCENT = 0.5  # of one core, at interval 1 s
GOAL_RSS_MB = 40.0
WARMUP_S = 3.0
PUSH_EVERY = 4  # the seed's default


@dataclass(frozen=True)
class AgentFigures:
    interval: float
    seconds: float
    cpu_percent: float  # of one core
    rss_mb: float  # peak
    wire_bytes_per_s: float
    sample_ms: float | None  # psutil cost per tick (process + system)


class CountingRelay:
    """127.0.0.1 TCP relay that counts the bytes going upstream."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_bytes = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.upstream_bytes += len(data)
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def _env(tmp: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHDOG_", "LOG_"))}
    env.update(PYTHONPATH=str(REPO), DELTAWIRE_CONFIG_DIR=str(tmp))
    return env


@contextlib.contextmanager
def _collector(tmp: pathlib.Path) -> Iterator[int]:
    port = free_port()
    with open(tmp / "collector.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deltawire.collector", "serve", "--listen", f"127.0.0.1:{port}",
             "--no-http", "--store", f"sqlite:///{tmp / 'bench.db'}"],
            env=_env(tmp), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        wait_port("127.0.0.1", port, 30, proc)
        yield port
    finally:
        stop_process(proc, 15)


def measure(
    interval: float, seconds: float, collector_port: int, tmp: pathlib.Path
) -> AgentFigures:
    """Run one watchdog at ``interval`` for warm-up + ``seconds`` and measure it."""
    relay = CountingRelay(("127.0.0.1", collector_port))
    env = _env(tmp)
    env.update(WATCHDOG_SPOOL_DIR=str(tmp / f"spool-{interval}"), LOG_LEVEL="info",
               WATCHDOG_REPLAY_RATE="0")  # fmt: skip
    err_path = tmp / f"watchdog-{interval}.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deltawire.watchdog", "run", "--collector", f"127.0.0.1:{relay.port}",
             "--interval", str(interval), "--push-every", str(PUSH_EVERY), "--",
             "sleep", str(int(WARMUP_S + seconds + 30))],
            env=env, stdin=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        watched = psutil.Process(proc.pid)
        time.sleep(WARMUP_S)  # a benchmark's measuring window, not synchronisation
        cpu0 = sum(watched.cpu_times()[:2])
        bytes0 = relay.upstream_bytes
        t0 = time.monotonic()
        peak_rss = 0
        while (elapsed := time.monotonic() - t0) < seconds:
            peak_rss = max(peak_rss, watched.memory_info().rss)
            time.sleep(min(1.0, seconds - elapsed))
        cpu = sum(watched.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - t0
        sent = relay.upstream_bytes - bytes0
        peak_rss = max(peak_rss, watched.memory_info().rss)
        proc.send_signal(signal.SIGTERM)  # forwarded to sleep; ends the session
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        relay.close()
    return AgentFigures(interval, wall, 100.0 * cpu / wall, peak_rss / 1e6, sent / wall,
                        _sample_ms(err_path))  # fmt: skip


def _sample_ms(log: pathlib.Path) -> float | None:
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = orjson.loads(line)
            if doc.get("msg") == "session ended":
                return float(doc["sample_ms_avg"])
    return None


def run(seconds: float = 60.0, intervals: tuple[float, ...] = (1.0, 0.1)) -> list[Table]:
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as d:
        tmp = pathlib.Path(d)
        with _collector(tmp) as port:
            figures = [measure(i, seconds, port, tmp) for i in intervals]
    t = Table(f"agent — watchdog supervising sleep, push every {PUSH_EVERY} samples, "
              f"{seconds:g} s per interval", ["watchdog"])  # fmt: skip
    for f in figures:
        at_goal = f.interval == 1.0
        t.row(f"interval {f.interval:g} s: CPU, % of one core", f.cpu_percent,
              goal=f"< {GOAL_CPU_PERCENT}" if at_goal else "")  # fmt: skip
        t.row(f"interval {f.interval:g} s: peak RSS, MB", f.rss_mb,
              goal=f"< {GOAL_RSS_MB:g}" if at_goal else "")  # fmt: skip
        t.row(f"interval {f.interval:g} s: bytes/s on the wire", f.wire_bytes_per_s)
        t.row(f"interval {f.interval:g} s: psutil cost per tick, ms", f.sample_ms)
    return [t]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window per interval")
    parser.add_argument("--intervals", default="1,0.1", help="comma-separated sample intervals")
    args = parser.parse_args(argv)
    try:
        intervals = tuple(float(x) for x in args.intervals.split(",") if x.strip())
    except ValueError:
        parser.error("--intervals: comma-separated numbers, e.g. 1,0.1")
    if args.seconds <= 0 or not intervals or min(intervals) <= 0:
        parser.error("--seconds and --intervals must be > 0")
    for table in run(args.seconds, intervals):
        print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
