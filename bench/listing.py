"""Listing bench (``make bench`` part ``listing``): uncached pages of full
samples, deltawire beside InfluxDB 1.6, the same data, the same wrk.

The same process samples (the recording's, 16 data fields each) are loaded
into a SQLite store (through the store writer's path, as bench.query does) and
into InfluxDB as points (the data paths as fields, ``seq`` as a field), twice:
``session`` and ``host`` as tags (a series per session, as InfluxDB's docs
advise for what one filters by; side "InfluxDB") and as fields (one series;
side "InfluxDB 1 series"); and, as the baseline, deltawire again on a copy of
its store with ``?render=sql`` (side "deltawire, SQL pages": each page's JSON
written in SQL, not by the C renderer). Then wrk asks each, at c=10 and c=100, for pages
whose every URL is new (a random millisecond of the loaded span): deltawire
``GET /metrics?name=process&from=<s.ms>&limit=100`` from ``collector serve``
(its defaults: the in-process LRU on, Redis off; no page is ever asked twice),
InfluxDB ``GET /query?q=SELECT * FROM process WHERE time >= <ms>ms LIMIT
100`` (times as RFC 3339, as deltawire answers). Every answer holds 100 full
samples; each InfluxDB side's first page is compared with deltawire's (the
same samples in the same order with the same values). ``--pages field``
adds pages of one field (``fields=cpu.percent`` / ``SELECT "cpu.percent"``).

Per run: requests/s and p50/p95/p99 (wrk's own histogram, bench.api's Lua
``done`` hook), the server process's CPU per answer (user + system, psutil:
the API process, or influxd), the bytes of an answer's body, and the load
average before and after. The sides alternate (the order flips every round);
``--ingest`` adds rounds, after the quiet ones, of each side while it ingests:
deltawire from bench.api's 100 streaming agents, InfluxDB from line-protocol
writes of the same samples at the same rate, stamped now. Ranges are over
rounds.

    python -m bench.listing [--samples 200000] [--sessions 100] [--seconds 5]
                            [--rounds 2] [--ingest] [--pages full,field]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import pathlib
import random
import re
import shutil
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from deltawire.collector.stores.sqlite import encode_row
from deltawire.testing.harness import collector_process

from .api import _FRESH_RANDOM, AGENT_RATE, AGENTS, _agents, _api_processes, _cpu, _span, _wrk
from .codec import load_recording
from .query import T0, LinesOf, _influx, _load_deltawire, _load_influx, _workdir

__all__ = ["main", "run"]

#: Rows per page: the issue's GET /metrics?limit=100.
PAGE = 100
#: Pages fetched per side to weigh an answer's body (identity encoding).
WEIGH_PAGES = 20
#: How long agents may take to get their first samples stored before a run.
INGEST_START_S = 60.0
#: The InfluxDB writer's beat: AGENT_RATE / this many lines per request.
WRITES_PER_S = 10
#: InfluxDB as it holds older data: its cache written out to TSM files, and
#: those fully compacted, within a second of the last write (its defaults, 10
#: minutes and 4 hours, left most of a fresh load in the cache, which made a
#: page 2-3x dearer and its cost depend on when the last snapshot fell).
INFLUX_DATA = (
    '  cache-snapshot-write-cold-duration = "1s"\n  compact-full-write-cold-duration = "1s"\n'
)
#: How long InfluxDB may take to write out its cache and compact after a load.
SETTLE_S = 120.0
CONCURRENCY = (10, 100)
HOSTS = 4
#: The baseline side: deltawire with its pages written in SQL (?render=sql).
SQL_PAGES = "deltawire, SQL pages"


# -- the data ------------------------------------------------------------------------------


def _process_samples() -> list[dict[str, Any]]:
    return [data for name, _ts, data in load_recording() if name == "process"]


_SAMPLES = _process_samples()


def _data(session: int, i: int) -> dict[str, Any]:
    """Sample i of a session: the recording's process samples, each session
    starting at another one so that a page holds different values."""
    return _SAMPLES[(i + session * 7) % len(_SAMPLES)]


def _ms(session: int, i: int, sessions: int) -> int:
    """Sample i of a session's time in ms: one a second per session, the
    sessions spread over the second (no two samples share a time, so both
    stores have one order to give a page in)."""
    return (T0 + i) * 1000 + session * (1000 // sessions)


def _leaves(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf: a field per path in InfluxDB."""
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def _field(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Schema:
    """How the samples are InfluxDB points: ``session`` and ``host`` as tags
    (a series per session: what InfluxDB's docs advise for what one filters
    and groups by, and what bench.query uses) or as fields (one series)."""

    db: str
    tags: bool

    def line(self, session: int, i: int, ms: int) -> str:
        """One sample as a point (precision ms)."""
        fields = ",".join(f"{k}={_field(v)}" for k, v in _leaves(_data(session, i)))
        who = (f"host=host-{session % HOSTS},session=s-{session}", "")
        if not self.tags:
            who = ("", f',host="host-{session % HOSTS}",session="s-{session}"')
        return f"process{',' if who[0] else ''}{who[0]} {fields}{who[1]},seq={i}i {ms}"


TAGGED = Schema("bench", tags=True)
FLAT = Schema("bench_flat", tags=False)
#: The InfluxDB sides, by schema.
SCHEMAS = {TAGGED: "InfluxDB", FLAT: "InfluxDB 1 series"}


@dataclass(frozen=True)
class DataSet:
    """The loaded samples: ``sessions`` x ``per_session``, one a second each."""

    sessions: int
    per_session: int

    def rows(self, chunk: list[tuple[int, int]]) -> list[Any]:
        return [
            encode_row(f"s-{s}", i, "sample", "process", _ms(s, i, self.sessions) / 1000,
                       f"host-{s % HOSTS}", ("bench",), _data(s, i))
            for s, i in chunk
        ]  # fmt: skip

    def lines(self, schema: Schema) -> LinesOf:
        def lines_of(chunk: list[tuple[int, int]]) -> bytes:
            return "\n".join(schema.line(s, i, _ms(s, i, self.sessions)) for s, i in chunk).encode()

        return lines_of

    @property
    def last_second(self) -> int:
        """The last second (after T0) a page may start in: whole seconds of a
        page of samples follow it."""
        return self.per_session - 1 - -(-PAGE // self.sessions)

    def random_from(self, rng: random.Random) -> int:
        """A time in ms with at least a page of samples after it."""
        return (T0 + rng.randint(0, self.last_second)) * 1000 + rng.randrange(1000)


# -- the two requests, in Python (weighing, the same-answer check) and in wrk's Lua -----------


@dataclass(frozen=True)
class Page:
    """What a page holds: every field (the issue's row) or a chart's one."""

    name: str
    fields: str  # deltawire's fields= ("": the whole sample)
    select: str  # InfluxQL's SELECT list: the same fields, with session, seq and host


PAGES = {
    "full": Page("full samples", "", "*"),
    "field": Page("cpu.percent only", "cpu.percent", '"cpu.percent", "seq", "session", "host"'),
}  # fmt: skip


def deltawire_path(page: Page, seconds: str, millis: str) -> str:
    chosen = f"&fields={page.fields}" if page.fields else ""
    return f"/metrics?name=process&from={seconds}.{millis}&limit={PAGE}{chosen}"


def influx_path(page: Page, seconds: str, millis: str, *, db: str) -> str:
    q = f"SELECT {page.select} FROM process WHERE time >= {seconds}{millis}ms LIMIT {PAGE}"
    return "/query?" + urllib.parse.urlencode({"db": db, "q": q}, quote_via=urllib.parse.quote)


#: A page's path from the seconds and the zero-padded milliseconds of its start.
PathOf = Callable[[Page, str, str], str]


def _path(path_of: PathOf, page: Page, from_ms: int) -> str:
    return path_of(page, str(from_ms // 1000), f"{from_ms % 1000:03d}")


def _lua(path_of: PathOf, page: Page, data: DataSet) -> str:
    """A wrk script asking for a new page each time, its path built by the
    same ``path_of`` (letters as placeholders: URL encoding keeps them)."""
    expr = '"' + path_of(page, "XSECONDSX", "XMILLISX") + '"'
    expr = expr.replace("XSECONDSX", '" .. s .. "').replace("XMILLISX", '" .. ms .. "')
    return (
        _FRESH_RANDOM
        + f"""
request = function()
  local s = {T0} + math.random(0, {data.last_second})
  local ms = string.format("%03d", math.random(0, 999))
  return wrk.format("GET", {expr})
end
"""
    )


# -- the same answer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One sample of a page as both can say it: who, when, which fields."""

    session: str
    ms: int
    seq: int
    fields: dict[str, Any]


def _ms_of(rfc3339: str) -> int:
    """An RFC 3339 UTC time (both answer so, with trailing zeros or not) in ms."""
    stamp = datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return round(stamp.timestamp() * 1000)


def deltawire_page(payload: dict[str, Any]) -> list[Listed]:
    return [
        Listed(d["session"], _ms_of(d["timestamp"]), d["seq"], dict(_leaves(d["data"])))
        for d in payload["items"]
    ]


def influx_page(payload: dict[str, Any]) -> list[Listed]:
    series = payload["results"][0].get("series", [])
    if not series:
        return []
    columns = series[0]["columns"]
    out = []
    for values in series[0]["values"]:
        row = dict(zip(columns, values, strict=True))
        session, ms, seq = row.pop("session"), row.pop("time"), row.pop("seq")
        row.pop("host")
        out.append(
            Listed(session, _ms_of(ms), seq, {k: v for k, v in row.items() if v is not None})
        )
    return out


def compare(ours: list[Listed], theirs: list[Listed]) -> str:
    if len(ours) != len(theirs):
        return f"DIFFERENT: {len(ours)} vs {len(theirs)} samples"
    for n, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b:
            return f"DIFFERENT at sample {n}: {a} vs {b}"
    return f"same {len(ours)} samples, same order, same values"


# -- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    name: str
    base: str
    process: psutil.Process | list[psutil.Process]  # the server processes an answer's CPU is
    path_of: PathOf
    #: what it ingests while "ingesting" runs, for ``seconds``
    feed: Callable[[float], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True)
class Result:
    rps: float
    p50: float
    p95: float
    p99: float
    cpu_us: float
    load: str  # 1-minute load average before/after the run
    errors: int
    answers: int  # 0: none came within the run (its latencies say nothing)


@dataclass(frozen=True)
class RunKey:
    """A row of the table: one kind of run, measured once a round."""

    page: str
    mode: str
    conns: int
    side: str


@dataclass
class Results:
    """Everything measured: each run's rounds, each side's answer size, and
    whether each InfluxDB side answered the same page as deltawire."""

    runs: dict[RunKey, list[Result]] = field(default_factory=dict)
    #: (page, side) -> mean body bytes of an answer
    weights: dict[tuple[str, str], float] = field(default_factory=dict)
    #: (page, side) -> whether it gave deltawire's first page
    verdicts: dict[tuple[str, str], str] = field(default_factory=dict)


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _one(side: Side, script: str, conns: int, seconds: float, tmp: pathlib.Path) -> Result:
    before, cpu = _load(), _cpu(side.process)
    r = _wrk(side.base + "/", script, conns, seconds, tmp)
    n = max(1, r["n"])
    return Result(r["rps"], r["p50"], r["p95"], r["p99"], (_cpu(side.process) - cpu) / n * 1e6,
                  f"{before}/{_load()}", r["non2xx"] + r["errors"], r["n"])  # fmt: skip


def _get(client: httpx.Client, side: Side, page: Page, from_ms: int) -> httpx.Response:
    r = client.get(side.base + _path(side.path_of, page, from_ms))
    r.raise_for_status()
    return r


def _check(client: httpx.Client, sides: list[Side], page: Page, data: DataSet,
           results: Results) -> None:  # fmt: skip
    """Each InfluxDB side's first page compared with deltawire's; each side's
    answer weighed."""
    probe = data.random_from(random.Random(1))
    ours = deltawire_page(_get(client, sides[0], page, probe).json())
    for side in sides[1:]:
        parse = deltawire_page if side.path_of is deltawire_path else influx_page
        verdict = compare(ours, parse(_get(client, side, page, probe).json()))
        results.verdicts[(page.name, side.name)] = verdict
        _progress(f"{page.name}, {side.name}'s first page: {verdict}")
    for side in sides:
        rng = random.Random(7)
        sizes = [len(_get(client, side, page, data.random_from(rng)).content)
                 for _ in range(WEIGH_PAGES)]  # fmt: skip
        results.weights[(page.name, side.name)] = sum(sizes) / len(sizes)


def _stored(base: str) -> float:
    text = httpx.get(base + "/stats", timeout=30).text
    m = re.search(r"^deltawire_documents_stored_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@contextlib.contextmanager
def _deltawire_ingest(ingest_port: int, base: str, seconds: float) -> Iterator[None]:
    """bench.api's agents streaming, once their samples are being stored."""
    start = _stored(base)
    with _agents(ingest_port, seconds + INGEST_START_S):
        deadline = time.monotonic() + INGEST_START_S
        while _stored(base) < start + AGENT_RATE and time.monotonic() < deadline:
            time.sleep(0.2)  # polling a condition with a deadline
        yield


@contextlib.contextmanager
def _influx_ingest(base: str, schema: Schema, sessions: int, _seconds: float) -> Iterator[None]:
    """Line-protocol writes of the same samples at the agents' rate, stamped
    now, for as long as the block runs (``_seconds``: the agents' need)."""
    stop, flowing = threading.Event(), threading.Event()
    per_write = max(1, int(AGENT_RATE / WRITES_PER_S))

    def write() -> None:
        i = 0
        with httpx.Client(timeout=30) as client:
            while not stop.wait(1 / WRITES_PER_S):  # the beat; set: stop now
                now = int(time.time() * 1000)
                body = "\n".join(schema.line(n % sessions, i + n, now + n % 1000)
                                 for n in range(per_write))  # fmt: skip
                client.post(f"{base}/write", params={"db": schema.db, "precision": "ms"},
                            content=body.encode()).raise_for_status()  # fmt: skip
                i += per_write
                if i >= AGENT_RATE:  # a second's worth stored, as the agents' wait
                    flowing.set()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        flowing.wait(INGEST_START_S)
        yield
    finally:
        stop.set()
        thread.join()


def _cache_bytes(base: str) -> int:
    stats = httpx.get(base + "/debug/vars", timeout=30).json()
    return sum(
        v["values"].get("memBytes", 0) for k, v in stats.items() if k.startswith("tsm1_cache")
    )


def _settle(base: str, influxd: psutil.Process) -> None:
    """Until InfluxDB's cache is empty and it rests (compactions done): a
    condition polled with a deadline, said on stderr if not reached."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        cpu = _cpu(influxd)
        time.sleep(1.0)  # a second's CPU: whether it still compacts
        if _cache_bytes(base) == 0 and _cpu(influxd) - cpu < 0.05:
            _progress("InfluxDB: cache written out, at rest")
            return
    _progress(f"InfluxDB: not at rest after {SETTLE_S:.0f} s (cache {_cache_bytes(base):,} B)")


def _progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """What ``run`` measures."""

    samples: int = 200_000
    sessions: int = 100
    seconds: float = 5.0
    rounds: int = 2
    ingest: bool = False
    pages: tuple[str, ...] = ("full",)


def run(plan: Plan, keep: pathlib.Path | None = None) -> str:
    data = DataSet(plan.sessions, plan.samples // plan.sessions)
    results = Results()
    rates = {}
    with _workdir(keep) as tmp, _influx(tmp / "influx", INFLUX_DATA) as influx:
        db = tmp / "listing.db"
        for stale in tmp.glob("listing.db*"):
            stale.unlink()
        _progress(f"loading {plan.samples:,} samples into deltawire")
        rates["deltawire"] = _load_deltawire(db, plan.samples, plan.sessions, data.rows)["rate"]
        httpx.post(f"{influx}/query", params={"q": f"CREATE DATABASE {FLAT.db}"}).raise_for_status()
        for schema in SCHEMAS:
            _progress(f"loading {plan.samples:,} samples into InfluxDB ({SCHEMAS[schema]})")
            rates[SCHEMAS[schema]] = _load_influx(influx, plan.samples, plan.sessions,
                                                  data.lines(schema), "ms", schema.db)  # fmt: skip
        # The same store again, for the baseline: pages written in SQL
        # (?render=sql), not by the C renderer (collector/stores/sqlite_native.py).
        sql_db = tmp / "listing-sql.db"
        for suffix in ("", "-wal"):
            if (db.parent / (db.name + suffix)).exists():
                shutil.copyfile(
                    db.parent / (db.name + suffix), sql_db.parent / (sql_db.name + suffix)
                )
        env = {"REDIS_URI": "", "LOG_LEVEL": "warning"}
        with (
            collector_process(tmp, store_uri=f"sqlite:///{db}", http=True, env=env) as cp,
            collector_process(
                tmp, store_uri=f"sqlite:///{sql_db}?render=sql", http=True, env=env
            ) as sql_cp,
        ):
            api = f"http://127.0.0.1:{cp.http_port}"
            sql_api = f"http://127.0.0.1:{sql_cp.http_port}"
            influxd = next(p for p in psutil.Process().children() if p.name() == "influxd")
            _settle(influx, influxd)
            sides = [Side("deltawire", api, _api_processes(cp.proc.pid), deltawire_path,
                          functools.partial(_deltawire_ingest, cp.port, api)),
                     Side(SQL_PAGES, sql_api, _api_processes(sql_cp.proc.pid), deltawire_path,
                          functools.partial(_deltawire_ingest, sql_cp.port, sql_api))]  # fmt: skip
            sides += [
                Side(name, influx, influxd, functools.partial(influx_path, db=schema.db),
                     functools.partial(_influx_ingest, influx, schema, plan.sessions))
                for schema, name in SCHEMAS.items()
            ]  # fmt: skip
            pages = [PAGES[name] for name in plan.pages]
            with httpx.Client(timeout=60, headers={"accept-encoding": "identity"}) as client:
                for page in pages:
                    _check(client, sides, page, data, results)
            span = plan.seconds * len(CONCURRENCY) * len(pages)
            modes = ["quiet", "ingesting"] if plan.ingest else ["quiet"]
            # every quiet round first: what the ingesting runs leave behind (InfluxDB:
            # a newer shard, its cache, that a page with no upper time bound reads)
            # would otherwise slow the quiet rounds after them
            for mode in modes:
                for n in range(plan.rounds):
                    for side in sides if n % 2 == 0 else sides[::-1]:  # alternating
                        feeding = (
                            side.feed(span) if mode == "ingesting" else contextlib.nullcontext()
                        )
                        with feeding:
                            for page in pages:
                                script = _lua(side.path_of, page, data)
                                for conns in CONCURRENCY:
                                    key = RunKey(page.name, mode, conns, side.name)
                                    r = _one(side, script, conns, plan.seconds, tmp)
                                    results.runs.setdefault(key, []).append(r)
                                    _progress(f"round {n + 1}/{plan.rounds} {key}: {r}")
                        if mode == "ingesting" and side.process is influxd:
                            _settle(influx, influxd)  # its compactions not in the next run
    return render(results, plan, data, rates)


def render(results: Results, plan: Plan, data: DataSet, rates: dict[str, float]) -> str:
    # one label a row (page, mode, c, side): what bench.compare keys a figure by
    head = ["page, mode, c, side", "req/s", "p50 ms", "p95 ms", "p99 ms", "CPU µs/answer",
            "bytes/answer", "load 1m before/after"]  # fmt: skip
    order = (
        [PAGES[p].name for p in plan.pages],
        ["quiet", "ingesting"],
        ["deltawire", SQL_PAGES, *SCHEMAS.values()],
    )

    def rank(key: RunKey) -> tuple[int, int, int, int]:
        return (
            order[0].index(key.page),
            order[1].index(key.mode),
            key.conns,
            order[2].index(key.side),
        )

    body = []
    for key in sorted(results.runs, key=rank):
        rs = results.runs[key]
        answered = [r for r in rs if r.answers]  # latencies and CPU of runs with answers
        errors = sum(r.errors for r in rs)
        notes = (f" ({errors} errors/non-2xx)" if errors else "") + (
            f" ({len(rs) - len(answered)} run(s) without one answer)" if len(answered) < len(rs)
            else "")  # fmt: skip
        body.append([f"{key.page}, {key.mode}, c={key.conns}, {key.side}", _span([r.rps for r in rs]),
                     *(_span([getattr(r, p) for r in answered], digits) if answered else "-"
                       for p, digits in (("p50", 1), ("p95", 1), ("p99", 1), ("cpu_us", 0))),
                     f"{results.weights[(key.page, key.side)]:,.0f}",
                     ", ".join(r.load for r in rs) + notes])  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    samples = data.sessions * data.per_session
    return "\n".join([
        f"== listing: uncached pages of {PAGE} process samples ({len(dict(_leaves(_SAMPLES[0])))}"
        f" data fields each), every URL new; {samples:,} samples ({data.sessions} sessions x"
        f" {data.per_session:,} s) in each; wrk -t2, {plan.seconds:g} s a run, {plan.rounds}"
        f" round(s), sides alternating; ranges over rounds; {os.cpu_count()} cores shared",
        *lines,
        *(f"{page}: {side}'s first page beside deltawire's: {v}"
          for (page, side), v in results.verdicts.items()),
        f"bytes/answer: the body (identity encoding), mean of {WEIGH_PAGES} pages. {SQL_PAGES}:"
        " the same store with ?render=sql (each page's JSON written in SQL, not by the C"
        " renderer). InfluxDB: session and host as tags (a series per session); InfluxDB 1"
        " series: as fields",
        "loaded at (samples/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items())
        + f"; ingesting: deltawire {AGENTS} agents, InfluxDB line protocol, {AGENT_RATE:g}"
        " samples/s each",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.listing", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--samples", type=int, default=200_000,
                    help="samples loaded into both (default 200000)")  # fmt: skip
    ap.add_argument("--sessions", type=int, default=100, help="sessions (default 100)")
    ap.add_argument("--seconds", type=float, default=5.0, help="per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds; each runs both sides, alternating (default 2)")  # fmt: skip
    ap.add_argument("--ingest", action="store_true",
                    help="also run both while each ingests (default: quiet only)")  # fmt: skip
    ap.add_argument("--pages", default="full",
                    help="comma-separated: full (every field, the issue's row), field"
                    " (cpu.percent only, fields=) (default: full)")  # fmt: skip
    ap.add_argument("--dir", type=pathlib.Path, default=None,
                    help="work here and keep it (default: a temporary directory, removed)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.rounds < 1 or not 1 <= args.sessions <= 1000:
        ap.error("--rounds must be >= 1, --sessions 1-1000 (a millisecond of each second each)")
    if args.samples // args.sessions < PAGE // args.sessions + 2:
        ap.error(f"--samples too few: every page needs {PAGE} samples after a random time")
    pages = tuple(p for p in args.pages.split(",") if p)
    unknown = set(pages) - set(PAGES)
    if unknown or not pages:
        ap.error(f"--pages: unknown {sorted(unknown)}; known: {', '.join(PAGES)}")
    plan = Plan(args.samples, args.sessions, args.seconds, args.rounds, args.ingest, pages)
    print(run(plan, args.dir), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
