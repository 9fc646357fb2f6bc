"""Query bench: the same samples in deltawire and in InfluxDB 1.x, the same
questions asked of both over HTTP, uncached, side by side.

deltawire: a SQLite store loaded through the store writer's path (rollup tiers
on), then served by a real ``python -m deltawire.collector.api`` process with
its cache off. InfluxDB: Debian's ``influxd`` (installed with apt-get when
missing), started here on 127.0.0.1 with a temporary config and data
directory, and stopped by PID after. Every question is checked to give the
same numbers on both (percentiles within 2%), then timed ``--reps`` times.

Also: store writes/s (the writer's path has no folding: a folder process
folds beside it) and the folding's CPU per sample.

    python -m bench.query [--samples 1000000] [--sessions 100] [--reps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from deltawire.collector.stores.sqlite import SqliteStore, encode_row
from deltawire.testing.servers import free_port, stop_process, wait_port

from .report import Table

__all__ = ["main", "run"]

REPO = pathlib.Path(__file__).resolve().parent.parent
#: Samples per write batch (the collector's BATCH_MAX_DOCS default).
BATCH = 2000
#: Samples folded between two progress lines.
FOLD_STEP = 200_000
#: Lines per InfluxDB /write request.
INFLUX_BATCH = 10_000
#: Hosts the sessions run on.
HOSTS = 4
#: Sample times start here: a whole day, so hour buckets line up in both.
T0 = 1_795_000_000 // 86400 * 86400
#: Percentiles must agree within this (the sketch promises 1%).
PCT_TOLERANCE = 0.02


# -- the data ---------------------------------------------------------------------------


def _sample(session: int, i: int) -> dict[str, Any]:
    """Sample i of a session: a gauge, a slowly varying gauge, two counters."""
    x = (i * 7919 + session * 104729) % 1000
    return {
        # per-session offsets keep averages apart: top-k has no ties to break
        "cpu": {"percent": round(5 + (x % 900) / 10 + session * 0.13, 2)},
        "mem": {"rss": 50_000_000 + session * 1_000_000 + (i % 600) * 4096},
        "io": {"read_bytes": i * 4096 + x * 17, "write_bytes": i * 1024 * (1 + session % 3)},
        "threads": 4 + x % 5,
    }


def _host(session: int) -> str:
    return f"host-{session % HOSTS}"


def _chunks(samples: int, sessions: int, size: int) -> Iterator[list[tuple[int, int]]]:
    """(session, i) in arrival order: every session's i-th sample, then i + 1."""
    chunk: list[tuple[int, int]] = []
    per = samples // sessions
    for i in range(per):
        for s in range(sessions):
            chunk.append((s, i))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _rows(chunk: list[tuple[int, int]]) -> list[Any]:
    return [
        encode_row(f"s-{s}", i, "sample", "process", float(T0 + i), _host(s), ("bench",),
                   _sample(s, i))
        for s, i in chunk
    ]  # fmt: skip


def _lines(chunk: list[tuple[int, int]]) -> bytes:
    out = []
    for s, i in chunk:
        d = _sample(s, i)
        out.append(
            f"process,session=s-{s},host={_host(s)} cpu_percent={d['cpu']['percent']},"
            f"mem_rss={d['mem']['rss']}i,io_read_bytes={d['io']['read_bytes']}i,"
            f"io_write_bytes={d['io']['write_bytes']}i,threads={d['threads']}i {T0 + i}"
        )
    return "\n".join(out).encode()


# -- deltawire ----------------------------------------------------------------------------


def _load_deltawire(path: pathlib.Path, samples: int, sessions: int) -> dict[str, float]:
    """Load the store; returns write rate (tiers on) and the fold time after."""
    store = SqliteStore(f"sqlite:///{path}?synchronous=NORMAL")
    store.open()
    written = 0
    seconds = 0.0
    started = time.monotonic()
    try:
        for chunk in _chunks(samples, sessions, BATCH):
            rows = _rows(chunk)
            t = time.perf_counter()
            store.write_rows(rows)
            seconds += time.perf_counter() - t
            written += len(rows)
            if time.monotonic() - started > 10:
                started = time.monotonic()
                print(f"  deltawire: {written:,} samples stored", file=sys.stderr, flush=True)
        t = time.perf_counter()
        folded = 0
        while n := store.fold_rollups(FOLD_STEP):
            folded += n
            print(f"  deltawire: {folded:,} samples folded into the tiers", file=sys.stderr,
                  flush=True)  # fmt: skip
        fold_s = time.perf_counter() - t
    finally:
        store.close()
    return {"rate": written / seconds, "fold_s": fold_s, "samples": written}


