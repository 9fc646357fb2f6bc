"""Ingest bench: a real collector process on a fresh SQLite store, loaded by a
separate load-generator process. Delta frames vs two baselines in the same run:
the same samples as full JSON frames, and one HTTP POST per sample (the seed's
REST design). Each run's store files are deleted as it ends, so the next run
does not pay for writing back the last one's (~240 MB at 100 sessions)."""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import orjson
import psutil

from deltawire.testing.servers import free_port, stop_process, wait_port

from .codec import load_recording
from .report import Table, show

__all__ = ["main", "run"]

REPO = pathlib.Path(__file__).resolve().parent.parent

#: Issue 3's ingest goal: samples/s stored with 100 sessions, p99 ack < 250 ms.
GOAL_RATE = 100_000
#: Paced runs of the default (process) writer; the table shows the median p99.
PACED_RUNS = 3
#: The paced rate of the tiers on/off table (issue 12's regression was
#: measured at ~30k/s), or 70% of what the collector takes if that is less.
PACED_TIERS_RATE = 30_000
#: Set, every paced run offers this rate (samples/s) instead of one derived
#: from the build's own saturated run: two builds compared side by side
#: (``bench.compare --paced-rate``) must be offered the same load, or their
#: latencies are not comparable (a faster build is otherwise offered more).
PACED_RATE_ENV = "BENCH_PACED_RATE"


def _offered(derived: float) -> float:
    """The paced rate: ``derived`` (from this build's saturated run) unless
    ``BENCH_PACED_RATE`` pins one."""
    pinned = float(os.environ.get(PACED_RATE_ENV) or 0)
    return pinned if pinned > 0 else derived


