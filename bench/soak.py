"""The soak: agents stream through real collectors while faults are injected,
then an audit proves that nothing acknowledged was lost (issue 11).

    python -m bench.soak --seconds 180          # what ``make soak`` runs

Two collectors run, each a real ``collector serve`` with its HTTP API and the
Redis query cache: one on SQLite, one on the MongoDB-compatible server
(FerretDB). Agents written from PROTOCOL.md stream deterministic samples to
them through a TCP fault proxy (deltawire.testing.faultproxy): delta-encoded,
resuming after ``welcome.acked`` on every reconnect, giving up on a silent
connection after a few seconds, as the watchdog does. While they stream, a
fault schedule runs: ``kill -9`` of a collector (its process group) and a
restart, again and again; the SQLite write lock held (a stalled store);
FerretDB stopped and restarted; Redis stopped; the proxy resetting, delaying
and black-holing connections. Then the faults stop, the agents drain, and an
audit reads both stores back: for every acked (session, seq), is the sample
stored, exactly once, with the data and ts that were sent?

It writes a table to bench/results/soak.md and exits 1 if anything acked is
missing, duplicated or corrupted, or if a welcome ever said less than what
had been acked. Everything runs on 127.0.0.1 and stops by PID.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import trio

from deltawire.collector.stores import MetricQuery, open_store
from deltawire.protocol import DeltaEncoder, Encoder, Hello, json_equal
from deltawire.testing.faultproxy import FaultProxy
from deltawire.testing.harness import REPO, Client
from deltawire.testing.servers import ferretdb_at, free_port, redis_binary, stop_process, wait_port

RESULTS = REPO / "bench" / "results"
T0 = 1_700_000_000.0
#: Sample period of every agent: the watchdog's default interval is 1 s;
#: the soak samples faster so that minutes hold enough to lose.
PERIOD = 0.05
#: An agent that hears nothing for this long while waiting for acks gives
#: the connection up and reconnects (the watchdog's link does the same).
SILENCE_S = 4.0
_ENC = Encoder()


def sample(agent: int, seq: int) -> dict[str, Any]:
    """The sample an agent sends as ``seq``: derived, so the audit can recompute it."""
    x = agent * 7919 + seq
    return {
        "cpu": {"percent": round((x * 37 % 1000) / 10, 1), "user": x * 0.01},
        "mem": {"rss": 1_000_000 + (x % 97) * 4096, "big": 2**62 + x},
        "threads": 4 + x % 5,
        "status": ("running", "sleeping")[x % 2],
        "io": {"read": x * 512, "hist": [x % 3, x % 5, x % 7]},
    }


@dataclass
class Agent:
    index: int
    session: str
    port: int
    next_seq: int = 0  # the next sample to take
    acked: int = -1  # the highest seq acknowledged to us
    connections: int = 0
    regressions: list[str] = field(default_factory=list)  # welcome.acked < acked
    errors: Counter[str] = field(default_factory=Counter)
    sampling: bool = True

    async def run(self, started: float) -> None:
        backoff = 0.1
        while self.sampling or self.acked < self.next_seq - 1:
            try:
                client = await Client.connect(self.port)
            except OSError:
                await trio.sleep(backoff)  # the reconnect backoff
                backoff = min(backoff * 2, 1.0)
                continue
            self.connections += 1
            try:
                await self._connection(client, started)
                backoff = 0.1
            except Exception as exc:
                if not _link_failure(exc):
                    raise
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
            await trio.sleep(backoff)

    def _take_samples(self, started: float) -> None:
        if self.sampling:
            self.next_seq = max(self.next_seq, int((time.monotonic() - started) / PERIOD))

    async def _connection(self, client: Client, started: float) -> None:
        await client.send(_ENC.send(Hello(session=self.session, host=f"h{self.index % 4}")))
        with trio.fail_after(30):
            while client.welcome is None:
                await client.pump()
                if client.closed:
                    raise trio.BrokenResourceError("closed before the welcome")
        welcome = client.welcome
        if welcome.acked < self.acked:
            self.regressions.append(f"welcome.acked {welcome.acked} < acked {self.acked}")
        self.acked = max(self.acked, welcome.acked)
        delta = DeltaEncoder(keyframe_every=20)
        pos = welcome.acked + 1
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while True:
                    with trio.move_on_after(SILENCE_S) as quiet:
                        await client.pump()
                    self.acked = max(self.acked, client.acked)
                    for e in client.errors:
                        self.errors[e.code] += 1
                    client.frames.clear()  # acks are folded into self.acked above
                    if quiet.cancelled_caught and self.acked < pos - 1:
                        raise _Silent
                    if client.closed:
                        raise trio.BrokenResourceError("closed by the collector")

            nursery.start_soon(read)
            while self.sampling or pos < self.next_seq:
                self._take_samples(started)
                if pos < self.next_seq:
                    end = min(self.next_seq, pos + 50)
                    await client.send(b"".join(
                        _ENC.send(delta.encode(s, T0 + s * PERIOD, "proc", sample(self.index, s)))
                        for s in range(pos, end)
                    ))  # fmt: skip
                    pos = end
                await trio.sleep(PERIOD)  # the sampling interval
            while self.acked < pos - 1:
                await trio.sleep(0.05)  # waiting for the reader to see the last ack
            nursery.cancel_scope.cancel()


class _Silent(Exception):
    """No frame for SILENCE_S while acks were due: give the connection up."""


_LINK_FAILURES = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, _Silent,
                  trio.TooSlowError)  # fmt: skip


def _link_failure(exc: BaseException) -> bool:
    """True if ``exc`` (or every exception in a group) means: reconnect."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_link_failure(e) for e in exc.exceptions)
    return isinstance(exc, _LINK_FAILURES)


