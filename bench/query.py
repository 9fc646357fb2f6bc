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
import json
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


#: Builds the rows (or InfluxDB lines) of a chunk of (session, i): the data set.
RowsOf = Callable[[list[tuple[int, int]]], list[Any]]
LinesOf = Callable[[list[tuple[int, int]]], bytes]


def _load_deltawire(path: pathlib.Path, samples: int, sessions: int,
                    rows_of: RowsOf = _rows) -> dict[str, float]:  # fmt: skip
    """Load the store; returns write rate (tiers on) and the fold time after."""
    store = SqliteStore(f"sqlite:///{path}?synchronous=NORMAL")
    store.open()
    written = 0
    seconds = 0.0
    started = time.monotonic()
    try:
        for chunk in _chunks(samples, sessions, BATCH):
            rows = rows_of(chunk)
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


def _fold_rest(path: pathlib.Path) -> None:
    """A store loaded by an earlier build: migrated as it opens, and what its
    folder would do next (an upgrade's hours to build, rollup_vals.py) done
    before anything is timed."""
    store = SqliteStore(f"sqlite:///{path}?synchronous=NORMAL")
    store.open()
    try:
        t = time.perf_counter()
        store.fold_rollups(FOLD_STEP)
        print(f"  deltawire: folder caught up in {time.perf_counter() - t:.1f} s", file=sys.stderr,
              flush=True)  # fmt: skip
    finally:
        store.close()


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
        for used in tmp.glob(f"ingest-{run}.db*"):  # --dir keeps only the query data
            used.unlink()
    table = Table(f"store ingest — {samples:,} samples, {sessions} sessions, batches of"
                  f" {BATCH}, median of {runs} runs", ["deltawire"])  # fmt: skip
    table.row("samples stored / s (the writer: no folding on its path)", statistics.median(writes))
    table.row("folding, CPU us / sample (the folder process)", statistics.median(folds))
    return table


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
def _influx(tmp: pathlib.Path, data_settings: str = "") -> Iterator[str]:
    """influxd on free ports; ``data_settings``: more lines of its [data] section."""
    port, rpc = free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{tmp / "meta"}"\n'
        f'[data]\n  dir = "{tmp / "data"}"\n  wal-dir = "{tmp / "wal"}"\n'
        f'  query-log-enabled = false\n{data_settings}'
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