class _PeakRss:
    """Samples the RSS of a process and its children (the store writer, the
    HTTP API) every 20 ms in a thread; ``peak`` in bytes.

    Children are looked up once a second only: finding them reads all of
    /proc, which at 50 Hz would steal measurable CPU from what is measured."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        procs: list[psutil.Process] = [self.proc]
        looked = 0.0
        while not self._stop.wait(0.02):
            now = time.monotonic()
            if now - looked >= 1.0:
                looked = now
                with contextlib.suppress(psutil.Error):
                    procs = [self.proc, *self.proc.children(recursive=True)]
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@contextlib.contextmanager
def _collector(
    tmp: pathlib.Path,
    http: bool = False,
    writer: str = "process",
    fold: bool = True,
    extra: tuple[str, ...] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], int, int | None, pathlib.Path]]:
    port = free_port()
    http_port = free_port() if http else None
    db = tmp / f"bench-{port}.db"
    store = f"sqlite:///{db}" + ("" if fold else "?fold=off")
    argv = [sys.executable, "-m", "deltawire.collector", "serve", "--listen", f"127.0.0.1:{port}",
            "--store", store, "--log-level", "error", "--writer", writer]  # fmt: skip
    argv += ["--http", f"127.0.0.1:{http_port}"] if http_port else ["--no-http"]
    argv += extra
    env = {**os.environ, "DELTAWIRE_CONFIG_DIR": str(tmp)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 30, proc)
        if http_port:
            wait_port("127.0.0.1", http_port, 30, proc)
        yield proc, port, http_port, db
    finally:
        stop_process(proc, 30)
        # A run writes ~240 MB (100 x 2,000 samples: the db and its WAL):
        # deleted now, its dirty pages are dropped rather than written back
        # during the next (timed) run.
        for path in tmp.glob(f"{db.name}*"):  # -wal, -shm, lock files
            path.unlink(missing_ok=True)


def _loadgen(
    port: int, sessions: int, per_session: int, full: bool, rate: float = 0.0, zstd: bool = False,
    counter: bool = True,
) -> dict[str, Any]:  # fmt: skip
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--sessions", str(sessions),
            "--per-session", str(per_session), "--rate", str(rate)] + (["--full"] if full else [])  # fmt: skip
    argv += ["--zstd"] if zstd else []
    argv += [] if counter else ["--no-counter"]
    out = subprocess.run(argv, cwd=REPO, check=True, capture_output=True, timeout=600)
    return orjson.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def _scenario(tmp: pathlib.Path, sessions: int, per_session: int, full: bool,
              stall: float = 0.0, rate: float = 0.0, writer: str = "process",
              zstd: bool = False, fold: bool = True, counter: bool = True,
              catch_up: bool = False) -> dict[str, Any]:  # fmt: skip
    """One collector, one load. ``catch_up``: then waits for its folder to
    fold everything (``_caught_up``)."""
    with _collector(tmp, writer=writer, fold=fold) as (proc, port, _http, db):
        rss = _PeakRss(proc.pid)
        blocker = None
        if stall:
            blocker = sqlite3.connect(db, timeout=5, isolation_level=None, check_same_thread=False)
            blocker.execute("BEGIN IMMEDIATE")
            threading.Timer(stall, lambda: blocker.execute("ROLLBACK")).start()
        cpu0 = _cpu_seconds(proc.pid)
        result = _loadgen(port, sessions, per_session, full, rate, zstd, counter)
        result["collector_cpu_s"] = _cpu_seconds(proc.pid) - cpu0
        result["peak_rss"] = rss.stop()
        if blocker is not None:
            blocker.close()
        if catch_up:
            result |= _caught_up(proc.pid, db)
        return result


#: How long a run waits for its folder to fold what it stored.
FOLD_DEADLINE_S = 180.0


def _caught_up(pid: int, db: pathlib.Path) -> dict[str, float]:
    """After the load: the documents the folder had not folded yet, the
    seconds until it has folded every one, and its CPU seconds by then (it
    starts with the collector; before the load it has nothing to do)."""
    from deltawire.collector.stores.sqlite_rollup import watermark

    started = time.monotonic()
    behind: int | None = None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        while True:
            (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM docs").fetchone()
            mark = watermark(conn)
            behind = top - mark if behind is None else behind
            if mark >= top:
                break
            if time.monotonic() - started > FOLD_DEADLINE_S:
                raise RuntimeError(f"the folder had not caught up after {FOLD_DEADLINE_S:g} s")
            time.sleep(0.05)  # polling the watermark, with the deadline above
    folder_cpu = 0.0
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "sqlite_folder" in " ".join(p.cmdline()):
                    t = p.cpu_times()
                    folder_cpu += t.user + t.system
    return {"fold_behind": behind, "fold_catch_up_s": time.monotonic() - started,
            "folder_cpu_s": folder_cpu}  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children so far (the writer child included)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid)
        for p in (parent, *parent.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


#: Rounds of the compression table: each runs plain, zstd and zstd +
#: counter once, in a rotating order, so a slow phase of a shared machine
#: falls on all three; medians shown, ratios per round as a range.
COMPRESSION_ROUNDS = 3
#: Columns of the compression table: (heading, zstd, counter).
_COMPRESSION_MODES = (("zstd + counter batches", True, True), ("zstd, delta frames", True, False),
                      ("plain (baseline)", False, False))  # fmt: skip


def _medians(t: Table, label: str, runs: list[list[dict[str, Any]]],
             fn: Callable[[dict[str, Any]], float], **kw: Any) -> None:  # fmt: skip
    t.row(label, *(statistics.median(fn(x) for x in rs) for rs in runs), **kw)


#: Session counts of the compression table, and samples per session at scale 1.
COMPRESSION_SESSIONS: Final = {100: 2000, 1000: 200}


def compression(tmp: pathlib.Path, scale: float, rounds: int = COMPRESSION_ROUNDS,
                sessions_list: tuple[int, ...] = tuple(COMPRESSION_SESSIONS)) -> Table:  # fmt: skip
    """Delta frames plain vs in a zstd stream vs what the watchdog sends (a
    zstd stream of batched counter patches), interleaved round by round."""
    t = Table(f"ingest — plain NDJSON delta frames vs a zstd stream of them vs batched counter "
              f"patches in zstd (as the watchdog sends), SQLite store, median of {rounds} "
              "interleaved rounds", [m[0] for m in _COMPRESSION_MODES], baseline=2)  # fmt: skip
    loads = [os.getloadavg()[0]]
    for sessions in sessions_list:
        per_session = max(20, int(COMPRESSION_SESSIONS.get(sessions, 200) * scale))
        runs: list[list[dict[str, Any]]] = [[] for _ in _COMPRESSION_MODES]
        for r in range(rounds):
            order = list(range(len(_COMPRESSION_MODES)))
            order = order[r % len(order) :] + order[: r % len(order)]
            for m in order:
                _name, zstd, counter = _COMPRESSION_MODES[m]
                runs[m].append(_scenario(tmp, sessions, per_session, full=False, zstd=zstd,
                                         counter=counter))  # fmt: skip
                loads.append(os.getloadavg()[0])
        n = f"{sessions} sessions"
        _medians(t, f"{n}: samples stored / s", runs, lambda x: x["rate"], ratio=False)
        for m in (0, 1):
            ratios = sorted(a["rate"] / b["rate"] for a, b in zip(runs[m], runs[2], strict=True))
            t.row(f"{n}: {_COMPRESSION_MODES[m][0]} / plain, samples/s, per round "
                  f"({', '.join(f'{x:.2f}' for x in ratios)})", statistics.median(ratios), None,
                  None, ratio=False, goal=">= 0.85" if m == 0 else "")  # fmt: skip
        _medians(t, f"{n}: wire bytes / sample", runs, lambda x: x["wire_bytes"] / x["samples"],
                 lower_is_better=True)  # fmt: skip
        _medians(t, f"{n}: collector CPU us / sample", runs,
                 lambda x: x["collector_cpu_s"] / x["samples"] * 1e6, lower_is_better=True)  # fmt: skip
        _medians(t, f"{n}: ack latency p99 ms", runs, lambda x: x["p99_ms"], ratio=False)
        _medians(t, f"{n}: collector peak RSS MB", runs, lambda x: x["peak_rss"] / 2**20,
                 ratio=False, goal="< 300 MB" if sessions == 1000 else "")  # fmt: skip
    t.row(f"load average (1 min) over the runs: {min(loads):.1f}-{max(loads):.1f}", None, None, None,
          ratio=False)  # fmt: skip
    return t


def tiers(tmp: pathlib.Path, scale: float, runs: int = PACED_RUNS) -> Table:
    """Ingest with the rollup tiers maintained (the folder process on) beside
    the same collector with folding off (``fold=off``: the writer's path of the
    build before the tiers, which folded on it), saturated and paced,
    interleaved run by run; medians of ``runs``."""
    per = int(2000 * scale)
    sat: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(runs):
        for fold in (True, False):
            sat[fold].append(_scenario(tmp, 100, per, full=False, fold=fold))
    peak = statistics.median(r["rate"] for r in sat[False])
    offered = _offered(min(PACED_TIERS_RATE, round(peak * 0.7, -3)))
    paced: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(runs):
        for fold in (True, False):
            # 10 s at the offered rate whatever the scale: several checkpoints long
            paced[fold].append(_scenario(tmp, 100, max(200, int(offered * 10 / 100)),
                                         full=False, rate=offered, fold=fold, catch_up=fold))  # fmt: skip
    t = Table(f"ingest — rollup tiers on vs folding off, 100 sessions, median of {runs} "
              "interleaved runs", ["tiers on", "folding off"])  # fmt: skip

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rs))

    t.row("saturated: samples stored / s", med(sat[True], "rate"), med(sat[False], "rate"),
          goal="within 10%")  # fmt: skip
    pairs = [on["rate"] / off["rate"] for on, off in zip(sat[True], sat[False], strict=True)]
    t.row(f"saturated: on / off, each run's pair ({', '.join(f'{r:.2f}' for r in pairs)}), median",
          statistics.median(pairs), None, ratio=False, goal=">= 0.90")  # fmt: skip
    t.row(f"paced at {offered:,.0f}/s: ack latency p50 ms", med(paced[True], "p50_ms"),
          med(paced[False], "p50_ms"), lower_is_better=True)  # fmt: skip
    t.row(f"paced at {offered:,.0f}/s: ack latency p99 ms", med(paced[True], "p99_ms"),
          med(paced[False], "p99_ms"), lower_is_better=True, goal="within noise")  # fmt: skip
    t.row(f"paced at {offered:,.0f}/s: ack latency p99 ms, worst run",
          max(r["p99_ms"] for r in paced[True]), max(r["p99_ms"] for r in paced[False]),
          lower_is_better=True)  # fmt: skip
    t.row("collector CPU us / sample (paced; the folder included)",
          med(paced[True], "collector_cpu_s") / med(paced[True], "samples") * 1e6,
          med(paced[False], "collector_cpu_s") / med(paced[False], "samples") * 1e6,
          lower_is_better=True)  # fmt: skip
    # What the folder costs and whether it keeps up, from the end of each
    # paced load until every document is folded (the CPU row above stops
    # counting at the end of the load, behind or not).
    t.row("paced: documents not folded yet at the end of the load", med(paced[True], "fold_behind"),
          None, ratio=False)  # fmt: skip
    t.row("paced: seconds until all are folded, after the load", med(paced[True], "fold_catch_up_s"),
          None, ratio=False)  # fmt: skip
    t.row("folder CPU us / document folded (paced, all folded)",
          statistics.median(r["folder_cpu_s"] / r["samples"] * 1e6 for r in paced[True]), None,
          ratio=False)  # fmt: skip
    return t


def _http_posts(tmp: pathlib.Path, count: int, concurrency: int = 16) -> dict[str, Any]:
    import asyncio

    import httpx

    samples = load_recording()
    with _collector(tmp, http=True) as (proc, _port, http_port, _db):
        rss = _PeakRss(proc.pid)
        latencies: list[float] = []

        async def go() -> float:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}", timeout=30
            ) as client:
                queue = list(range(count))

                async def worker() -> None:
                    while queue:
                        i = queue.pop()
                        name, _ts, data = samples[i % len(samples)]
                        body = {"name": name, "value": float(data.get("cpu", {}).get("percent", 0)),
                                "data": data, "tags": ["bench"]}  # fmt: skip
                        t0 = time.perf_counter()
                        r = await client.post("/metrics", json=body)
                        latencies.append(time.perf_counter() - t0)
                        r.raise_for_status()

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return time.perf_counter() - t0

        elapsed = asyncio.run(go())
        latencies.sort()
        return {"samples": count, "seconds": elapsed, "rate": count / elapsed,
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                "peak_rss": rss.stop(), "wire_bytes": None}  # fmt: skip


def run(scale: float = 1.0) -> Iterator[Table]:
    """Yields each table as soon as its scenarios ran."""
    with tempfile.TemporaryDirectory(prefix="deltawire-bench-") as tmpname:
        tmp = pathlib.Path(tmpname)
        posts = _http_posts(tmp, max(200, int(2000 * scale)))
        for sessions, per_session in ((1, int(100_000 * scale)), (100, int(2000 * scale)),
                                      (1000, max(20, int(200 * scale)))):  # fmt: skip
            d = _scenario(tmp, sessions, per_session, full=False)
            f = _scenario(tmp, sessions, per_session, full=True)
            t = Table(f"ingest — {sessions} session(s) x {per_session} samples, SQLite store",
                      ["delta frames", "full JSON frames", "HTTP POST/sample"])  # fmt: skip
            t.row(
                "samples stored / s",
                d["rate"],
                f["rate"],
                posts["rate"],
                goal=">= 100k/s (100 sessions)" if sessions == 100 else "",
            )
            t.row(
                "ack latency p50 ms",
                d["p50_ms"],
                f["p50_ms"],
                posts["p50_ms"],
                lower_is_better=True,
            )
            t.row(
                "ack latency p99 ms",
                d["p99_ms"],
                f["p99_ms"],
                posts["p99_ms"],
                lower_is_better=True,
                # unpaced, latency is only how long the backlog is: the goal is
                # checked paced, in the tables below
                goal="see paced" if sessions == 100 else "",
            )
            t.row(
                "collector peak RSS MB",
                d["peak_rss"] / 2**20,
                f["peak_rss"] / 2**20,
                posts["peak_rss"] / 2**20,
                lower_is_better=True,
            )
            t.row(
                "wire bytes / sample",
                d["wire_bytes"] / d["samples"],
                f["wire_bytes"] / f["samples"],
                None,
                lower_is_better=True,
            )
            yield t
        # Latency is only meaningful below saturation: offer a fixed rate.
        sat = _scenario(tmp, 100, int(2000 * scale), full=False)
        for writer in ("process", "thread"):
            peak = sat if writer == "process" else _scenario(tmp, 100, int(2000 * scale), full=False,
                                                            writer=writer)  # fmt: skip
            # The goal is stated at 100k/s: offer exactly that where the
            # collector can take it, else 70% of what it took saturated.
            offered = _offered(GOAL_RATE if peak["rate"] > GOAL_RATE
                               else round(peak["rate"] * 0.7, -3))  # fmt: skip
            # Near saturation on a shared 2-core VM one run's p99 is a coin
            # toss: the default writer gets several runs, the median shown.
            runs = sorted((_scenario(tmp, 100, max(200, int(offered * 10 / 100)), full=False,
                                     rate=offered, writer=writer)
                           for _ in range(PACED_RUNS if writer == "process" else 1)),
                          key=lambda r: float(r["p99_ms"]))  # fmt: skip
            paced = runs[len(runs) // 2]
            t = Table(f"ingest — 100 sessions, store writer: {writer}",
                      ["saturated", f"paced at {offered:,.0f}/s"], baseline=9)  # fmt: skip
            t.row("samples stored / s", peak["rate"], paced["rate"], ratio=False, goal=">= 100k/s")
            t.row("ack latency p50 ms", peak["p50_ms"], paced["p50_ms"], ratio=False)
            t.row(
                "ack latency p99 ms" + (f", median of {len(runs)} runs" if len(runs) > 1 else ""),
                peak["p99_ms"],
                paced["p99_ms"],
                ratio=False,
                goal="< 250 ms",
            )
            if len(runs) > 1:
                t.row("ack latency p99 ms, best run", None, runs[0]["p99_ms"], ratio=False)
                t.row("ack latency p99 ms, worst run", None, runs[-1]["p99_ms"], ratio=False)
            t.row("collector peak RSS MB", peak["peak_rss"] / 2**20, paced["peak_rss"] / 2**20,
                  ratio=False)  # fmt: skip
            yield t
        yield tiers(tmp, scale)
        yield compression(tmp, scale)
        stalled = _scenario(tmp, 1000, max(20, int(100 * scale)), full=False, stall=3.0)
        t = Table(
            "ingest — 1000 sessions, store write-locked for the first 3 s",
            ["delta frames"],
            baseline=9,
        )
        t.row("collector peak RSS MB", stalled["peak_rss"] / 2**20, goal="< 300 MB")
        t.row("samples stored / s (incl. stall)", stalled["rate"], ratio=False)
        t.row("ack latency p99 ms", stalled["p99_ms"])
        yield t


def _session_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("session counts must be >= 1")
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply sample counts (0.1 = quick)")
    ap.add_argument("--tiers", action="store_true",
                    help="only the rollup tiers on vs folding off table (default: every table)")  # fmt: skip
    ap.add_argument("--compression", action="store_true",
                    help="only the zstd vs plain table (default: every table)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=COMPRESSION_ROUNDS,
                    help="interleaved rounds of the compression table (default: %(default)s)")  # fmt: skip
    ap.add_argument("--sessions", type=_session_counts, default=tuple(COMPRESSION_SESSIONS),
                    help="session counts of the compression table, comma-separated (default: "
                    "100,1000; 100 sessions send 2,000 samples each, others 200)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.compression:
        with tempfile.TemporaryDirectory(prefix="deltawire-bench-") as tmpname:
            table = compression(pathlib.Path(tmpname), args.scale, args.rounds, args.sessions)
            print(table.render(), flush=True)
        return 0
    if args.tiers:
        with tempfile.TemporaryDirectory(prefix="deltawire-bench-") as tmpname:
            print(tiers(pathlib.Path(tmpname), args.scale).render(), flush=True)
        return 0
    return show(run(args.scale))


if __name__ == "__main__":
    raise SystemExit(main())
