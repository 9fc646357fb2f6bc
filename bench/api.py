"""API bench (``make bench`` part ``api``): wrk against ``collector serve``'s
HTTP port while 100 agents stream through its ingest port.

For each case, at c=10 and c=100: requests/s and p50/p95/p99 (wrk's own
latency histogram, printed by a Lua ``done`` hook), with Redis off (the
in-process LRU) and on. Cases: GET /metrics cached (one URL) and uncached
(every URL new), /query, /aggregate, POST, PUT, PATCH, DELETE; then a
dashboard mix of recent and filtered GETs with the cache hit rate read from
/stats. Targets (the seed's): GET p95 < 30 ms and p99 < 50 ms, POST p95 < 25,
PUT/PATCH p95 < 30, DELETE p95 < 20, cached GET >= 10k req/s, hit rate >= 90%.

    python -m bench.api [--seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import orjson

from deltawire.collector.stores import open_store
from deltawire.protocol import Document

from .report import Table

__all__ = ["main", "run"]

REPO = pathlib.Path(__file__).resolve().parent.parent
AGENTS = 100
AGENT_RATE = 1000.0  # samples/s offered by all agents together (10/s each)
SEED_DOCS = 100_000
# The seed starts two days ago on a whole hour: recent enough for the rollup
# tiers' minute buckets (kept 30 days) and for "today" questions.
_T0 = float(int(time.time()) // 3600 * 3600 - 2 * 86400)


def _at(text: str) -> str:
    """``text`` with @T0@ (the seed's start) and @T1@ (50,000 s later) filled in."""
    return text.replace("@T0@", str(int(_T0))).replace("@T1@", str(int(_T0) + 50_000))


# Prints one JSON line at the end of a wrk run: its own histogram's percentiles.
_DONE = """
done = function(summary, latency, requests)
  if cache_report then cache_report() end
  local s = summary.duration / 1e6
  io.write(string.format('WRKJSON {"rps": %f, "p50": %f, "p95": %f, "p99": %f, "n": %d, "non2xx": %d, "errors": %d}\\n',
    summary.requests / s, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""

_IDS = """
local ids = {%s}
local n = 0
local tid = 0
local count = 0
setup = function(thread) thread:set("tid", count); count = count + 1 end
"""

SCRIPTS: dict[str, str] = {
    "get_cached": "",
    "get_uncached": """
request = function()
  local from = @T0@ + math.random(0, 90000)
  return wrk.format("GET", "/metrics?limit=100&from=" .. from .. "." .. math.random(0, 999))
end
""",
    "query": "",
    "aggregate": "",
    "post": """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"name": "bench.point", "value": 1.5, "host": "bench-host", "tags": ["bench"]}'
""",
    "put": _IDS
    + """
request = function()
  n = n + 1
  local k = (n * 7 + tid) %% #ids + 1
  -- the whole document again, as a client that read it sends it back
  return wrk.format("PUT", "/metrics/" .. ids[k], {["content-type"] = "application/json"},
    '{"name": "bench.point", "value": ' .. n .. ', "tags": ["bench"], "timestamp": '
    .. (@T0@ + k - 1) .. '}')
end
""",
    "patch": _IDS
    + """