def _load_influx(base: str, samples: int, sessions: int, lines_of: LinesOf = _lines,
                 precision: str = "s", db: str = "bench") -> float:  # fmt: skip
    written = 0
    t = time.perf_counter()
    shown = time.monotonic()
    with httpx.Client(timeout=300) as client:
        for chunk in _chunks(samples, sessions, INFLUX_BATCH):
            r = client.post(f"{base}/write", params={"db": db, "precision": precision},
                            content=lines_of(chunk))  # fmt: skip
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
    prompt: str = ""  # the same question for GET /query, in words


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

    def iso(t: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    between = f"between {iso(lo)} and {iso(hi)}"
    # Minute-aligned windows (as /query rounds them): the last 30 minutes, and
    # ~80% of the data cut at minutes that are not whole hours.
    end_m = (T0 + span) // 60 * 60
    last_30m = (end_m - 1800, end_m)
    lo_m, hi_m = lo // 60 * 60 + 60, hi // 60 * 60
    return [
        Question("average cpu.percent", "fn=avg&field=cpu.percent",
                 "SELECT mean(cpu_percent) FROM process", _scalar,
                 prompt="average cpu.percent"),
        Question("max mem.rss by session", "fn=max&field=mem.rss&by=session",
                 "SELECT max(mem_rss) FROM process GROUP BY session", _by_tag("session"),
                 prompt="max mem.rss by session"),
        Question("count by host", "fn=count&by=host",
                 "SELECT count(cpu_percent) FROM process GROUP BY host", _by_tag("host"),
                 prompt="count by host"),
        Question("top 5 sessions by avg cpu",
                 "fn=avg&field=cpu.percent&by=session&order=-value&limit=5",
                 "SELECT top(m, session, 5) FROM (SELECT mean(cpu_percent) AS m FROM process"
                 " GROUP BY session)", _top, prompt="top 5 sessions by avg cpu.percent"),
        Question("sum io.read_bytes by host", "fn=sum&field=io.read_bytes&by=host",
                 "SELECT sum(io_read_bytes) FROM process GROUP BY host", _by_tag("host"),
                 prompt="sum io.read_bytes by host"),
        Question("p95 cpu.percent", "fn=p95&field=cpu.percent",
                 "SELECT percentile(cpu_percent, 95) FROM process", _scalar, percentile=True,
                 prompt="p95 cpu.percent"),
        Question("avg cpu.percent of host-1, last hour",
                 f"fn=avg&field=cpu.percent&host=host-1&from={last_hour[0]}&to={last_hour[1]}",
                 f"SELECT mean(cpu_percent) FROM process WHERE host = 'host-1' AND"
                 f" time >= {last_hour[0]}s AND time < {last_hour[1]}s", _scalar,
                 prompt=f"avg cpu.percent on host-1 between {iso(last_hour[0])} and"
                        f" {iso(last_hour[1])}"),
        Question("avg cpu.percent, 1 h buckets, ragged window",
                 f"fn=avg&field=cpu.percent&bucket=1h&from={lo}&to={hi}",
                 f"SELECT mean(cpu_percent) FROM process WHERE {within} GROUP BY time(1h)",
                 _by_time, prompt=f"avg cpu.percent per hour {between}"),
        Question("rate of io.read_bytes by host, ragged window",
                 f"fn=rate&field=io.read_bytes&by=host&from={lo}&to={hi}",
                 "SELECT sum(d) FROM (SELECT non_negative_difference(io_read_bytes) AS d"
                 f" FROM process WHERE {within} GROUP BY session, host) GROUP BY host",
                 _by_tag("host", scale=hi - lo), prompt=f"rate of io.read_bytes by host {between}"),
        Question("avg cpu.percent of a host nobody has", "fn=avg&field=cpu.percent&host=nobody",
                 "SELECT mean(cpu_percent) FROM process WHERE host = 'nobody'", _scalar),
        # Percentiles over minute edges ("p95 cpu in the last 30 minutes"):
        # the minute tier's sketches, no raw rows.
        Question("p95 cpu.percent, last 30 minutes",
                 f"fn=p95&field=cpu.percent&from={last_30m[0]}&to={last_30m[1]}",
                 f"SELECT percentile(cpu_percent, 95) FROM process WHERE"
                 f" time >= {last_30m[0]}s AND time < {last_30m[1]}s", _scalar, percentile=True,
                 prompt=f"p95 cpu.percent between {iso(last_30m[0])} and {iso(last_30m[1])}"),
        Question("p99 cpu.percent, 10 min buckets, minute-aligned window",
                 f"fn=p99&field=cpu.percent&bucket=10m&from={lo_m}&to={hi_m}",
                 f"SELECT percentile(cpu_percent, 99) FROM process WHERE time >= {lo_m}s AND"
                 f" time < {hi_m}s GROUP BY time(10m)", _by_time, percentile=True,
                 prompt=f"p99 cpu.percent every 10 minutes between {iso(lo_m)} and {iso(hi_m)}"),
        # A threshold on noisy data: every bucket's range straddles 80.
        Question("sessions with cpu.percent > 80 (count by session)",
                 "fn=count&field=cpu.percent&by=session&where=cpu.percent%20%3E%2080",
                 "SELECT count(cpu_percent) FROM process WHERE cpu_percent > 80"
                 " GROUP BY session", _by_tag("session"),
                 prompt="sessions with cpu.percent over 80"),
    ]  # fmt: skip


def _agree(q: Question, ours: Answer, theirs: Answer) -> str:
    if ours.keys() != theirs.keys():
        return f"DIFFERENT groups: {sorted(map(str, ours))[:5]} vs {sorted(map(str, theirs))[:5]}"
    for key, value in theirs.items():
        tol = PCT_TOLERANCE if q.percentile else 1e-9
        if not math.isclose(ours[key], value, rel_tol=tol, abs_tol=1e-9):
            return f"DIFFERENT at {key}: {ours[key]} vs {value}"
    return "same" if not q.percentile else "within 2%"


def _pct(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, math.ceil(q * len(times)) - 1)]


