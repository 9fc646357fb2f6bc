"""API bench (``make bench`` part ``api``): wrk against ``collector serve``'s
HTTP port while 100 agents stream through its ingest port.

For each case, at c=10 and c=100 (writes also at c=100 paced to ~500/s):
requests/s and p50/p95/p99 (wrk's own latency histogram, printed by a Lua
``done`` hook), with Redis off (the in-process LRU) and on. Cases: GET
/metrics cached (one URL) and uncached (every URL new), /query, /aggregate,
POST, PUT, PATCH, DELETE; then a dashboard mix of recent and filtered GETs
with the cache hit rate from the answers' x-cache headers. Rows also say
how many edits each store commit carried (the group commit, from /stats) and
the API process's CPU per answer (user + system, psutil), and its edit
writer's (the child that commits the writes), and any write that held up
the others (the collector's warnings of a store transaction or log fsync
over 0.5 s, with how long it waited for the lock). The seed's targets,
printed beside the figures with whether every round met them: GET p95 < 30
ms and p99 < 50 ms, POST p95 < 25, PUT/PATCH p95 < 30, DELETE p95 < 20,
cached GET >= 10k req/s, hit rate >= 90%. Rounds alternate Redis off and
on (--repeat N: N each); the table gives the range over rounds and the load
average around each, since the machine may be shared.

    python -m bench.api [--seconds 5] [--repeat 2] [--quick] [--cases post,put]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import psutil

from deltawire.collector.api_process import auto_workers
from deltawire.collector.stores import open_store
from deltawire.collector.stores.base import Create
from deltawire.protocol import Document

__all__ = ["main", "run"]

REPO = pathlib.Path(__file__).resolve().parent.parent
AGENTS = 100
AGENT_RATE = 1000.0  # samples/s offered by all agents together (10/s each)
SEED_DOCS = 100_000
#: API points seeded: PUT and PATCH edit the first ``EDITED`` (10,000), DELETE
#: takes each of the rest once (the paced run a share for its rate, the
#: flat-out runs the rest by ``_DELETE_WEIGHTS``). A delete of a deleted id
#: is a 404, which the run counts as a failure, so the seed grows with the
#: runs' length (``api_points``): ``DELETES_PER_S`` ids a second of a run.
#: A fixed 20,000, then 50,000, then 130,000, then 180,000 ran out as the
#: API got faster (or the VM did): on 2026-12-01 deletes reached 6.9k/s at
#: c=10 and 29.5k/s at c=100 (with some 404s, cheaper than deletes).
EDITED = 10_000
DELETES_PER_S = 45_000  # c=10 + c=100 + paced at their fastest so far, with ~25% to spare
MIN_API_POINTS = 180_000
_EXTRA_SPAN = 60_000.0  # seconds the points past MIN_API_POINTS are spread over


def api_points(seconds: float) -> int:
    """How many API points to seed for DELETE runs of ``seconds`` each."""
    return max(MIN_API_POINTS, EDITED + int(DELETES_PER_S * seconds))


def point_ts(i: int, count: int) -> float:
    """The timestamp of API point ``i`` of ``count``: a second apart from T0
    on for the first MIN_API_POINTS (PUT sends point k's back as T0 + k -
    1); the rest between them, in [T0 + 100,000, T0 + 160,000): past the seed's samples
    (the uncached pages and the mix's windows read those) and hours before
    now. Where they go matters: 370,000 seeded on from T0 reached 2 days past
    now, and then placed before T0, and each time the mix's misses of its
    newest-first (then first) pages of ``process`` walked ~190,000 of them
    (mix p99 4 ms before, 64-469 ms with them)."""
    if i < MIN_API_POINTS:
        return _T0 + i
    step = min(0.25, _EXTRA_SPAN / max(1, count - MIN_API_POINTS))
    return _T0 + SEED_DOCS + (i - MIN_API_POINTS + 0.5) * step


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
  if status_report then status_report() end
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
tid = 0  -- global: set per thread by setup (thread:set), a local would hide it
local count = 0
local threads = {}
setup = function(thread)
  thread:set("tid", count); count = count + 1; table.insert(threads, thread)
end
-- the status of every non-2xx answer, counted (printed by done)
s404, s422, s503, sother = 0, 0, 0, 0
response = function(status, headers, body)
  if status == 404 then s404 = s404 + 1 elseif status == 422 then s422 = s422 + 1
  elseif status == 503 then s503 = s503 + 1 elseif status >= 300 then sother = sother + 1 end
end
status_report = function()
  local c = {0, 0, 0, 0}
  for _, t in ipairs(threads) do
    c[1] = c[1] + t:get("s404"); c[2] = c[2] + t:get("s422")
    c[3] = c[3] + t:get("s503"); c[4] = c[4] + t:get("sother")
  end
  io.write(string.format('WRKSTATUS {"404": %%d, "422": %%d, "503": %%d, "other": %%d}\\n',
    c[1], c[2], c[3], c[4]))
end
-- the next document of this thread's walk over ids (every step-th): its index and id
pick = function(step)
  n = n + 1
  local k = (n * step + tid) %% #ids + 1
  return k, ids[k]
end
-- a JSON request to the document id
edit = function(method, id, body)
  return wrk.format(method, "/metrics/" .. id, {["content-type"] = "application/json"}, body)
end
"""

#: wrk starts every thread's ``math.random`` at the same seed: its two
#: threads asked for the same "new" pages in lockstep, and half of the
#: uncached GETs were answered by another's computation (x-cache: shared),
#: which flattered that row 2x. Each thread now draws its own sequence, and
#: a new one each run (a page from a run before may still be cached).
_FRESH_RANDOM = """
seed = 0  -- global: set per thread by setup (thread:set)
local threads_seeded = 0
setup = function(thread)
  threads_seeded = threads_seeded + 1
  thread:set("seed", threads_seeded)
  if track then track(thread) end  -- _CACHE_COUNT's, when the script has it
end
init = function(args) math.randomseed(os.time() * 1000 + seed) end
"""

#: Counts the answers' x-cache: hit (from the cache), shared (one
#: computation answered several concurrent misses), miss (computed).
_CACHE_COUNT = """
local threads = {}
hit, shared, miss = 0, 0, 0
track = function(thread) table.insert(threads, thread) end
if not setup then setup = track end
response = function(status, headers, body)
  local x = headers["x-cache"]
  if x == "hit" then hit = hit + 1 elseif x == "shared" then shared = shared + 1 else miss = miss + 1 end
end
cache_report = function()
  local h, s, m = 0, 0, 0
  for _, t in ipairs(threads) do h = h + t:get("hit"); s = s + t:get("shared"); m = m + t:get("miss") end
  io.write(string.format('WRKCACHE {"hit": %d, "shared": %d, "miss": %d}\\n', h, s, m))
end
"""

SCRIPTS: dict[str, str] = {
    "get_cached": "",
    "get_uncached": _FRESH_RANDOM
    + _CACHE_COUNT
    + """
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
  local k, id = pick(7)
  -- the whole document again, as a client that read it sends it back
  return edit("PUT", id, '{"name": "bench.point", "value": ' .. n .. ', "tags": ["bench"], '
    .. '"timestamp": ' .. (@T0@ + k - 1) .. '}')
end
""",
    "patch": _IDS
    + """
request = function()
  local _, id = pick(7)
  return edit("PATCH", id, '{"value": ' .. n .. ', "data": {"k": ' .. n .. '}}')
end
""",
    "delete": _IDS
    + """
request = function()
  local _, id = pick(2)
  return wrk.format("DELETE", "/metrics/" .. id)
end
""",
    "mix": """
local paths = {
  "/metrics?name=process&limit=100",
  "/metrics?name=process&sort=-timestamp&limit=50",
  "/metrics?kind=sample&host=h2&limit=20",
  "/metrics?name=process&from=@T0@&to=@T1@&limit=100",
  "/metrics?session=seed-7&fields=cpu.percent&limit=100",
}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[n % #paths + 1])
end
"""
    + _CACHE_COUNT,
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


def _seed(uri: str, count: int) -> list[str]:
    """Seed the store at ``uri``: SEED_DOCS streamed samples, then ``count``
    API points; the API points' ids, in order."""
    store = open_store(uri)
    store.open()
    try:
        from deltawire.testing.harness import make_samples

        samples = make_samples(1000)
        docs = [Document(f"seed-{i % 50}", i // 50, "sample", "process", _T0 + i, f"h{i % 5}",
                         ("seed",), samples[i % 1000]) for i in range(SEED_DOCS)]  # fmt: skip
        for i in range(0, len(docs), 5000):
            store.write_batch(docs[i : i + 5000])
        # Created as the API creates them, a thousand per transaction (one
        # fsync each, not one per point: the seed took minutes on a busy disk).
        ids = []
        for lo in range(0, count, 1000):
            batch = [Create({"name": "bench.point", "value": float(i), "ts": point_ts(i, count)})
                     for i in range(lo, min(count, lo + 1000))]  # fmt: skip
            ids += [doc["id"] for doc in store.apply_edits(batch)]  # type: ignore[index]
        # Fold the seed into the rollup tiers now: the run measures ingest at
        # its steady state, not the writer's catch-up on 130k seeded documents.
        store.fold_rollups(SEED_DOCS + count)
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
    c = re.search(r"WRKSTATUS (\{.*\})", out.stdout)
    if c is not None:
        result["statuses"] = orjson.loads(c.group(1))
    return result


def _commits(base: str) -> tuple[float, float]:
    """The API's (edits, store commits) so far: its group commit's counters."""
    with urllib.request.urlopen(base + "/stats", timeout=30) as r:
        text = r.read().decode()
    found = [re.search(rf"^deltawire_api_{name}_total (\S+)$", text, re.M)
             for name in ("edits", "edit_commits")]  # fmt: skip
    return tuple(float(m.group(1)) if m else 0.0 for m in found)  # type: ignore[return-value]


def _warm(base: str, script: str) -> None:
    """One request per URL of the mix first: the hit rate is the steady
    state's, not that of the first second's cold misses."""
    for path in re.findall(r'"(/metrics\?[^"]*)"', _at(script)):
        with urllib.request.urlopen(base + path, timeout=30) as r:
            r.read()


#: How long the agents may take to connect before the first measurement.
AGENTS_CONNECT_S = 60.0


def _streaming(base: str, deadline: float) -> None:
    """Return once every agent's session is connected and the ingest port has
    taken another AGENTS frames since: the cases measure the steady state.
    Before the agents' first samples land, the mix's newest-first page of
    ``process`` walks the seed's 80,000 newer API points (docs/api-performance.md,
    "Where the tail is"): the mix run first then had a p99 of 144-454 ms with
    two API workers (3 runs), 7.9-36.9 ms a few seconds later."""
    url = f"{base}/sessions?connected=true&limit={AGENTS}"
    since = None
    while True:
        if since is None:
            with urllib.request.urlopen(url, timeout=30) as r:
                if len(orjson.loads(r.read())["items"]) >= AGENTS:
                    since = _frames_in(base)
        elif _frames_in(base) >= since + AGENTS:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {AGENTS} agents were not streaming after "
                               f"{AGENTS_CONNECT_S:g} s")  # fmt: skip
        time.sleep(0.2)  # a poll of the collector's own state, not a synchronisation guess


def _frames_in(base: str) -> float:
    with urllib.request.urlopen(base + "/stats", timeout=30) as r:
        m = re.search(r"^deltawire_frames_in_total (\S+)$", r.read().decode(), re.M)
    return float(m.group(1)) if m else 0.0


@contextlib.contextmanager
def _agents(port: int, seconds: float, base: str | None = None) -> Iterator[None]:
    """100 agents streaming into the ingest ``port``; with ``base`` (the HTTP
    API), only once all of them stream."""
    per_session = int(AGENT_RATE * seconds / AGENTS) + 1
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--sessions", str(AGENTS),
         "--per-session", str(per_session), "--rate", str(AGENT_RATE)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if base is not None:
            _streaming(base, time.monotonic() + AGENTS_CONNECT_S)
        yield
    finally:
        from deltawire.testing.servers import stop_process

        stop_process(proc)


#: Writes are also measured at an offered load, not only flat out: 100
#: connections that each wait a random 0-400 ms between requests (wrk's
#: ``delay`` hook), ~500 writes/s in all. Flat out (no wait), a closed loop of
#: c connections has a latency of c / throughput whatever the server does.
PACED = "c=100 paced ~500/s"
_PACED_LUA = "\ndelay = function() return math.random(0, 400) end\n"
WRITES = ("post", "put", "patch", "delete")
RUNS = ("c=10", "c=100", PACED)


def _runs(case: str) -> tuple[str, ...]:
    return RUNS if case in WRITES else RUNS[:2]


def _api_processes(collector_pid: int) -> list[psutil.Process]:
    """The collector's HTTP API workers (``python -m deltawire.collector.api``)."""
    procs = [child for child in psutil.Process(collector_pid).children()
             if "deltawire.collector.api" in child.cmdline()]  # fmt: skip
    if not procs:
        raise RuntimeError("collector serve started no API process")
    return procs


def _edit_writers(apis: list[psutil.Process]) -> list[psutil.Process]:
    """The API workers' edit writer children, which commit their writes."""
    return [child for api in apis for child in api.children()
            if "deltawire.collector.api.edit_writer" in child.cmdline()]  # fmt: skip


def _cpu(procs: psutil.Process | list[psutil.Process] | None) -> float:
    """CPU seconds (user + system) of ``procs`` so far (0: none)."""
    if procs is None:
        return 0.0
    total = 0.0
    for proc in procs if isinstance(procs, list) else [procs]:
        t = proc.cpu_times()
        total += t.user + t.system
    return total


#: The collector's warnings of a write that held up every other (the SQLite
#: store's: a transaction or a log fsync over 0.5 s, docs/collector.md).
_SLOW_WRITES = (b'"slow write transaction"', b'"slow fsync of the write-ahead log"')


def _slow_writes(log_path: pathlib.Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The slow-write warnings the collector logged past ``offset`` of its
    log (JSON lines), and the offset after them."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read()
    found = []
    for line in text.splitlines():
        if any(msg in line for msg in _SLOW_WRITES):
            with contextlib.suppress(ValueError):
                found.append(orjson.loads(line))
    return found, offset + len(text)


def _slow_note(rs: list[dict[str, Any]]) -> str:
    """A cell's note of the slow writes its runs logged (empty: none)."""
    slow = [w for r in rs for w in r.get("slow_writes", [])]
    if not slow:
        return ""
    worst = max(slow, key=lambda w: w.get("ms", 0))
    what = worst.get("action", "log fsync")
    wait = (
        f", {worst['lock_wait_ms']} ms of it waiting for the lock"
        if "lock_wait_ms" in worst
        else ""
    )
    return f" ({len(slow)} slow writes logged, the longest {worst.get('ms')} ms: {what}{wait})"


#: How the flat-out DELETE runs share their ids: by the rates they reach
#: (c=10 ~2-7k deletes a second here, c=100 ~8-30k). Split evenly, c=100 ran
#: out of ids past ~6 s while c=10 left most of its share.
_DELETE_WEIGHTS = {"c=10": 1, "c=100": 4}


def _delete_share(ids: list[str], runs: tuple[str, ...], n: int, seconds: float) -> list[str]:
    """The ids run ``n`` of DELETE deletes, disjoint from the other runs':
    the paced run gets ~3x what its rate needs, the flat-out runs split the
    rest by ``_DELETE_WEIGHTS``. Even counts: wrk's two threads take
    alternate ids."""
    paced = min(len(ids) // 4, int(1500 * seconds)) // 2 * 2
    flat = [r for r in runs if r != PACED]
    total = sum(_DELETE_WEIGHTS.get(r, 1) for r in flat)
    lo, bounds = 0, {}
    for run in flat:
        size = (len(ids) - paced) * _DELETE_WEIGHTS.get(run, 1) // total // 2 * 2
        bounds[run] = (lo, lo + size)
        lo += size
    lo, hi = bounds.get(runs[n], (len(ids) - paced, len(ids)))
    return ids[lo:hi]


def _round(
    redis_uri: str | None,
    seconds: float,
    cases: list[str],
    tmp: pathlib.Path,
    workers: str = "auto",
) -> tuple[dict[tuple[str, str], dict[str, Any]], float | None]:
    from deltawire.testing.harness import collector_process

    seed = tmp / "seed.db"
    if not (tmp / "seed.ids").exists():  # seeded (and folded) once, copied per round
        (tmp / "seed.ids").write_text("\n".join(_seed(f"sqlite:///{seed}", api_points(seconds))))
    ids = (tmp / "seed.ids").read_text().split("\n")
    db = tmp / f"api-{'redis' if redis_uri else 'local'}.db"
    shutil.copyfile(seed, db)
    env = {"REDIS_URI": redis_uri or "", "CACHE_TTL": "30", "LOG_LEVEL": "warning",
           "API_WORKERS": workers}  # fmt: skip
    results: dict[tuple[str, str], dict[str, Any]] = {}
    hit_rate = None
    with collector_process(tmp, store_uri=f"sqlite:///{db}", http=True, env=env) as cp:
        base = f"http://127.0.0.1:{cp.http_port}"
        api = _api_processes(cp.proc.pid)
        writer = _edit_writers(api)
        total = seconds * (sum(len(_runs(c)) for c in cases) + 1) + 60
        logged = 0  # how far the collector's log was read for slow writes
        with _agents(cp.port, total, base):
            chunks = {"put": ids[:EDITED], "patch": ids[:EDITED], "delete": ids[EDITED:]}
            # The dashboard mix first (after the reads): a write run leaves
            # the API a backlog for a while, which the mix should not measure.
            reads = [c for c in cases if c not in WRITES]
            for case in [*reads, "mix", *(c for c in cases if c in WRITES)]:
                if case == "mix":
                    _warm(base, SCRIPTS["mix"])
                    mix = results[("mix", "c=100")] = _wrk(
                        base + URLS["mix"], SCRIPTS["mix"], 100, seconds, tmp
                    )
                    print(f"  mix c=100: {mix}", file=sys.stderr)
                    counts = mix.get("cache") or {}
                    total = sum(counts.values())
                    if total:
                        # x-cache: hit (from the cache), shared (one computation
                        # answered several concurrent misses), miss (computed)
                        hit_rate = counts["hit"] / total
                        mix["served_without_store"] = (counts["hit"] + counts["shared"]) / total
                    continue
                runs = _runs(case)
                for n, run in enumerate(runs):
                    script = SCRIPTS[case]
                    if case in chunks:
                        part = chunks[case]
                        if case == "delete":  # each id once: a share per run
                            part = _delete_share(part, runs, n, seconds)
                        script = script % ",".join(f'"{i}"' for i in part)
                    if run == PACED:
                        script += _PACED_LUA
                    conns = 10 if run == "c=10" else 100
                    before, cpu, wcpu = _commits(base), _cpu(api), _cpu(writer)
                    _, logged = _slow_writes(cp.log_path, logged)  # not this run's
                    r = results[(case, run)] = _wrk(base + URLS[case], script, conns, seconds, tmp)
                    r["slow_writes"], logged = _slow_writes(cp.log_path, logged)
                    r["cpu_us"] = (_cpu(api) - cpu) / max(1, r["n"]) * 1e6
                    r["writer_cpu_us"] = (_cpu(writer) - wcpu) / max(1, r["n"]) * 1e6
                    edits, commits = (a - b for a, b in zip(_commits(base), before, strict=True))
                    r["per_commit"] = edits / commits if commits else 0.0
                    counts = r.get("cache") or {}
                    if case == "get_uncached" and sum(counts.values()):
                        r["computed"] = counts["miss"] / sum(counts.values())
                    if case == "delete" and r["n"] > len(part):  # wrapped: 404s follow
                        r["ids_ran_out"] = True
                    print(f"  {case} {run}: {r}", file=sys.stderr)
    return results, hit_rate


ALL_CASES = ["get_cached", "get_uncached", "query", "aggregate", "post", "put", "patch", "delete"]
_GOALS = {
    "get_cached": "p95<30 p99<50 >=10k/s",
    "get_uncached": "p95<30 p99<50",
    "post": "p95<25",
    "put": "p95<30",
    "patch": "p95<30",
    "delete": "p95<20",
}


def _span(values: list[float], digits: int = 0) -> str:
    lo, hi = min(values), max(values)
    f = f"{{:,.{digits}f}}"
    return f.format(lo) if f.format(lo) == f.format(hi) else f"{f.format(lo)}-{f.format(hi)}"


def _met(case: str, run: str, rs: list[dict[str, Any]]) -> str:
    """Whether every repeat met the case's goal (at c=100 only: the issue's)."""
    if case not in TARGETS or run == "c=10":
        return ""
    ok = all(r["p95"] < TARGETS[case] and r["non2xx"] == 0 and r["n"] > 0 for r in rs)
    if case.startswith("get"):
        ok = ok and all(r["p99"] < 50 for r in rs)
    if case == "get_cached":
        ok = ok and all(r["rps"] >= 10_000 for r in rs)
    if case == "get_uncached":  # every answer computed, or the row measures the cache
        ok = ok and all(r.get("computed", 0.0) >= 0.99 for r in rs)
    return "yes" if ok else "NO"


def render(
    rounds: list[tuple[str, dict[tuple[str, str], dict[str, Any]], float | None, str]],
) -> str:
    """One table: a row per case and run, per backend the range over repeats."""
    titles = list(dict.fromkeys(title for title, _r, _h, _l in rounds))
    head = ["case", *(f"{t}: req/s | p50 | p95 | p99 ms" for t in titles), "goal", "met"]
    keys = list(dict.fromkeys(k for _t, res, _h, _l in rounds for k in res))
    body = []
    for case, run in keys:
        row = [f"{case} {run}"]
        met = []
        for title in titles:
            rs = [
                res[(case, run)] for t, res, _h, _l in rounds if t == title and (case, run) in res
            ]
            if not rs:
                row.append("-")
                continue
            non2xx = sum(r["non2xx"] + r["errors"] for r in rs)
            row.append(" | ".join([_span([r["rps"] for r in rs]), *(_span([r[p] for r in rs], 1)
                                  for p in ("p50", "p95", "p99"))])
                       + (f" ({non2xx} errors/non-2xx)" if non2xx else "")
                       + (" (ids ran out)" if any(r.get("ids_ran_out") for r in rs) else "")
                       + (f" ({_span([100 * r['computed'] for r in rs], 1)} % computed)"
                          if "computed" in rs[0] else "")
                       + (f" ({_span([r['per_commit'] for r in rs], 1)} edits/commit, "
                          f"{_span([r['cpu_us'] for r in rs])} µs API CPU each"
                          f" + {_span([r.get('writer_cpu_us', 0) for r in rs])} its edit writer)"
                          if "per_commit" in rs[0] else "")
                       + _slow_note(rs))  # fmt: skip
            met.append(_met(case, run, rs))
        row += [_GOALS.get(case, "") if run != "c=10" else "", " / ".join(m for m in met if m)]
        body.append(row)
    hits = []
    for title in titles:
        rates = [h * 100 for t, _r, h, _l in rounds if t == title and h is not None]
        hits.append(f"{_span(rates, 1)} %" if rates else "-")
    met_hits = " / ".join(
        "yes" if all(h is not None and h >= 0.9 for t, _r, h, _l in rounds if t == title) else "NO"
        for title in titles
    )
    body.append(["cache hit rate, dashboard mix c=100", *hits, ">= 90 %", met_hits])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    loads = "; ".join(f"{t}: {load}" for t, _r, _h, load in rounds)
    return "\n".join(lines) + f"\nload average (1 min) before / after each round: {loads}"


def _workers_title(n: str) -> str:
    count = auto_workers() if n == "auto" else int(n)
    return f"{count} API worker{'s' if count != 1 else ''}"


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def run(
    seconds: float = 5.0,
    quick: bool = False,
    cases: list[str] | None = None,
    repeat: int = 1,
    workers: tuple[str, ...] = ("auto",),
) -> str:
    from deltawire.testing.servers import run_redis

    if shutil.which("wrk") is None:
        raise SystemExit("bench api needs wrk (Debian: apt-get install wrk)")
    cases = list(ALL_CASES if cases is None else cases)
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        with run_redis(tmp / "redis") as redis_uri:
            backends: list[tuple[str, str | None, str]] = []
            for n in workers:
                named = "" if workers == ("auto",) else f", {_workers_title(n)}"
                backends.append((f"Redis off (LRU){named}", None, n))
                if not quick:
                    backends.append((f"Redis on{named}", redis_uri, n))
            for i in range(repeat):  # interleaved: off, on, off, on...
                for title, uri, n in backends:
                    print(f"round {i + 1}/{repeat}: {title}", file=sys.stderr)
                    before = _load()
                    results, hit_rate = _round(uri, seconds, cases, tmp, n)
                    rounds.append((title, results, hit_rate, f"{before}/{_load()}"))
    header = (
        f"== API: wrk against collector serve while {AGENTS} agents stream "
        f"{AGENT_RATE:g} samples/s; {repeat} interleaved round(s) per backend, ranges over "
        f"rounds; API_WORKERS={','.join(workers)} (auto: {auto_workers()} here); "
        f"{os.cpu_count()} cores shared with whatever else runs (noisy)"
    )
    return header + "\n" + render(rounds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seconds", type=float, default=5.0, help="per wrk run (default 5)")
    ap.add_argument("--quick", action="store_true", help="Redis off only")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds per backend, interleaved; ranges are printed (default 1)")  # fmt: skip
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help=f"comma-separated subset (default: all: {','.join(ALL_CASES)})")  # fmt: skip
    ap.add_argument("--api-workers", default="auto", metavar="N[,N...]",
                    help="API_WORKERS of the collector, or several to compare them in "
                    "interleaved rounds, e.g. 1,auto (default auto)")  # fmt: skip
    args = ap.parse_args(argv)
    workers = tuple(w.strip() for w in args.api_workers.split(",") if w.strip())
    for w in workers:
        if w != "auto" and not (w.isdigit() and int(w) >= 1):
            ap.error(f"--api-workers: {w!r} is not a count >= 1 or auto")
    if not workers:
        ap.error("--api-workers: give at least one")
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(ALL_CASES)}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    print(run(args.seconds, args.quick, cases, args.repeat, workers), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
