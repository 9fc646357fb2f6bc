"""Edit writer bench: the CPU of ``apply_jobs`` (what the API's edit writer
process runs for each group of writes) per PUT, PATCH and DELETE, on a seeded
SQLite store, in this process: no HTTP, no wrk, no agents, so it is steady on
a shared machine where ``bench.api``'s latencies are not.

Groups of ``--group`` jobs (default 29: what a group commit carried flat out
at c=100 in ``bench.api``), pickled and unpickled as they cross the pipe, and
their answers pickled back (``edit_writer.frame``); ids walked as
``bench.api``'s wrk scripts walk them (two threads, step 7 for PUT and PATCH;
DELETE each id once), PUT and PATCH with ``bench.api``'s bodies. CPU is this
process's (user + system: SQLite's work and the fsync's included), per edit;
each round runs every case once, and the table gives the best and the median
round (the rounds are interleaved, so a busy spell hits every case).

A/B of two trees: run it with each tree first on the path, e.g.
``PYTHONPATH=../other python -m bench.edits`` beside ``python -m bench.edits``.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from typing import Any

from deltawire.collector.api.auth import Role
from deltawire.collector.api.edit_jobs import EditJob, apply_jobs
from deltawire.collector.api.edit_writer import frame
from deltawire.collector.stores.base import Create
from deltawire.collector.stores.sqlite import SqliteStore

from .report import Table, show

__all__ = ["main", "run"]

CASES = ("put", "patch", "delete")
_OPS = {"put": "replace", "patch": "patch", "delete": "delete"}
# The seed starts two days ago on a whole hour, as bench.api's.
_T0 = float(int(time.time()) // 3600 * 3600 - 2 * 86400)


def _seed(store: SqliteStore, n: int) -> list[str]:
    """``n`` API points, a thousand per transaction, folded into the tiers."""
    ids: list[str] = []
    for lo in range(0, n, 1000):
        batch = [Create({"name": "bench.point", "value": float(i), "ts": _T0 + i})
                 for i in range(lo, min(n, lo + 1000))]  # fmt: skip
        ids += [doc["id"] for doc in store.apply_edits(batch)]  # type: ignore[index]
    store.fold_rollups(n)
    return ids


class _Walk:
    """The jobs of each case, as bench.api's wrk scripts make them."""

    def __init__(self, ids: list[str]) -> None:
        self.ids, self.n, self.step, self.gone = ids, 0, 0, len(ids) // 2

    def job(self, case: str) -> EditJob:
        self.n += 1
        if case == "delete":  # each id once, from the half PUT and PATCH never touch
            self.gone += 1
            return EditJob("delete", self.ids[self.gone - 1], Role.write)
        self.step += 1
        k = (self.step // 2 * 7 + self.step % 2) % (len(self.ids) // 2)
        body: dict[str, Any] = (
            {"name": "bench.point", "value": self.n, "tags": ["bench"], "timestamp": _T0 + k}
            if case == "put"
            else {"value": self.n, "data": {"k": self.n}}
        )
        return EditJob(_OPS[case], self.ids[k], Role.write, body)


def _group(store: SqliteStore, jobs: list[EditJob]) -> float:
    """CPU seconds of one group as the edit writer handles it."""
    payload = pickle.dumps((1, jobs), protocol=pickle.HIGHEST_PROTOCOL)
    start = time.process_time()
    group, got = pickle.loads(payload)
    answers = apply_jobs(store, got)
    frame(group, answers)
    spent = time.process_time() - start
    bad = [a.status for a in answers if a.status not in (200, 204)]
    if bad:
        raise RuntimeError(f"unexpected answers {bad[:5]}")
    return spent


def run(cases: list[str], rounds: int, groups: int, size: int) -> Table:
    with tempfile.TemporaryDirectory(prefix="bench-edits-") as tmp:
        store = SqliteStore(f"sqlite:///{tmp}/edits.db")
        store.open()
        try:
            deletes = rounds * groups * size if "delete" in cases else 0
            print(f"seeding {20_000 + 2 * deletes:,} points ...", file=sys.stderr, flush=True)
            walk = _Walk(_seed(store, 20_000 + 2 * deletes))
            per_edit: dict[str, list[float]] = {c: [] for c in cases}
            for r in range(rounds):
                for case in cases:
                    spent = sum(_group(store, [walk.job(case) for _ in range(size)])
                                for _ in range(groups))  # fmt: skip
                    per_edit[case].append(1e6 * spent / (groups * size))
                    # The folder rebuilds the dirty buckets between rounds (in
                    # the served store: its own process), as it would meanwhile.
                    store.fold_rollups(1_000_000)
                print(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{c} {per_edit[c][-1]:.0f} µs" for c in cases), file=sys.stderr, flush=True)  # fmt: skip
        finally:
            store.close()
    table = Table(
        f"Edit writer: CPU per edit of apply_jobs, groups of {size}, {groups} groups a round, "
        f"{rounds} interleaved rounds (this process, user + system)",
        ["best round µs", "median round µs"],
        baseline=2,  # none: an A/B is this command on each tree (see above)
    )
    for case in cases:
        vals = per_edit[case]
        table.row(case, min(vals), statistics.median(vals), ratio=False)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.edits",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    ap.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {','.join(CASES)} (default: all)",
    )
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--groups", type=int, default=60, help="groups per case a round (default 60)")
    ap.add_argument("--group", type=int, default=29, help="jobs per group (default 29)")  # fmt: skip
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        ap.error(f"unknown case(s) {unknown}; choose from {','.join(CASES)}")
    if min(args.rounds, args.groups, args.group) < 1:
        ap.error("--rounds, --groups and --group must be at least 1")
    return show([run(cases, args.rounds, args.groups, args.group)])


if __name__ == "__main__":
    raise SystemExit(main())
