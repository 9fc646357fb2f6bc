"""The rollup folder of a SQLite store: a process of its own.

Started by ``SqliteStore.start_checkpointer`` (in the collector's writer), it
folds new documents into the rollup tiers behind the watermark
(``SqliteStore.fold_forever``), at a lower CPU priority than ingest, in short
write transactions. It exits at EOF on its stdin: when the store closes, or
when the process that started it dies (the pipe closes with it).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import BinaryIO, Final

__all__ = ["main"]

log = logging.getLogger("deltawire.collector.stores.sqlite_folder")

#: Niceness added to the folder's: ingest and acks come first, and on a
#: paced load the idle CPU between batches does the folding.
NICE: Final = 10


def _stopper(inp: BinaryIO) -> Callable[[float], bool]:
    """``stop(timeout)``: waits up to ``timeout`` s; True once ``inp`` is at EOF."""
    fd = inp.fileno()

    def stop(timeout: float) -> bool:
        if not select.select([fd], [], [], timeout)[0]:
            return False
        return not os.read(fd, 4096)  # anything else written to us is ignored

    return stop


def main(argv: list[str] | None = None) -> int:
    from deltawire.logs import setup_logging

    from .base import StoreUnavailable
    from .sqlite import SqliteStore

    ap = argparse.ArgumentParser(
        prog="python -m deltawire.collector.stores.sqlite_folder",
        description="Fold a SQLite store's new documents into its rollup tiers until EOF on "
        "stdin (started by the collector's store writer).",
    )
    ap.add_argument("--store", required=True, help="the sqlite:/// URI of the store")
    ap.add_argument("--log-level", default="warning", help="default: warning")
    ap.add_argument("--nice", type=int, default=NICE, help=f"niceness to add (default: {NICE})")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    # The owner stops us by closing our stdin: a Ctrl-C or SIGTERM to the
    # process group must not cut a write transaction short (it would be
    # rolled back anyway, but the log would say it failed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.nice:
        os.nice(args.nice)
    try:
        store = SqliteStore(args.store)
    except ValueError as exc:
        ap.error(str(exc))
    stop = _stopper(sys.stdin.buffer)
    try:
        while True:
            try:
                store.open()
                break
            except StoreUnavailable as exc:  # locked or busy now: later
                log.warning("cannot open the store yet; retrying", extra={"error": str(exc)})
                if stop(1.0):
                    return 0
        store.fold_forever(stop)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
