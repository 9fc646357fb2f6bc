"""Dashboard bench (``make bench`` part ``dashboard``): a session page's first
load in a fresh browser context (no cache, as a brand-new browser), with
100,000 samples (one a second, up to now) behind its chart.

Time: navigation start to the first chart drawn with data (the page's
``deltawire:chart-drawn`` performance mark), in Debian's chromium. Windows,
run interleaved: ``7d`` (all the samples, 10-minute buckets read from the
1-minute rollup tier; its ``from`` moves with the clock, so the collector's
cache never answers), ``session`` (the default for an ended session: the same
tier, cached by the collector after the first load) and ``15m`` (900 raw
samples, only the charted fields). Beside it, the baseline the tier replaces:
the same two fields of all 100,000 raw rows through ``GET /metrics``.
Goal (issue 15): < 1 s.

The collector folds a burst into its tiers while idle; until it has, queries
read the unfolded tail as raw rows. One load right after the burst shows that
case; the others wait (on the store's watermark) until the tiers hold it all.

    python -m bench.dashboard [--samples 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import time
from functools import partial
from typing import Any

import httpx
import trio

from deltawire.collector.stores.sqlite_rollup import watermark
from deltawire.testing.browser import CHART_DRAWN, chromium
from deltawire.testing.harness import collector_process, make_samples, stream_session

from .report import Table

__all__ = ["main", "run"]

SESSION = "dashboard-bench"
FIELDS = "cpu.percent,mem.rss"  # the charts a process session opens on
WINDOWS = ("7d", "session", "15m")
GOAL_MS = 1000.0
_DRAWN = f"performance.getEntriesByName('{CHART_DRAWN}').length > 0"
# The chart's data calls among the page's requests (resource timing entries).
_DATA_CALLS = """() => performance.getEntriesByType('resource')
  .filter(e => /\\/aggregate\\?|\\/metrics\\?.*name=/.test(e.name))
  .map(e => [e.responseEnd - e.startTime, e.decodedBodySize])"""


def _load(browser: Any, url: str) -> tuple[float, float, int]:
    """One first load in a fresh context: (ms to the chart, ms of its slowest
    data call, bytes of its data calls)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(_DRAWN, timeout=30_000)
        drawn = float(page.evaluate(f"performance.getEntriesByName('{CHART_DRAWN}')[0].startTime"))
        calls = page.evaluate(_DATA_CALLS)
        return drawn, max((c[0] for c in calls), default=0.0), sum(int(c[1]) for c in calls)
    finally:
        context.close()


def _raw_baseline(base: str, samples: int) -> tuple[float, int]:
    """ms and bytes to read the charted fields of every raw sample (the pages of GET /metrics)."""
    params: dict[str, Any] = {
        "session": SESSION,
        "kind": "sample",
        "limit": 10_000,
        "fields": FIELDS,
    }
    started, size, seen = time.perf_counter(), 0, 0
    with httpx.Client(base_url=base, timeout=120) as http:
        while True:
            r = http.get("/metrics", params=params)
            r.raise_for_status()
            size += len(r.content)
            body = r.json()
            seen += len(body["items"])
            if not body.get("next"):
                break
            params["after"] = body["next"]
    assert seen == samples, f"read {seen} raw samples, stored {samples}"
    return (time.perf_counter() - started) * 1000, size


def _wait_folded(db: pathlib.Path, deadline_s: float = 300.0) -> float:
    """Seconds until every stored document is in the rollup tiers."""
    started = time.monotonic()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        while True:
            (top,) = conn.execute("SELECT max(id) FROM docs").fetchone()
            if watermark(conn) >= (top or 0):
                return time.monotonic() - started
            if time.monotonic() - started > deadline_s:
                raise RuntimeError(f"rollups not folded after {deadline_s:g} s")
            time.sleep(0.2)  # polling the condition, with the deadline above
    finally:
        conn.close()


def run(samples: int = 100_000, runs: int = 5) -> list[Table]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp,
        collector_process(pathlib.Path(tmp), http=True) as cp,
    ):
        base = f"http://127.0.0.1:{cp.http_port}"
        print(f"dashboard: streaming {samples:,} samples ...", file=sys.stderr, flush=True)
        t0 = time.time() - samples  # one a second, the newest now
        trio.run(partial(stream_session, cp.port, SESSION, make_samples(samples), chunk=1000,
                         deadline=600, t0=t0))  # fmt: skip
        loads: dict[str, list[tuple[float, float, int]]] = {w: [] for w in WINDOWS}
        raw: list[tuple[float, int]] = []
        with chromium() as browser:
            burst = _load(browser, f"{base}/ui/sessions/{SESSION}?window=7d")
            folded = _wait_folded(pathlib.Path(tmp) / "collector.db")
            print(f"dashboard: tiers folded {folded:.1f} s after the burst", file=sys.stderr)
            for i in range(runs):
                print(f"dashboard: run {i + 1}/{runs}", file=sys.stderr, flush=True)
                for w in WINDOWS:
                    loads[w].append(_load(browser, f"{base}/ui/sessions/{SESSION}?window={w}"))
                raw.append(_raw_baseline(base, samples))
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    t = Table(
        f"Dashboard first load, {samples:,} samples behind the chart, fresh browser context, "
        f"{runs} runs (load average {load_avg})",
        ["p50 ms", "min ms", "max ms", "data call ms", "data KiB"],
        baseline=5,  # no ratio column: the rows compare with one another
    )
    t.row("window 7d, right after the burst (tail not folded yet: raw rows)", burst[0], None,
          None, burst[1], burst[2] / 1024, goal="(informative)", ratio=False)  # fmt: skip
    for w in WINDOWS:
        drawn = [x[0] for x in loads[w]]
        call = statistics.median(x[1] for x in loads[w])
        size = statistics.median(x[2] for x in loads[w]) / 1024
        t.row(f"window {w}: navigation to chart drawn", statistics.median(drawn), min(drawn),
              max(drawn), call, size, goal=f"< {GOAL_MS:,.0f} ms", ratio=False)  # fmt: skip
    ms = [x[0] for x in raw]
    t.row(f"baseline: raw rows instead ({samples:,} samples, GET /metrics fields=)", None,
          None, None, statistics.median(ms), raw[0][1] / 1024, ratio=False)  # fmt: skip
    return [t]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument(
        "--samples", type=int, default=100_000, help="samples behind the chart (100000)"
    )
    ap.add_argument("--runs", type=int, default=5, help="first loads per window (5)")
    args = ap.parse_args(argv)
    for table in run(args.samples, args.runs):
        print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
