"""/query bench: parse time per prompt, and how many held-out prompts are understood.

Held-out prompts are never tuned on, and a set whose misses led to fixes is
held out no longer. ``prompts_heldout13.jsonl`` is the held-out set: 50
prompts written blind (from the user docs and the data set, never the parser
or its tests) and committed before any measurement, by a third writer; the
lead measured it once, at the end (2026-11-30 00:07 UTC, on main 6daee0d):
**49 of 50 (98%)**, and no fix comes from it. Its one miss is a convention:
"using more than 600mb of memory" was written expecting the binary reading
(629,145,600 bytes) the docs then gave, and the parser now reads MB as the
standard's 10^6 (its note gives the other reading); with the old convention
it would be 50 of 50. Over the three sets written last (11, 12, 13), first
measurements are 44 + 43 + 49 = 136 of 150 (90.7%).

Set 14 (``prompts_heldout14.jsonl``: 50 prompts, a fourth writer, the same
rules; committed before it was measured) was measured once, on main aa20625
(2026-12-01 11:30 UTC): **45 of 50 (90%)**. It is seen now: its misses led to
fixes by category, each with siblings in the tuning table: a time of day
before its day ("since 3pm yesterday" was refused as two windows); "am" or
"pm" apart from the hour ("since 10 am" lost its window); a count before the
group it ranks ("3 sessions with the highest p90 rss" gave the default 10);
"any host over 400M rss?" asks which hosts (with a threshold: "did any
session crash" stays a sessions question); the people and programs around a
ticket ("a question from support: a customer says their app died") are not
names. After them it scores 50 of 50. Over the four sets written blind last
(11, 12, 13, 14), first measurements are 44 + 43 + 49 + 45 = 181 of 200
(90.5%).

Set 12 (``prompts_heldout12.jsonl``, written blind with set 11) is seen now:
**43 of 50 first measured** (86%, below the 90% goal). Its misses led to fixes
of their categories, by general rules, each with siblings in the tuning
table: "at the moment", "as of now" read as the latest value (it was an
average); a session that fails or failed is one that exited non-zero (every
session was listed; "errors by session" stay error events); two sessions
compared as two hosts are (by session, their rows kept); a time window in an
earlier sentence (a ticket's story: "a ticket from this morning; ... in the
last 24 hours") gives way to the ask's in a later one, with a note (in one
sentence two windows are still refused); a data path named in the singular
("thread count" -> threads); hedges ("roughly", "approximately") are filler,
not names; sizes follow the standard: MB/GB (and spoken "meg"/"gig") are
powers of 10, MiB/GiB and a bare M/G (as top, free -h and psutil's
bytes2human print them) powers of 2, and the note gives both readings. After
them set 12 scores 50 of 50. Set 11 (first 44 of 50) scores 50 of 50 with
the size standard; set 4 has one prompt ("800mb") whose expectation was
written under the old binary reading, so the seen sets score 479 of 480 until
that expectation follows the standard. The blind sets' first measurements:
100% (set 9), 96-100% (set 10, another writer), 88% (set 11), 86% (set 12):
each fresh writer finds fresh gaps, so 90% on questions nobody has asked yet
is not shown.

The others are shown as seen: ``prompts_heldout.jsonl`` (written before the
parser; first measured 36 of 42, 85.7%), ``prompts_heldout2.jsonl`` (39 of 45,
86.7%), ``prompts_heldout3.jsonl`` (36 of 42, 85.7%), ``prompts_heldout4.jsonl``
(37 of 41, 90.2%), ``prompts_heldout5.jsonl`` (35 of 40, 87.5%),
``prompts_heldout6.jsonl`` (37 of 40, 92.5%), ``prompts_heldout7.jsonl`` (40 of
40), ``prompts_heldout8.jsonl`` (33 of 40, 82.5%), set 9 (50 of 50), set 10 (50
of 50: no fix came from it), set 11 (44 of 50), set 12 (43 of 50); each was
fixed after its first measurement where it missed. The tuning table
(``tests/api/nl_prompts.py``) is the baseline column. Parse time is each
prompt's fastest of several runs (the machine is shared: the fastest run is
its cost, the rest is waiting for a core), against the 1 ms goal. ``/query``
end to end runs in process on the known-answer data set, through the same
store calls as the API; and at a million samples (``scale``; the query
bench's data), each question as typed (its start rounded to a tier edge)
beside the same with the exact start.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import runpy
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from deltawire.collector.api.nl_vocab import Vocabulary
from deltawire.collector.api.nlquery import PromptError, parse_prompt
from deltawire.testing import nl_dataset

from .report import Table

__all__ = ["heldout", "main", "run"]

HERE = pathlib.Path(__file__).resolve().parent
HELDOUT = HERE / "prompts_heldout13.jsonl"
SEEN = tuple(HERE / f"prompts_heldout{n}.jsonl" for n in ("", *"23456789", "10", "11", "12", "14"))
TUNING = HERE.parent / "tests" / "api" / "nl_prompts.py"


def heldout(path: pathlib.Path = HELDOUT) -> list[tuple[str, dict[str, Any]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["prompt"], r["expect"]) for r in rows]


def _tuning() -> list[tuple[str, dict[str, Any]]]:
    if not TUNING.exists():  # an installed copy without the tests
        return []
    # Read as a file, not imported: nothing outside tests imports tests.
    return list(runpy.run_path(str(TUNING))["PROMPTS"])


def _accuracy(
    prompts: list[tuple[str, dict[str, Any]]], vocab: Vocabulary
) -> tuple[float, list[str]]:
    wrong = [f"{p!r}: {why}" for p, e in prompts if (why := nl_dataset.check(p, e, vocab))]
    return 100.0 * (len(prompts) - len(wrong)) / max(1, len(prompts)), wrong


def _parse_times(prompts: list[str], vocab: Vocabulary, rounds: int) -> list[float]:
    best = dict.fromkeys(prompts, float("inf"))
    for _ in range(rounds):
        for p in prompts:
            t0 = time.perf_counter()
            try:
                parse_prompt(p, nl_dataset.NOW, vocab)
            except PromptError:
                pass
            best[p] = min(best[p], time.perf_counter() - t0)
    return sorted(v * 1e6 for v in best.values())


def _large_vocabulary(sessions: int, hosts: int) -> Vocabulary:
    base = nl_dataset.catalog()
    return Vocabulary(
        replace(
            base,
            sessions=base.sessions
            | {f"sess-{i:06d}-{i * 7919 % 100_000:05d}" for i in range(sessions)},
            hosts=base.hosts | {f"node-{i}.dc{i % 7}" for i in range(hosts)},
        )
    )


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _query_latency(rounds: int) -> tuple[list[float], int]:
    """Milliseconds per /query through the app, on a store with the data set."""
    from starlette.testclient import TestClient

    from deltawire.collector.api import Deps, LocalCache, create_app
    from deltawire.collector.stores import open_store

    prompts = [p for p, e in heldout() if e.get("status") != 422]
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/nl.db")
        store.open()
        try:
            nl_dataset.load(store, nl_dataset.build(datetime.now(UTC)))
            app = create_app(Deps(store, LocalCache(size=0)))
            times: list[float] = []
            failures = 0
            with TestClient(app) as client:
                for _ in range(rounds):
                    for p in prompts:
                        t0 = time.perf_counter()
                        r = client.get("/query", params={"prompt": p})
                        times.append((time.perf_counter() - t0) * 1000)
                        failures += r.status_code != 200
        finally:
            store.close()
    return sorted(times), failures


#: Questions asked at scale: each as typed (a window that ends now, its start
#: rounded to a tier edge) and with the exact start spelt out (answered as
#: given: raw rows at the ragged edge). {since} is the exact start.
_AT_SCALE: Final = (
    ("avg cpu in the last hour", "avg cpu since {since}", 3600),
    ("max memory by host in the last 2 hours", "max memory by host since {since}", 7200),
    ("count samples per session in the last hour", "count samples per session since {since}", 3600),
    ("top 5 sessions by cpu in the last 90 minutes", "top 5 sessions by cpu since {since}", 5400),
    ("hosts with cpu over 90 in the last hour", "hosts with cpu over 90 since {since}", 3600),
)


def _at_scale(samples: int, reps: int) -> Table:
    """/query (parse, then the engine) on the query bench's samples (100
    sessions, 4 hosts, one sample a second each), "now" 17.3 s past its end."""
    from deltawire.collector.api.nl_run import answer
    from deltawire.collector.api.views import doc_out, session_out
    from deltawire.collector.stores import open_store

    from .query import T0, _load_deltawire

    table = Table(
        f"/query through the engine, {samples:,} samples, SQLite (ms, {reps} runs; "
        "as typed: window start rounded to a tier edge)",
        ["as typed p50", "exact start p50", "as typed p95", "exact start p95"],
    )
    with tempfile.TemporaryDirectory(prefix="deltawire-nl-bench-") as tmp:
        db = pathlib.Path(tmp) / "nl.db"
        _load_deltawire(db, samples, 100)
        store = open_store(f"sqlite:///{db}")
        store.open()
        try:
            vocab = Vocabulary(store.catalog())
            now = datetime.fromtimestamp(T0 + samples // 100 - 17.3, UTC)

            def timed(prompt: str) -> list[float]:
                out = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    answer(store, vocab, parse_prompt(prompt, now, vocab), doc_out, session_out)
                    out.append((time.perf_counter() - t0) * 1000)
                return sorted(out)

            for typed, exact, seconds in _AT_SCALE:
                since = datetime.fromtimestamp(now.timestamp() - seconds, UTC)
                a = timed(typed)  # interleaved with b: the same machine load
                b = timed(exact.format(since=since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
                table.row(typed, _pct(a, 0.5), _pct(b, 0.5), _pct(a, 0.95), _pct(b, 0.95),
                          goal="p95 < 100 ms", lower_is_better=True)  # fmt: skip
        finally:
            store.close()
    return table


def run(scale: float = 1.0) -> list[Table]:
    vocab = Vocabulary(nl_dataset.catalog())
    held = heldout()
    seen = [p for path in SEEN for p in heldout(path)]
    tuning = _tuning()
    held_pct, held_wrong = _accuracy(held, vocab)
    seen_pct, _ = _accuracy(seen, vocab)
    tune_pct, _ = _accuracy(tuning, vocab)
    acc = Table("/query: prompts understood correctly (%)", ["this set", "tuning table"])
    acc.row(
        f"held out, no fix from it ({len(held)})", held_pct, tune_pct, goal=">= 90%", ratio=False
    )
    acc.row(f"seen: sets 1-12 and 14 ({len(seen)})", seen_pct, tune_pct, ratio=False)
    rounds = max(3, int(20 * scale))
    times = _parse_times([p for p, _ in held + seen + tuning], vocab, rounds)
    parse = Table(f"/query parse time per prompt (us, fastest of {rounds} runs)",
                  ["deltawire", "goal"])  # fmt: skip
    for label, q in (("median", 0.5), ("p95", 0.95), ("max", 1.0)):
        parse.row(label, _pct(times, q), 1000.0, goal="< 1000 us", lower_is_better=True)
    parse.row("mean", statistics.fmean(times), 1000.0, goal="< 1000 us", lower_is_better=True)
    # The same prompts against a large store's vocabulary: refusals compare the
    # word with every name, so they are what grows.
    big = _large_vocabulary(10_000, 1_000)
    times = _parse_times([p for p, _ in held + seen + tuning], big, max(3, rounds // 4))
    for label, q in (("median, 11k names", 0.5), ("p95, 11k names", 0.95), ("max, 11k names", 1.0)):
        parse.row(label, _pct(times, q), 1000.0, goal="< 1000 us", lower_is_better=True)
    lat, failures = _query_latency(max(1, int(5 * scale)))
    e2e = Table(f"/query end to end in process, small data set (ms; {failures} non-200)",
                ["deltawire", "goal"])  # fmt: skip
    e2e.row("p50", _pct(lat, 0.5), 100.0, goal="p95 < 100 ms", lower_is_better=True)
    e2e.row("p95", _pct(lat, 0.95), 100.0, goal="p95 < 100 ms", lower_is_better=True)
    e2e.row("p99", _pct(lat, 0.99), 200.0, goal="p99 < 200 ms", lower_is_better=True)
    for line in held_wrong:
        print("  held-out miss:", line)
    scaled = _at_scale(int(1_000_000 * scale), max(3, int(10 * scale)))
    return [acc, parse, e2e, scaled]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.nlquery", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the data set and the runs (default: 1.0 = 1,000,000 samples; "
                    "0.1 = quick)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be above 0")
    for table in run(args.scale):
        print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