def _ingest_side_by_side(tmp: pathlib.Path, samples: int, sessions: int, runs: int = 3) -> Table:
    """Store writes/s, and what the tiers cost: the writer no longer folds (a
    folder process does, beside it), so its write path is the one of the
    build before the tiers; the folding is timed here after the writes."""
    rows = [_rows(chunk) for chunk in _chunks(samples, sessions, BATCH)]
    writes: list[float] = []
    folds: list[float] = []
    for run in range(runs):
        store = SqliteStore(f"sqlite:///{tmp / f'ingest-{run}.db'}")
        store.open()
        t = time.perf_counter()
        for batch in rows:
            store.write_rows(batch)
        writes.append(samples / (time.perf_counter() - t))
        t = time.process_time()
        store.fold_rollups(samples)
        folds.append((time.process_time() - t) / samples * 1e6)
        store.close()
    t = Table(f"store ingest — {samples:,} samples, {sessions} sessions, batches of {BATCH}, "
              f"median of {runs} runs", ["deltawire"])  # fmt: skip
    t.row("samples stored / s (the writer: no folding on its path)", statistics.median(writes))
    t.row("folding, CPU us / sample (the folder process)", statistics.median(folds))
    return t


@contextlib.contextmanager
def _api(store_path: pathlib.Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URI", "STORE_URI")}
    proc = subprocess.Popen([sys.executable, "-m", "deltawire.collector.api", "--http",
                             f"127.0.0.1:{port}", "--store", f"sqlite:///{store_path}",
                             "--cache-size", "0"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port("127.0.0.1", port, 60, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


# -- InfluxDB ----------------------------------------------------------------------------------


def _influxd() -> str:
    found = shutil.which("influxd")
    if found:
        return found
    print("  installing influxdb (Debian package) with apt-get", file=sys.stderr, flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                    "influxdb"], check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    found = shutil.which("influxd")
    if not found:
        raise SystemExit("influxd not found after installing the influxdb package")
    return found


@contextlib.contextmanager
def _influx(tmp: pathlib.Path) -> Iterator[str]:
    port, rpc = free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{tmp / "meta"}"\n'
        f'[data]\n  dir = "{tmp / "data"}"\n  wal-dir = "{tmp / "wal"}"\n'
        '  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        '[monitor]\n  store-enabled = false\n'
        '[continuous_queries]\n  enabled = false\n'
    )  # fmt: skip
    proc = subprocess.Popen([_influxd(), "-config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port("127.0.0.1", port, 60, proc)
        base = f"http://127.0.0.1:{port}"
        httpx.post(f"{base}/query", params={"q": "CREATE DATABASE bench"}).raise_for_status()
        yield base
    finally:
        stop_process(proc)


def _load_influx(base: str, samples: int, sessions: int) -> float:
    written = 0
    t = time.perf_counter()
    shown = time.monotonic()
    with httpx.Client(timeout=300) as client:
        for chunk in _chunks(samples, sessions, INFLUX_BATCH):
            r = client.post(f"{base}/write", params={"db": "bench", "precision": "s"},
                            content=_lines(chunk))  # fmt: skip
            r.raise_for_status()
            written += len(chunk)
            if time.monotonic() - shown > 10:
                shown = time.monotonic()
                print(f"  InfluxDB: {written:,} samples stored", file=sys.stderr, flush=True)
    return written / (time.perf_counter() - t)


def _influx_series(payload: dict[str, Any]) -> list[dict[str, Any]]:
    result = payload["results"][0]
    if "error" in result:
        raise RuntimeError(f"InfluxDB: {result['error']}")
    return result.get("series", [])


# -- the questions ------------------------------------------------------------------------------


#: A question's answer in a comparable form: {group or bucket: value}.
Answer = dict[Any, float]


@dataclass(frozen=True)
class Question:
    label: str
    aggregate: str  # the query string of GET /aggregate
    influxql: str
    influx_answer: Callable[[dict[str, Any]], Answer]
    percentile: bool = False


def _dw_answer(payload: dict[str, Any]) -> Answer:
    return {
        row.get("group", row.get("bucket")) if ("group" in row or "bucket" in row) else None:
            row["value"]
        for row in payload["rows"]
        if row["value"] is not None
    }  # fmt: skip


def _scalar(payload: dict[str, Any]) -> Answer:
    series = _influx_series(payload)
    return {None: series[0]["values"][0][1]} if series else {}


def _by_tag(tag: str, scale: float = 1.0) -> Callable[[dict[str, Any]], Answer]:
    def answer(payload: dict[str, Any]) -> Answer:
        return {s["tags"][tag]: s["values"][0][1] / scale for s in _influx_series(payload)}

    return answer


def _top(payload: dict[str, Any]) -> Answer:
    series = _influx_series(payload)
    return {row[2]: row[1] for row in series[0]["values"]} if series else {}


def _by_time(payload: dict[str, Any]) -> Answer:
    from datetime import datetime

    out: Answer = {}
    for s in _influx_series(payload):
        for ts, value in s["values"]:
            if value is not None:
                stamp = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
                out[time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stamp))] = value
    return out


def questions(samples: int, sessions: int) -> list[Question]:
    span = samples // sessions  # seconds of data per session
    # A window with ragged edges (raw rows at both ends), ~80% of the data.
    lo = T0 + span // 7 + 13
    hi = T0 + span - span // 9 - 41
    last_hour = (T0 + span - 3600, T0 + span)
    within = f"time >= {lo}s AND time < {hi}s"
    # Minute-aligned windows (as /query rounds them): the last 30 minutes, and
    # ~80% of the data cut at minutes that are not whole hours.
    end_m = (T0 + span) // 60 * 60
    last_30m = (end_m - 1800, end_m)
    lo_m, hi_m = lo // 60 * 60 + 60, hi // 60 * 60
    return [
        Question("average cpu.percent", "fn=avg&field=cpu.percent",
                 "SELECT mean(cpu_percent) FROM process", _scalar),
        Question("max mem.rss by session", "fn=max&field=mem.rss&by=session",
                 "SELECT max(mem_rss) FROM process GROUP BY session", _by_tag("session")),
        Question("count by host", "fn=count&by=host",
                 "SELECT count(cpu_percent) FROM process GROUP BY host", _by_tag("host")),
        Question("top 5 sessions by avg cpu",
                 "fn=avg&field=cpu.percent&by=session&order=-value&limit=5",
                 "SELECT top(m, session, 5) FROM (SELECT mean(cpu_percent) AS m FROM process"
                 " GROUP BY session)", _top),
        Question("sum io.read_bytes by host", "fn=sum&field=io.read_bytes&by=host",
                 "SELECT sum(io_read_bytes) FROM process GROUP BY host", _by_tag("host")),
        Question("p95 cpu.percent", "fn=p95&field=cpu.percent",
                 "SELECT percentile(cpu_percent, 95) FROM process", _scalar, percentile=True),
        Question("avg cpu.percent of host-1, last hour",
                 f"fn=avg&field=cpu.percent&host=host-1&from={last_hour[0]}&to={last_hour[1]}",
                 f"SELECT mean(cpu_percent) FROM process WHERE host = 'host-1' AND"
                 f" time >= {last_hour[0]}s AND time < {last_hour[1]}s", _scalar),
        Question("avg cpu.percent, 1 h buckets, ragged window",
                 f"fn=avg&field=cpu.percent&bucket=1h&from={lo}&to={hi}",
                 f"SELECT mean(cpu_percent) FROM process WHERE {within} GROUP BY time(1h)",
                 _by_time),
        Question("rate of io.read_bytes by host, ragged window",
                 f"fn=rate&field=io.read_bytes&by=host&from={lo}&to={hi}",
                 "SELECT sum(d) FROM (SELECT non_negative_difference(io_read_bytes) AS d"
                 f" FROM process WHERE {within} GROUP BY session, host) GROUP BY host",
                 _by_tag("host", scale=hi - lo)),
        Question("avg cpu.percent of a host nobody has", "fn=avg&field=cpu.percent&host=nobody",
                 "SELECT mean(cpu_percent) FROM process WHERE host = 'nobody'", _scalar),
        # Percentiles over minute edges ("p95 cpu in the last 30 minutes"):
        # the minute tier's sketches, no raw rows.
        Question("p95 cpu.percent, last 30 minutes",
                 f"fn=p95&field=cpu.percent&from={last_30m[0]}&to={last_30m[1]}",
                 f"SELECT percentile(cpu_percent, 95) FROM process WHERE"
                 f" time >= {last_30m[0]}s AND time < {last_30m[1]}s", _scalar, percentile=True),
        Question("p99 cpu.percent, 10 min buckets, minute-aligned window",
                 f"fn=p99&field=cpu.percent&bucket=10m&from={lo_m}&to={hi_m}",
                 f"SELECT percentile(cpu_percent, 99) FROM process WHERE time >= {lo_m}s AND"
                 f" time < {hi_m}s GROUP BY time(10m)", _by_time, percentile=True),
        # A threshold on noisy data: every bucket's range straddles 80.
        Question("sessions with cpu.percent > 80 (count by session)",
                 "fn=count&field=cpu.percent&by=session&where=cpu.percent%20%3E%2080",
                 "SELECT count(cpu_percent) FROM process WHERE cpu_percent > 80"
                 " GROUP BY session", _by_tag("session")),
    ]  # fmt: skip


def _agree(q: Question, ours: Answer, theirs: Answer) -> str:
    if ours.keys() != theirs.keys():
        return f"DIFFERENT groups: {sorted(map(str, ours))[:5]} vs {sorted(map(str, theirs))[:5]}"
    for key, value in theirs.items():
        tol = PCT_TOLERANCE if q.percentile else 1e-9
        if not math.isclose(ours[key], value, rel_tol=tol, abs_tol=1e-9):
            return f"DIFFERENT at {key}: {ours[key]} vs {value}"
    return "same" if not q.percentile else "within 2%"


def _timed(call: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    result = call()  # a warm-up (connections, page cache), not timed
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times), result


def _pct(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, math.ceil(q * len(times)) - 1)]


def run(samples: int, sessions: int, reps: int, ingest_samples: int) -> list[Table]:
    tables = []
    with tempfile.TemporaryDirectory(prefix="deltawire-query-bench-") as tmpname:
        tmp = pathlib.Path(tmpname)
        if ingest_samples:
            print(f"  ingest side by side, {ingest_samples:,} samples", file=sys.stderr)
            tables.append(_ingest_side_by_side(tmp, ingest_samples, sessions))
            print(tables[-1].render(), flush=True)
        db = tmp / "query.db"
        print(f"  loading {samples:,} samples into deltawire", file=sys.stderr, flush=True)
        load = _load_deltawire(db, samples, sessions)
        with _influx(tmp / "influx") as influx:
            print(f"  loading {samples:,} samples into InfluxDB", file=sys.stderr, flush=True)
            influx_rate = _load_influx(influx, samples, sessions)
            t = Table(f"load — {samples:,} samples ({sessions} sessions x {samples // sessions:,}"
                      ", 5 numeric fields)", ["deltawire (tiers on)", "InfluxDB 1.6"])  # fmt: skip
            t.row("samples stored / s", load["rate"], influx_rate)
            t.row("deltawire: folding after the load, s", load["fold_s"], None, ratio=False)
            tables.append(t)
            print(t.render(), flush=True)
            with _api(db) as api, httpx.Client(timeout=120) as client:
                t = Table(f"queries — {samples:,} samples, HTTP, uncached, {reps} runs each "
                          "(ms; ratio: InfluxDB time / deltawire time)",
                          ["deltawire p50", "InfluxDB p50", "deltawire p95", "InfluxDB p95",
                           "deltawire p99", "InfluxDB p99"])  # fmt: skip
                ratios = []
                notes = []
                for q in questions(samples, sessions):

                    def ours(q: Question = q) -> dict[str, Any]:
                        r = client.get(f"{api}/aggregate?{q.aggregate}")
                        r.raise_for_status()
                        return dict(r.json())

                    def theirs(q: Question = q) -> dict[str, Any]:
                        r = client.get(f"{influx}/query", params={"db": "bench", "q": q.influxql})
                        r.raise_for_status()
                        return dict(r.json())

                    try:
                        dw_times, dw_payload = _timed(ours, reps)
                    except httpx.HTTPStatusError as e:  # a 503 past the deadline: say so
                        t.rows.append((q.label, [None] * 6, "-",
                                       f"deltawire answered {e.response.status_code}"
                                       f" {e.response.json().get('error')}"))  # fmt: skip
                        notes.append("failed")
                        continue
                    ix_times, ix_payload = _timed(theirs, reps)
                    verdict = _agree(q, _dw_answer(dw_payload), q.influx_answer(ix_payload))
                    dw50, ix50 = statistics.median(dw_times), statistics.median(ix_times)
                    ratios.append(dw50 / ix50)
                    t.rows.append((q.label, [dw50, ix50, _pct(dw_times, 0.95), _pct(ix_times, 0.95),
                                             _pct(dw_times, 0.99), _pct(ix_times, 0.99)],
                                   f"{ix50 / dw50:.1f}x", verdict))  # fmt: skip
                    notes.append(verdict)
                geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
                t.rows.append(("geomean time ratio deltawire / InfluxDB", [None] * 6,
                               f"{geo:.3f}", "goal <= 0.5"))  # fmt: skip
                tables.append(t)
                print(t.render(), flush=True)
    return tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument(
        "--samples",
        type=int,
        default=1_000_000,
        help="samples loaded into both (default 1000000; try 10000000)",
    )
    ap.add_argument("--sessions", type=int, default=100, help="sessions (default 100)")
    ap.add_argument("--reps", type=int, default=30, help="timed runs per question (default 30)")
    ap.add_argument(
        "--ingest-samples",
        type=int,
        default=200_000,
        help="samples of the ingest side-by-side (default 200000; 0: skip)",
    )
    args = ap.parse_args(argv)
    run(args.samples, args.sessions, args.reps, args.ingest_samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
