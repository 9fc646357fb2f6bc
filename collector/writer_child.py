"""The store writer's child process (``python -m deltawire.collector.writer_child``)
and the blocking commit both writers share (see writer.py).

Apart from writer.py because this is all the child needs: it must not import
trio, the ingest side's pipes and supervisor, at each of its starts (~0.1 s of
CPU, one writer per collector).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

import orjson

from deltawire.protocol import Document

from .lifeline import ORPHAN_GRACE_S, exit_with_parent
from .stores import open_store
from .stores.base import STORE_BACKOFF, Row, Store, StoreError, StoreUnavailable

__all__ = ["BatchResult", "commit_batch", "commit_rows", "main", "serve"]

log = logging.getLogger("deltawire.collector.writer")

_HEADER = struct.Struct(">I")
#: The child's first frame once its store is open, before any reply.
_READY: Final = b'{"ready":true}'


@dataclass(slots=True)
class BatchResult:
    #: (index in the batch, reason) of documents the store refused for good
    rejected: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    retries: int = 0


def _nobody_left() -> None:
    """``alive`` of a writer whose caller always waits for the answer."""


def commit_batch(
    store: Store, docs: Sequence[Document], alive: Callable[[], None] = _nobody_left
) -> BatchResult:
    """Commit ``docs``, retrying while the store is unavailable (blocking).

    ``alive`` is called before each attempt: it raises to give up once
    nobody is waiting for the answer any more."""
    return _commit(store.write_batch, list(docs), alive)


def commit_rows(
    store: Store, rows: list[Row], alive: Callable[[], None] = _nobody_left
) -> BatchResult:
    """``commit_batch`` for rows made by the store's ``encode_row``."""
    return _commit(store.write_rows, rows, alive)


def _commit(write: Any, items: list[Any], alive: Callable[[], None]) -> BatchResult:
    result = BatchResult()
    started = time.perf_counter()
    try:
        result.retries = _retrying(write, items, alive)
    except StoreError as exc:
        log.error("store refused a batch; isolating the documents it cannot store",
                  extra={"error": repr(exc), "docs": len(items)})  # fmt: skip
        for i, item in enumerate(items):
            try:
                result.retries += _retrying(write, [item], alive)
            except StoreError as one:
                log.error("document refused by the store", extra={"index": i, "error": repr(one)})
                result.rejected.append((i, str(one)[:200]))
    result.seconds = time.perf_counter() - started
    return result


def _worth_retrying(exc: Exception) -> bool:
    """Unavailable, or unknown (dropping would lose data); not a refusal."""
    return isinstance(exc, StoreUnavailable) or not isinstance(exc, StoreError)


def _retrying(write: Any, docs: Sequence[Any], alive: Callable[[], None]) -> int:
    """``write(docs)`` until it succeeds; how many retries that took."""
    for attempt in STORE_BACKOFF.attempts(on=_worth_retrying):
        alive()
        with attempt:
            try:
                write(docs)
            except StoreUnavailable as exc:
                if attempt.num == 1:
                    log.warning("store unavailable; retrying until it is back",
                                extra={"error": repr(exc), "docs": len(docs)})  # fmt: skip
                raise
            except Exception as exc:
                if attempt.num == 1 and _worth_retrying(exc):
                    log.exception(
                        "store write failed unexpectedly; retrying", extra={"error": repr(exc)}
                    )
                raise
    retries: int = attempt.num - 1
    if retries:
        log.warning("store writes resumed", extra={"retries": retries})
    return retries


# --- the child process ---------------------------------------------------------


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if not data:
        return None
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise EOFError("truncated batch")
        data += more
    return data


class _ParentGone(Exception):
    pass


def _while_parent_lives(parent: int) -> Callable[[], None]:
    """An ``alive`` check that gives up once the collector that started us is gone.

    Retrying forever is right while someone waits for the answer (dropping a
    batch would lose data the agent believes is on its way); once the parent
    has died nobody will read the answer, the batch was never acked, and its
    agent resends it to the next collector.
    """

    def alive() -> None:
        if os.getppid() != parent:
            raise _ParentGone

    return alive


def _write_frame(out: BinaryIO, payload: bytes) -> None:
    out.write(_HEADER.pack(len(payload)) + payload)
    out.flush()


def _work_while_idle(inp: BinaryIO, work: Callable[[], bool]) -> None:
    """Call ``work`` (one short slice) while nothing is readable on ``inp``."""
    try:
        fd = inp.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (tests): no idle work
    try:
        while not select.select([fd], [], [], 0)[0] and work():
            pass
    except StoreError as exc:  # the next idle moment tries again
        log.warning("idle store work failed", extra={"error": repr(exc)})


def serve(
    store: Store, inp: BinaryIO, out: BinaryIO, alive: Callable[[], None] = _nobody_left
) -> None:
    """Read batches, commit each, answer each, until EOF. In between, while
    no batch waits, the store may do its background work (rollup folding)."""
    while True:
        _work_while_idle(inp, store.fold_idle)
        header = _read_exact(inp, 4)
        if header is None:
            break
        (size,) = _HEADER.unpack(header)
        payload = _read_exact(inp, size)
        if payload is None:
            raise EOFError("truncated batch")
        kind, packs = pickle.loads(payload)  # from our parent only
        if kind != "rows":
            raise ValueError(f"unknown batch kind {kind!r}")
        rows = [row for packed in packs for row in pickle.loads(packed)]
        result = commit_rows(store, rows, alive)
        reply = orjson.dumps({"rejected": result.rejected, "seconds": result.seconds,
                              "retries": result.retries})  # fmt: skip
        _write_frame(out, reply)


def main(argv: list[str] | None = None) -> int:
    from deltawire.logs import setup_logging

    ap = argparse.ArgumentParser(prog="python -m deltawire.collector.writer_child",
                                 description="The collector's store writer process (started by "
                                 "'collector serve'; reads length-prefixed pickled batches on "
                                 "stdin, answers with length-prefixed JSON on stdout).")  # fmt: skip
    ap.add_argument("--store", required=True)
    ap.add_argument("--options", default="{}", help="store options as a JSON object")
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="exit instead of retrying once this process is gone, and at most "
                    f"{ORPHAN_GRACE_S:g} s after it in any case (default: our parent at "
                    "start-up)")  # fmt: skip
    args = ap.parse_args(argv)
    # Passed by the collector: by the time we read getppid() it may already
    # have died, and we would wait on whoever adopted us.
    parent = args.parent_pid if args.parent_pid is not None else os.getppid()
    setup_logging(args.log_level)
    exit_with_parent(parent)  # whatever it is doing when the collector dies
    # The parent decides when we stop (it closes our stdin once drained): a
    # Ctrl-C or a SIGTERM to the whole process group must not cut a batch short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    store = open_store(args.store, **orjson.loads(args.options))
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # see collector.server._tune_gc
    alive = _while_parent_lives(parent)
    try:
        for attempt in STORE_BACKOFF.attempts(on=StoreUnavailable):
            alive()
            with attempt:
                try:
                    store.open()
                except StoreUnavailable as exc:
                    log.warning("store unavailable at start; retrying", extra={"error": repr(exc)})
                    raise
        store.start_checkpointer()  # this process does the bulk of the writing
        _write_frame(sys.stdout.buffer, _READY)
        serve(store, sys.stdin.buffer, sys.stdout.buffer, alive)
    except _ParentGone:
        log.error("the collector that started this writer is gone; exiting")
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
