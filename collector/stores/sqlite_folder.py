"""The rollup folder of a SQLite store: a process of its own.

Started by ``SqliteStore.start_checkpointer`` (in the collector's writer), it
folds new documents into the rollup tiers behind the watermark
(``SqliteStore.fold_forever``), at a lower CPU priority than ingest, in short
write transactions. It exits at EOF on its stdin: when the store closes, or
when the process that started it dies (the pipe closes with it).

Its CPU policy is ``SCHED_IDLE`` where the kernel lets it come back
(``_leaves_idle``): it folds only on CPU that ingest leaves idle. Niced
alone it still took ~7-10% of a saturated machine from ingest (CFS gives
nice 10 a weight of 110 against 1024), and it is always behind there, so a
cheaper fold would not have given that share back. A ``SCHED_IDLE`` process
preempted while it holds the store's write lock would stall the ingest
writer for as long as the machine stays busy (priority inversion), so it
returns to the normal policy around every write transaction, the
wait for the lock included (``SqliteStore.lock_priority``), at the
priority it was started with (``_Policy``). Should it stay behind the writer
for ``STARVED_S`` (a machine kept busy by other work may never leave CPU
idle), it rests niced instead, as before, until it catches up.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


#: Behind the writer this long without a break (every slice it absorbs is
#: a full one), the folder rests at the normal niced policy instead of
#: ``SCHED_IDLE`` until it catches up: on a machine kept busy by other work,
#: idle CPU may never come, and the tail every query reads raw would grow
#: without end. Longer than a burst (the saturated bench's is ~3 s).
STARVED_S: Final = 10.0


class _Policy:
    """The folder's CPU policy: it rests at ``SCHED_IDLE`` (or, ``starved``,
    at the normal policy, niced) and around every write transaction
    (``normal``) takes the normal policy at the priority it was started with
    (the writer's: the nice ``NICE`` adds is taken off too), so that a
    transaction is over as fast as the writer's own are."""

    def __init__(self, base: int, niced: int) -> None:
        self.base = base  # the nice value inside write transactions
        self.niced = niced  # the nice value at rest
        self.starved = False
        self._behind_since: float | None = None

    def rest(self) -> None:
        policy = os.SCHED_OTHER if self.starved else os.SCHED_IDLE
        os.sched_setscheduler(0, policy, os.sched_param(0))

    @contextmanager
    def normal(self) -> Iterator[None]:
        os.setpriority(os.PRIO_PROCESS, 0, self.base)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        try:
            yield
        finally:
            self.rest()
            os.setpriority(os.PRIO_PROCESS, 0, self.niced)

    def paced(self, stop: Callable[[float], bool]) -> Callable[[float], bool]:
        """``stop`` for ``fold_forever``, which asks it after every slice:
        with a timeout when the slice was short (caught up with the writer),
        with 0 while behind. Starved past ``STARVED_S``, rest niced instead."""

        def paced_stop(timeout: float) -> bool:
            now = time.monotonic()
            if timeout > 0:
                self._behind_since = None
                starved = False
            else:
                self._behind_since = self._behind_since or now
                starved = self.starved or now - self._behind_since > STARVED_S
            if starved != self.starved:
                self.starved = starved
                self.rest()
                log.info("folder priority", extra={"starved": starved})
            return stop(timeout)

        return paced_stop

    def works(self) -> bool:
        """Whether this process may take ``SCHED_IDLE`` and leave it again
        for its former priority: that needs CAP_SYS_NICE or a high enough
        RLIMIT_NICE (root in a container may lack the first). Tried in a
        forked child, which exits at once: a folder stuck at idle priority
        would hold the write lock unscheduled."""
        if not hasattr(os, "SCHED_IDLE"):
            return False  # not Linux
        pid = os.fork()
        if pid == 0:  # pragma: no cover  (the child)
            code = 1
            try:
                self.rest()
                with self.normal():
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) == 0


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
    ap.add_argument("--no-idle", dest="idle", action="store_false",
                    help="fold at the niced normal policy only, never SCHED_IDLE "
                    "(default: SCHED_IDLE outside write transactions, where the kernel allows)")  # fmt: skip
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    # The owner stops us by closing our stdin: a Ctrl-C or SIGTERM to the
    # process group must not cut a write transaction short (it would be
    # rolled back anyway, but the log would say it failed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if args.nice:
        os.nice(args.nice)
    policy = _Policy(base, os.getpriority(os.PRIO_PROCESS, 0))
    try:
        store = SqliteStore(args.store)
    except ValueError as exc:
        ap.error(str(exc))
    stop = _stopper(sys.stdin.buffer)
    fold_stop = stop
    if args.idle and policy.works():
        policy.rest()
        store.lock_priority = policy.normal
        fold_stop = policy.paced(stop)
    else:
        log.info("folding at the normal CPU policy (SCHED_IDLE not available or not asked)")
    try:
        while True:
            try:
                store.open()
                break
            except StoreUnavailable as exc:  # locked or busy now: later
                log.warning("cannot open the store yet; retrying", extra={"error": str(exc)})
                if stop(1.0):
                    return 0
        store.fold_forever(fold_stop)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