# -- processes ---------------------------------------------------------------


class Collector:
    """A ``collector serve`` on fixed ports, in its own process group, that
    the schedule kills with SIGKILL and starts again."""

    def __init__(self, name: str, store_uri: str, redis_uri: str, work: pathlib.Path) -> None:
        self.name = name
        self.store_uri = store_uri
        self.port = free_port()
        self.http_port = free_port()
        self.redis_uri = redis_uri
        self.log = work / f"collector-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.peak_rss = 0

    def start(self) -> None:
        argv = [sys.executable, "-m", "deltawire.collector", "serve", "--listen",
                f"127.0.0.1:{self.port}", "--http", f"127.0.0.1:{self.http_port}",
                "--store", self.store_uri, "--redis", self.redis_uri, "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "ENVIRONMENT": "test"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env=env, start_new_session=True)  # fmt: skip
        wait_port("127.0.0.1", self.port, 60, self.proc)

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # the collector and its children
        self.proc.wait(timeout=10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def sample_rss(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            root = psutil.Process(self.proc.pid)
            total = root.memory_info().rss
            for child in root.children(recursive=True):
                total += child.memory_info().rss
        except psutil.NoSuchProcess:
            return
        self.peak_rss = max(self.peak_rss, total)


class Redis:
    def __init__(self, work: pathlib.Path) -> None:
        self.port = free_port()
        self.uri = f"redis://127.0.0.1:{self.port}/0"
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.work), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port("127.0.0.1", self.port, 30, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# -- the run -----------------------------------------------------------------


@dataclass
class Fault:
    at: float  # fraction of the run
    what: str
    action: Callable[[], Awaitable[None]]


@dataclass
class Report:
    faults: list[tuple[float, str]] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    sampling_s: float = 0.0  # how long the agents sampled (the schedule may overrun)
    http: Counter[str] = field(default_factory=Counter)


async def _poll_http(collectors: list[Collector], report: Report, stop: trio.Event) -> None:
    """The API beside the faults: /readyz and a listing, once a second each."""
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            for col in collectors:
                for path in ("/readyz", "/metrics?limit=5"):
                    try:
                        r = await http.get(f"http://127.0.0.1:{col.http_port}{path}")
                        report.http[f"{r.status_code // 100}xx"] += 1
                        if r.status_code >= 500:
                            report.http[f"{r.status_code} {path.split('?')[0]}"] += 1
                    except httpx.HTTPError:
                        report.http["no answer (collector down)"] += 1
            with trio.move_on_after(1.0):
                await stop.wait()


def _hold_sqlite_lock(path: str) -> sqlite3.Connection:
    blocker = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def _audit(store_uri: str, agents: list[Agent]) -> dict[str, int]:
    # A long query deadline: the audit reads whole sessions, FerretDB is slow at it.
    options = {"timeout_ms": 600_000} if store_uri.startswith("mongodb") else {}
    store = open_store(store_uri, **options)
    store.open()
    totals: Counter[str] = Counter()
    try:
        for agent in agents:
            seqs: Counter[int] = Counter()
            after = None
            while page := store.find(MetricQuery(session=agent.session, limit=5000, after=after)):
                for doc in page:
                    seq = doc["seq"]
                    seqs[seq] += 1
                    if seqs[seq] == 1 and (
                        not json_equal(doc.get("data"), sample(agent.index, seq))
                        or abs(doc["ts"] - (T0 + seq * PERIOD)) > 1e-3
                    ):
                        totals["corrupted"] += 1
                after = (page[-1]["ts"], page[-1]["id"])
            totals["acked"] += agent.acked + 1
            totals["sent"] += agent.next_seq
            totals["stored"] += sum(seqs.values())
            totals["missing"] += sum(1 for s in range(agent.acked + 1) if s not in seqs)
            totals["duplicated"] += sum(n - 1 for n in seqs.values() if n > 1)
            totals["regressions"] += len(agent.regressions)
            totals["connections"] += agent.connections
    finally:
        store.close()
    return dict(totals)


async def soak(seconds: float, agents_per_store: int, work: pathlib.Path) -> int:
    report = Report()
    redis = Redis(work)
    redis.start()
    ferret_port = free_port()
    ferret_dir = work / "ferretdb"
    ferret_cm = ferretdb_at(ferret_port, ferret_dir, work / "ferretdb.log")
    ferret_cm.__enter__()
    ferret_on = True
    sqlite_path = str(work / "soak.db")
    cols = [Collector("sqlite", f"sqlite:///{sqlite_path}", redis.uri, work),
            Collector("mongo", f"mongodb://127.0.0.1:{ferret_port}/soak", redis.uri, work)]  # fmt: skip
    for col in cols:
        col.start()
    proxies = [FaultProxy(col.port) for col in cols]
    agents: list[list[Agent]] = [[], []]
    started = time.monotonic()
    blocker: list[sqlite3.Connection] = []

    def log(what: str) -> None:
        t = time.monotonic() - started
        report.faults.append((t, what))
        print(f"[{t:6.1f}s] {what}", file=sys.stderr, flush=True)

    async def kill(i: int) -> None:
        cols[i].kill9()
        log(f"kill -9 collector ({cols[i].name}), #{cols[i].kills}")
        await trio.sleep(1.0)  # down for a moment, as a crash-looping unit is
        await trio.to_thread.run_sync(cols[i].start)
        log(f"collector ({cols[i].name}) restarted")

    async def stall(duration: float) -> None:
        blocker.append(await trio.to_thread.run_sync(_hold_sqlite_lock, sqlite_path))
        log(f"SQLite write lock held for {duration:g} s (stalled store)")
        await trio.sleep(duration)  # the length of the outage
        blocker.pop().execute("ROLLBACK")
        log("SQLite write lock released")

    async def ferret_outage(duration: float) -> None:
        nonlocal ferret_cm, ferret_on
        await trio.to_thread.run_sync(lambda: ferret_cm.__exit__(None, None, None))
        ferret_on = False
        log(f"MongoDB-compatible server stopped for {duration:g} s")
        await trio.sleep(duration)  # the length of the outage
        ferret_cm = ferretdb_at(ferret_port, ferret_dir, work / "ferretdb.log")
        await trio.to_thread.run_sync(ferret_cm.__enter__)
        ferret_on = True
        log("MongoDB-compatible server restarted")

    async def redis_stop() -> None:
        await trio.to_thread.run_sync(redis.stop)
        log("Redis stopped (for the rest of the run)")

    async def flap(i: int, kind: str, duration: float = 0.0) -> None:
        proxy = proxies[i]
        if kind == "reset":
            proxy.reset()
            log(
                f"proxy ({cols[i].name}): reset {proxy.counts['connections_reset']} connections so far"
            )
            return
        if kind == "delay":
            proxy.set_delay(0.3)
        else:
            proxy.set_blackhole(True)
        log(f"proxy ({cols[i].name}): {kind} for {duration:g} s")
        await trio.sleep(duration)  # the length of the flap
        proxy.heal()
        log(f"proxy ({cols[i].name}): healed")

    schedule = [
        Fault(0.06, "kill", lambda: kill(0)),
        Fault(0.10, "reset", lambda: flap(0, "reset")),
        Fault(0.14, "stall", lambda: stall(5)),
        Fault(0.20, "ferret", lambda: ferret_outage(6)),
        Fault(0.26, "kill", lambda: kill(0)),
        Fault(0.32, "delay", lambda: flap(0, "delay", 6)),
        Fault(0.38, "kill", lambda: kill(1)),
        Fault(0.42, "redis", redis_stop),
        Fault(0.46, "kill", lambda: kill(0)),
        Fault(0.50, "blackhole", lambda: flap(0, "blackhole", 6)),
        Fault(0.56, "reset", lambda: flap(1, "reset")),
        Fault(0.60, "kill", lambda: kill(0)),
        Fault(0.64, "ferret", lambda: ferret_outage(5)),
        Fault(0.70, "blackhole", lambda: flap(1, "blackhole", 5)),
        Fault(0.74, "kill", lambda: kill(0)),
        Fault(0.78, "stall", lambda: stall(4)),
        Fault(0.84, "reset", lambda: flap(0, "reset")),
        Fault(0.88, "kill", lambda: kill(0)),
    ]
    stop_http = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            ports = [await nursery.start(p.run) for p in proxies]
            for i in range(2):
                for j in range(agents_per_store):
                    agent = Agent(index=i * 1000 + j, session=f"soak-{cols[i].name}-{j}",
                                  port=ports[i])  # fmt: skip
                    agents[i].append(agent)
                    nursery.start_soon(_run_agent, agent, started)
            nursery.start_soon(_poll_http, cols, report, stop_http)

            async def rss() -> None:
                while True:
                    for col in cols:
                        col.sample_rss()
                    await trio.sleep(0.5)  # the sampling period

            nursery.start_soon(rss)
            for fault in schedule:
                delay = started + fault.at * seconds - time.monotonic()
                if delay > 0:
                    await trio.sleep(delay)  # the schedule's clock
                await fault.action()
            await trio.sleep(max(0.0, started + seconds - time.monotonic()))  # the run's length
            log("faults over: agents stop sampling and drain")
            report.sampling_s = time.monotonic() - started
            for a in agents[0] + agents[1]:
                a.sampling = False
            with trio.move_on_after(180) as drain:
                while any(a.acked < a.next_seq - 1 for a in agents[0] + agents[1]):
                    await trio.sleep(0.2)  # polling the agents' progress
            if drain.cancelled_caught:
                behind = [f"{a.session} acked {a.acked}/{a.next_seq - 1} ({a.connections} conns)"
                          for a in agents[0] + agents[1] if a.acked < a.next_seq - 1]  # fmt: skip
                log(f"drain timed out: the audit counts what was acked; behind: {behind}")
            stop_http.set()
            nursery.cancel_scope.cancel()
    finally:
        elapsed = time.monotonic() - started
        for col in cols:
            col.stop()
        for b in blocker:
            b.close()
    results = [_audit(cols[i].store_uri, agents[i]) for i in range(2)]
    ferret_cm.__exit__(None, None, None)
    redis.stop()
    bad = sum(r.get(k, 0) for r in results for k in ("missing", "duplicated", "corrupted",
                                                        "regressions"))  # fmt: skip
    report.kinds = Counter(f.what for f in schedule)
    _write_table(seconds, elapsed, cols, proxies, results, agents, report, bad)
    return 1 if bad else 0


async def _run_agent(agent: Agent, started: float) -> None:
    while True:
        try:
            await agent.run(started)
            return
        except Exception as exc:  # a soak agent must not die of a surprise: report it
            agent.errors[f"agent exception {type(exc).__name__}: {exc}"[:80]] += 1
            await trio.sleep(0.5)  # before trying again


_FAULT_NAMES = {
    "kill": "kill -9 of a collector and a restart",
    "stall": "SQLite write lock held (stalled store)",
    "ferret": "MongoDB-compatible server stopped and restarted",
    "redis": "Redis stopped",
    "reset": "proxy resets every connection",
    "delay": "proxy delays every chunk 300 ms",
    "blackhole": "proxy black-holes every connection",
}


def _write_table(seconds: float, elapsed: float, cols: list[Collector], proxies: list[FaultProxy],
                 results: list[dict[str, int]], agents: list[list[Agent]], report: Report,
                 bad: int) -> None:  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    rate = sum(a.next_seq for group in agents for a in group) / max(report.sampling_s, 1.0)
    lines = [
        "# Soak: faults injected while agents stream, then an audit of every acked sample",
        "",
        f"Run: {seconds:g} s of faults, sampling for {report.sampling_s:.0f} s, "
        f"{elapsed:.0f} s with the drain, "
        f"{sum(len(g) for g in agents)} agents, {rate:.0f} samples/s offered "
        f"(every agent samples each {PERIOD * 1000:g} ms). Verdict: "
        + ("**PASS**: nothing acked was lost, duplicated or changed." if not bad else "**FAIL**"),
        "",
        "| store | agents | sent | acked | stored | missing | duplicated | corrupted |"
        " welcome regressions | connections | kill -9 | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for col, group, r in zip(cols, agents, results, strict=True):
        lines.append(
            f"| {col.name} | {len(group)} | {r.get('sent', 0)} | {r.get('acked', 0)} |"
            f" {r.get('stored', 0)} | {r.get('missing', 0)} | {r.get('duplicated', 0)} |"
            f" {r.get('corrupted', 0)} | {r.get('regressions', 0)} | {r.get('connections', 0)} |"
            f" {col.kills} | {col.peak_rss / 2**20:.0f} |"
        )
    errors: Counter[str] = Counter()
    for group in agents:
        for a in group:
            errors.update(a.errors)
    lines += [
        "",
        f"Faults survived: {sum(report.kinds.values())} ("
        + ", ".join(f"{n}x {_FAULT_NAMES[k]}" for k, n in sorted(report.kinds.items()))
        + ")",
        "",
        "Proxy: "
        + "; ".join(
            f"{c.name}: {p.counts['accepted']} connections, {p.counts['connections_reset']} reset, "
            f"{p.counts['blackholes']} black holes, {p.counts['delays']} delays, "
            f"{p.counts['refused_upstream']} refused upstream"
            for c, p in zip(cols, proxies, strict=True)
        ),
        "",
        "Error frames the agents received: "
        + (", ".join(f"{k} {n}" for k, n in sorted(errors.items())) or "none"),
        "",
        "HTTP API polled beside the faults: "
        + ", ".join(f"{k}: {n}" for k, n in sorted(report.http.items())),
        "",
        "Schedule:",
        "",
        *[f"- {t:6.1f} s: {what}" for t, what in report.faults],
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "soak.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 150)),
                    help="length of the fault schedule (default: $SOAK_SECONDS or 150)")  # fmt: skip
    ap.add_argument("--agents", type=int, default=8,
                    help="agents per collector (default: 8)")  # fmt: skip
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="deltawire-soak-") as work:
        return trio.run(soak, args.seconds, args.agents, pathlib.Path(work))


if __name__ == "__main__":
    raise SystemExit(main())
