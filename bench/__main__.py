"""``make bench``: every benchmark, each figure printed beside its baseline.

    python -m bench [--only codec,zmem,ingest,agent,store,nlquery,api,listing,dashboard]
                    [--scale 0.2]

--scale multiplies sample counts and durations (1.0: the full run, several
minutes; 0.1: a quick look)."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["main"]

PARTS = ("codec", "zmem", "ingest", "agent", "store", "nlquery", "api", "listing", "dashboard")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    for part in parts:
        started = time.monotonic()
        print(f"\n### {part}", flush=True)
        if part == "codec":
            from . import codec

            print(codec.run(seconds=max(0.5, 2.0 * args.scale)).render(), flush=True)
            print(codec.bandwidth(seconds=max(1.0, 4.0 * args.scale)).render(), flush=True)
        elif part == "zmem":
            from . import zmem

            # 10,000 held sessions at scale >= 1 (minutes, ~2 GB); 1,000 below.
            counts = (1000, 10000) if args.scale >= 1 else (1000,)
            print(zmem.run(counts, bombs=max(20, int(200 * args.scale))).render(), flush=True)
        elif part == "ingest":
            from . import ingest

            for table in ingest.run(args.scale):
                print(table.render(), flush=True)
        elif part == "agent":
            from . import agent

            seconds = max(10.0, 60.0 * args.scale)
            for table in agent.run(seconds, (1.0, 0.1)):
                print(table.render(), flush=True)
        elif part == "query":
            from . import query

            # 1M samples at scale 1 (python -m bench.query --samples 10000000 for 10M)
            query.run(max(20_000, int(1_000_000 * args.scale)), 100, 30,
                      max(20_000, int(200_000 * args.scale)))  # fmt: skip
        elif part == "store":
            from . import store

            for table in store.run(args.scale):
                print(table.render(), flush=True)
        elif part == "api":
            from . import api

            print(api.run(seconds=max(2.0, 5.0 * args.scale)), flush=True)
        elif part == "listing":
            from . import listing

            # uncached pages of full samples beside InfluxDB, quiet and ingesting
            plan = listing.Plan(samples=max(20_000, int(200_000 * args.scale)),
                                seconds=max(2.0, 5.0 * args.scale), ingest=True)  # fmt: skip
            print(listing.run(plan), flush=True)
        elif part == "dashboard":
            from . import dashboard

            for table in dashboard.run(runs=max(3, round(7 * args.scale))):
                print(table.render(), flush=True)
        elif part == "nlquery":
            from . import nlquery

            for table in nlquery.run(args.scale):
                print(table.render(), flush=True)
        print(f"({part}: {time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