@contextlib.contextmanager
def _workdir(keep: pathlib.Path | None) -> Iterator[pathlib.Path]:
    """A temporary directory, or ``keep`` (created; never removed) when given."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="deltawire-query-bench-") as name:
            yield pathlib.Path(name)
    else:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep


def _load_both(tmp: pathlib.Path, influx: str, samples: int, sessions: int) -> Table:
    """Load both stores, or reuse what a previous run with ``--dir`` loaded (the
    marker file is written only once both loads finished)."""
    marker = tmp / "loaded.json"
    shape = {"samples": samples, "sessions": sessions}
    if marker.exists():
        done = json.loads(marker.read_text())
        if {k: done[k] for k in shape} == shape:
            print(f"  reusing the {samples:,} samples loaded in {tmp}", file=sys.stderr, flush=True)
            _fold_rest(tmp / "query.db")
            return _load_table(done)
        raise SystemExit(f"{tmp} holds {done['samples']:,} samples of {done['sessions']}"
                         " sessions: use another --dir")  # fmt: skip
    for stale in tmp.glob("query.db*"):  # an interrupted load: start it again
        stale.unlink()
    print(f"  loading {samples:,} samples into deltawire", file=sys.stderr, flush=True)
    done = {**shape, **_load_deltawire(tmp / "query.db", samples, sessions)}
    print(f"  loading {samples:,} samples into InfluxDB", file=sys.stderr, flush=True)
    done["influx_rate"] = _load_influx(influx, samples, sessions)
    marker.write_text(json.dumps(done))
    return _load_table(done)


def _load_table(done: dict[str, Any]) -> Table:
    samples, sessions = done["samples"], done["sessions"]
    t = Table(f"load — {samples:,} samples ({sessions} sessions x {samples // sessions:,}"
              ", 5 numeric fields)", ["deltawire (tiers on)", "InfluxDB 1.6"])  # fmt: skip
    t.row("samples stored / s", done["rate"], done["influx_rate"])
    t.row("deltawire: folding after the load, s", done["fold_s"], None, ratio=False)
    return t


def _get(client: httpx.Client, url: str, **params: str) -> dict[str, Any]:
    r = client.get(url, params=params) if params else client.get(url)  # {} drops url's query
    r.raise_for_status()
    return dict(r.json())


def _ask_all(client: httpx.Client, api: str, influx: str, qs: list[Question], reps: int,
             influx_reps: int) -> list[Table]:  # fmt: skip
    """Each question asked of /aggregate, /query and InfluxDB in turn, round
    after round (interleaved: the machine's load drifts the same for all
    three); a warm-up round first, not timed. Answers are compared."""
    side = Table(f"/aggregate beside InfluxDB — HTTP, uncached, {reps} runs each"
                 f" (InfluxDB: {influx_reps}) (ms; ratio: InfluxDB time / deltawire time)",
                 ["deltawire p50", "InfluxDB p50", "deltawire p95", "InfluxDB p95",
                  "deltawire p99", "InfluxDB p99"])  # fmt: skip
    # baseline past the last column: no ratio column
    goal = Table(f"/query and /aggregate against the goal — {reps} runs each (ms)",
                 ["/aggregate p50", "/aggregate p95", "/aggregate p99", "/query p50",
                  "/query p95", "/query p99"], baseline=99)  # fmt: skip
    ratios = []
    for q in qs:
        print(f"  asking: {q.label}", file=sys.stderr, flush=True)
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "aggregate": lambda q=q: _get(client, f"{api}/aggregate?{q.aggregate}"),  # type: ignore[misc]
        }
        if influx_reps:
            calls["influx"] = lambda q=q: _get(client, f"{influx}/query", db="bench", q=q.influxql)  # type: ignore[misc]
        if q.prompt:
            calls["query"] = lambda q=q: _get(client, f"{api}/query", prompt=q.prompt)  # type: ignore[misc]
        payload: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        for name, call in list(calls.items()):  # the warm-up, not timed
            try:
                payload[name] = call()
            except httpx.HTTPStatusError as e:  # a 503 past the deadline: say so, go on
                failed[name] = f"{e.request.url.path} answered {e.response.status_code}"
            except httpx.TimeoutException:
                failed[name] = f"{name}: no answer in {client.timeout.read:.0f} s"
            if name in failed:
                del calls[name]
        if "aggregate" in failed:
            side.rows.append((q.label, [None] * 6, "-", failed["aggregate"]))
            goal.rows.append((q.label, [None] * 6, failed["aggregate"], "MISSED"))
            continue
        times: dict[str, list[float]] = {name: [] for name in calls}
        for rep in range(reps):
            for name, call in list(calls.items()):
                if name == "influx" and rep >= influx_reps:
                    continue
                t = time.perf_counter()
                try:
                    payload[name] = call()
                except httpx.TimeoutException:  # counted as the timeout; no more runs of it
                    failed[name] = f"{name}: a run took over {client.timeout.read:.0f} s"
                    del calls[name]
                times[name].append((time.perf_counter() - t) * 1000)
        ours = _dw_answer(payload["aggregate"])
        dw, ix = sorted(times["aggregate"]), sorted(times.get("influx", []))
        if ix:
            verdict = _agree(q, ours, q.influx_answer(payload["influx"]))
            ratios.append(statistics.median(dw) / statistics.median(ix))
            ratio = f"{statistics.median(ix) / statistics.median(dw):.1f}x"
        else:
            verdict, ratio = failed.get("influx", "InfluxDB not asked"), "-"
        if "influx" in failed or "aggregate" in failed:
            verdict = "; ".join(failed.get(k, "") for k in ("aggregate", "influx")).strip("; ")
        side.rows.append((q.label, [statistics.median(dw), statistics.median(ix) if ix else None,
                                    _pct(dw, 0.95), _pct(ix, 0.95) if ix else None,
                                    _pct(dw, 0.99), _pct(ix, 0.99) if ix else None],
                          ratio, verdict))  # fmt: skip
        nl = sorted(times.get("query", []))
        nl_note = failed.get("query", "/query not asked")
        if nl:
            same = _dw_answer(payload["query"]) == ours
            nl_note = "same rows" if same else "DIFFERENT rows from /aggregate"
        met = "query" not in failed and all(
            _pct(x, 0.95) < 100 and _pct(x, 0.99) < 200 for x in (dw, nl) if x
        )
        goal.rows.append((q.label, [statistics.median(dw), _pct(dw, 0.95), _pct(dw, 0.99),
                                    *(([statistics.median(nl), _pct(nl, 0.95), _pct(nl, 0.99)]) if nl
                                      else [None] * 3)],
                          nl_note, "met" if met else "MISSED"))  # fmt: skip
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        side.rows.append((f"geomean time ratio deltawire / InfluxDB ({len(ratios)} questions)",
                          [None] * 6, f"{geo:.3f}", "goal <= 0.5"))  # fmt: skip
    goal.rows.append(("goal: p95 < 100 ms and p99 < 200 ms", [None] * 6, "", ""))
    return [side, goal]


def run(samples: int, sessions: int, reps: int, ingest_samples: int,
        keep: pathlib.Path | None = None, influx_reps: int | None = None,
        influx_timeout: float = 120, only: str = "") -> list[Table]:  # fmt: skip
    tables = []
    with _workdir(keep) as tmp:
        if ingest_samples:
            print(f"  ingest side by side, {ingest_samples:,} samples", file=sys.stderr)
            tables.append(_ingest_side_by_side(tmp, ingest_samples, sessions))
            print(tables[-1].render(), flush=True)
        db = tmp / "query.db"
        with _influx(tmp / "influx") as influx:
            t = _load_both(tmp, influx, samples, sessions)
            tables.append(t)
            print(t.render(), flush=True)
            with _api(db) as api, httpx.Client(timeout=influx_timeout) as client:
                qs = [q for q in questions(samples, sessions) if _picked(q.label, only)]
                tables += _ask_all(client, api, influx, qs, reps,
                                   reps if influx_reps is None else influx_reps)  # fmt: skip
                for t in tables[-2:]:
                    print(t.render(), flush=True)
    return tables


def _picked(label: str, only: str) -> bool:
    """Whether ``--only`` (comma-separated label substrings; empty: all) picks ``label``."""
    words = [w.strip() for w in only.split(",") if w.strip()]
    return not words or any(w in label for w in words)


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
    ap.add_argument(
        "--dir",
        type=pathlib.Path,
        default=None,
        help="keep both stores' data here and reuse it on the next run with the same"
        " --samples/--sessions (default: a temporary directory, removed after)",
    )
    ap.add_argument(
        "--influx-reps",
        type=int,
        default=None,
        help="timed runs per question for InfluxDB (default: --reps; 0: do not ask InfluxDB)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="seconds an answer may take (default 120); past it the question is reported"
        " as unanswered and its runs are skipped",
    )
    ap.add_argument(
        "--only",
        default="",
        help="ask only the questions whose label contains one of these comma-separated words"
        " (default: all; e.g. 'p95 cpu.percent,rate,1 h buckets')",
    )
    args = ap.parse_args(argv)
    run(
        args.samples,
        args.sessions,
        args.reps,
        args.ingest_samples,
        args.dir,
        args.influx_reps,
        args.timeout,
        args.only,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