request = function()
  n = n + 1
  local id = ids[(n * 7 + tid) %% #ids + 1]
  return wrk.format("PATCH", "/metrics/" .. id, {["content-type"] = "application/json"},
    '{"value": ' .. n .. ', "data": {"k": ' .. n .. '}}')
end
""",
    "delete": _IDS
    + """
request = function()
  n = n + 1
  local id = ids[(n * 2 + tid) %% #ids + 1]
  return wrk.format("DELETE", "/metrics/" .. id)
end
""",
    "mix": """
local paths = {
  "/metrics?name=process&limit=100",
  "/metrics?session=bench-agent-3&sort=-timestamp&limit=50",
  "/metrics?kind=sample&host=test-host&limit=20",
  "/metrics?name=process&from=@T0@&to=@T1@&limit=100",
  "/metrics?session=bench-agent-7&fields=cpu.percent&limit=100",
}
local n = 0
local threads = {}
hit, shared, miss = 0, 0, 0
setup = function(thread) table.insert(threads, thread) end
request = function()
  n = n + 1
  return wrk.format("GET", paths[n % #paths + 1])
end
response = function(status, headers, body)
  local x = headers["x-cache"]
  if x == "hit" then hit = hit + 1 elseif x == "shared" then shared = shared + 1 else miss = miss + 1 end
end
cache_report = function()
  local h, s, m = 0, 0, 0
  for _, t in ipairs(threads) do h = h + t:get("hit"); s = s + t:get("shared"); m = m + t:get("miss") end
  io.write(string.format('WRKCACHE {"hit": %d, "shared": %d, "miss": %d}\\n', h, s, m))
end
""",
}

URLS = {
    "get_cached": "/metrics?name=process&limit=100",
    "get_uncached": "/metrics",
    "query": "/query?prompt=top+5+events+today",
    "aggregate": "/aggregate?fn=avg&field=cpu.percent&by=session&from=@T0@&to=@T1@",
    "post": "/metrics",
    "put": "/metrics",
    "patch": "/metrics",
    "delete": "/metrics",
    "mix": "/metrics",
}
TARGETS = {"get_cached": 30, "get_uncached": 30, "post": 25, "put": 30, "patch": 30, "delete": 20}


def _seed(uri: str, api_points: int) -> list[str]:
    store = open_store(uri)
    store.open()
    try:
        from deltawire.testing.harness import make_samples

        samples = make_samples(1000)
        docs = [Document(f"seed-{i % 50}", i // 50, "sample", "process", _T0 + i, f"h{i % 5}",
                         ("seed",), samples[i % 1000]) for i in range(SEED_DOCS)]  # fmt: skip
        for i in range(0, len(docs), 5000):
            store.write_batch(docs[i : i + 5000])
        ids = [
            store.create({"name": "bench.point", "value": float(i), "ts": _T0 + i})["id"]
            for i in range(api_points)
        ]
        # Fold the seed into the rollup tiers now: the run measures ingest at
        # its steady state, not the writer's catch-up on 130k seeded documents.
        store.fold_rollups(SEED_DOCS + api_points)
        return ids
    finally:
        store.close()


def _wrk(url: str, script: str, conns: int, seconds: float, tmp: pathlib.Path) -> dict[str, Any]:
    path = tmp / "wrk.lua"
    path.write_text(_at(script) + _DONE)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(path),
         _at(url)],
        capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    m = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if m is None:
        raise RuntimeError(f"wrk printed no result: {out.stdout}\n{out.stderr}")
    result: dict[str, Any] = orjson.loads(m.group(1))
    c = re.search(r"WRKCACHE (\{.*\})", out.stdout)
    if c is not None:
        result["cache"] = orjson.loads(c.group(1))
    return result


@contextlib.contextmanager
def _agents(port: int, seconds: float) -> Iterator[None]:
    per_session = int(AGENT_RATE * seconds / AGENTS) + 1
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--sessions", str(AGENTS),
         "--per-session", str(per_session), "--rate", str(AGENT_RATE)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        from deltawire.testing.servers import stop_process

        stop_process(proc)


def _round(
    redis_uri: str | None, seconds: float, cases: list[str], tmp: pathlib.Path
) -> tuple[dict[tuple[str, int], dict[str, Any]], float | None]:
    from deltawire.testing.harness import collector_process

    seed = tmp / "seed.db"
    if not (tmp / "seed.ids").exists():  # seeded (and folded) once, copied per round
        (tmp / "seed.ids").write_text("\n".join(_seed(f"sqlite:///{seed}", 30_000)))
    ids = (tmp / "seed.ids").read_text().split("\n")
    db = tmp / f"api-{'redis' if redis_uri else 'local'}.db"
    shutil.copyfile(seed, db)
    env = {"REDIS_URI": redis_uri or "", "CACHE_TTL": "30", "LOG_LEVEL": "warning"}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    hit_rate = None
    with collector_process(tmp, store_uri=f"sqlite:///{db}", http=True, env=env) as cp:
        base = f"http://127.0.0.1:{cp.http_port}"
        total = seconds * (len(cases) * 2 + 2) + 30
        with _agents(cp.port, total):
            chunks = {"put": ids[:10_000], "patch": ids[:10_000], "delete": ids[10_000:]}
            for case in cases:
                script = SCRIPTS[case]
                if case in chunks:
                    script = script % ",".join(f'"{i}"' for i in chunks[case])
                if case == "delete":  # each id once: split the rest between c=10 and c=100
                    half = len(chunks["delete"]) // 2
                    for conns, part in (
                        (10, chunks["delete"][:half]),
                        (100, chunks["delete"][half:]),
                    ):
                        s = SCRIPTS[case] % ",".join(f'"{i}"' for i in part)
                        results[(case, conns)] = _wrk(base + URLS[case], s, conns, seconds, tmp)
                    continue
                for conns in (10, 100):
                    results[(case, conns)] = _wrk(base + URLS[case], script, conns, seconds, tmp)
                    print(f"  {case} c={conns}: {results[(case, conns)]}", file=sys.stderr)
            mix = results[("mix", 100)] = _wrk(
                base + URLS["mix"], SCRIPTS["mix"], 100, seconds, tmp
            )
            print(f"  mix c=100: {mix}", file=sys.stderr)
            counts = mix.get("cache") or {}
            total = sum(counts.values())
            if total:
                # x-cache: hit (from the cache), shared (one computation answered
                # several concurrent misses), miss (computed from the store)
                hit_rate = counts["hit"] / total
                results[("mix", 100)]["served_without_store"] = (
                    counts["hit"] + counts["shared"]
                ) / total
    return results, hit_rate


ALL_CASES = ["get_cached", "get_uncached", "query", "aggregate", "post", "put", "patch", "delete"]


def run(seconds: float = 5.0, quick: bool = False, cases: list[str] | None = None) -> list[Table]:
    from deltawire.testing.servers import run_redis

    if shutil.which("wrk") is None:
        raise SystemExit("bench api needs wrk (Debian: apt-get install wrk)")
    cases = list(ALL_CASES if cases is None else cases)
    tables = []
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        rounds = [("Redis off (in-process LRU)", None)]
        with run_redis(tmp / "redis") as redis_uri:
            if not quick:
                rounds.append(("Redis on", redis_uri))
            for title, uri in rounds:
                results, hit_rate = _round(uri, seconds, cases, tmp)
                t = Table(f"API, {title}, {AGENTS} agents streaming {AGENT_RATE:g} samples/s "
                          "(shared 2-core machine: noisy)",
                          ["req/s", "p50 ms", "p95 ms", "p99 ms", "non-2xx"], baseline=0)  # fmt: skip
                for (case, conns), r in results.items():
                    goal = ""
                    if case in TARGETS:
                        goal = f"p95 < {TARGETS[case]}" + (
                            " p99 < 50" if case.startswith("get") else ""
                        )
                        if case == "get_cached":
                            goal += ", >= 10k/s"
                    t.row(f"{case} c={conns}", r["rps"], r["p50"], r["p95"], r["p99"], r["non2xx"],
                          goal=goal, ratio=False)  # fmt: skip
                mix = results.get(("mix", 100), {})
                if "served_without_store" in mix:
                    t.row("answers not computed (hit + shared), mix (%)",
                          mix["served_without_store"] * 100, None, None, None, None, ratio=False)  # fmt: skip
                if hit_rate is not None:
                    t.row(
                        "cache hit rate, dashboard mix c=100 (%)",
                        hit_rate * 100,
                        None,
                        None,
                        None,
                        None,
                        goal=">= 90",
                        ratio=False,
                    )
                tables.append(t)
    return tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seconds", type=float, default=5.0, help="per wrk run (default 5)")
    ap.add_argument("--quick", action="store_true", help="Redis off only")
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help=f"comma-separated subset (default: all: {','.join(ALL_CASES)})")  # fmt: skip
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(ALL_CASES)}")
    for table in run(args.seconds, args.quick, cases):
        print(table.render(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
