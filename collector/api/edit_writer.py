"""The API's edit writer process (``python -m deltawire.collector.api.edit_writer``):
it commits the HTTP API's writes, as the store writer child commits ingest.

Why a process: flat out at c=100 a write cost the HTTP process ~140-240 µs
of CPU, and ~60-140 µs of it was the group commit on the store thread
(reading the old documents, the role check and validation of each change,
the updates, the rollup dirty marks, the JSON answers), all on the HTTP
process's one GIL, while the machine's second core was partly idle. Here
that work runs beside the event loop instead of taking turns with it.

The API process (``EditWriter``, edit_client.py) sends a group of
``EditJob``s, length-prefixed and pickled, on our stdin; we apply them with
``apply_jobs`` (edit_jobs.py: the one function, which in-process callers run
on a thread) in ONE store transaction and answer on stdout with each job's
``EditDone`` (its answer's bytes, and what the cache bump and ``/stream``
need), or a ``Failed`` for the whole group (503). Two groups may be applied
at once (``MAX_FLUSHES``: one in its transaction, one syncing the log), so
group commit works as it did in-process. We exit on EOF once the groups
under way are answered, and soon after the API process dies (lifeline.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import pickle
import signal
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from deltawire.collector.lifeline import ORPHAN_GRACE_S, exit_with_parent
from deltawire.collector.stores import open_store
from deltawire.collector.stores.base import Store, StoreError, StoreUnavailable

from .edit_jobs import EditDone, EditJob, apply_jobs
from .edits import MAX_FLUSHES

__all__ = ["HEADER", "READY", "Failed", "main", "serve"]

log = logging.getLogger("deltawire.collector.api.edit_writer")

#: A frame: its length (4 bytes, big-endian), then a pickle (from our own
#: parent or child only: nothing else writes these pipes).
HEADER = struct.Struct(">I")
#: The group number of the frame that says the store is open.
READY = -1


@dataclass(frozen=True, slots=True)
class Failed:
    """A whole group failed (the store is down or broke): every job's answer is 503."""

    unavailable: bool  # StoreUnavailable: retry later, nothing was lost
    reason: str


def frame(group: int, body: object) -> bytes:
    data = pickle.dumps((group, body), protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def _read_exact(inp: BinaryIO, n: int) -> bytes | None:
    data = inp.read(n)
    return data if data is not None and len(data) == n else None


def serve(store: Store, inp: BinaryIO, out: BinaryIO) -> None:
    """Apply groups of jobs from ``inp``, two at most at once, answering each
    on ``out`` as it commits, until EOF; then wait for those under way."""
    out_lock = threading.Lock()

    def apply(group: int, jobs: list[EditJob]) -> None:
        result: list[EditDone] | Failed
        try:
            result = apply_jobs(store, jobs)
        except StoreError as e:
            result = Failed(isinstance(e, StoreUnavailable), str(e))
        except Exception as e:  # a bug must cost this group a 503, never the process
            log.exception("applying a group of %d edits failed", len(jobs))
            result = Failed(False, repr(e))
        data = frame(group, result)
        with out_lock:
            try:
                out.write(data)
                out.flush()
            except (BrokenPipeError, ValueError):  # the API process is gone
                pass

    with ThreadPoolExecutor(MAX_FLUSHES, thread_name_prefix="edits") as pool:
        while (header := _read_exact(inp, HEADER.size)) is not None:
            (size,) = HEADER.unpack(header)
            payload = _read_exact(inp, size)
            if payload is None:
                break  # cut short: the API process died mid-frame
            group, jobs = pickle.loads(payload)
            pool.submit(apply, group, jobs)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m deltawire.collector.api.edit_writer",
        description="The HTTP API's edit writer process (started by the API process; reads "
        "length-prefixed pickled groups of edits on stdin, answers each on stdout).",
    )
    ap.add_argument("--parent-pid", type=int, default=None,
                    help=f"exit at most {ORPHAN_GRACE_S:g} s after this process is gone "
                    "(default: none)")  # fmt: skip
    for flag, default, what in (
        ("--store", None, "the store URI (required)"),
        ("--options", "{}", "store options as a JSON object (default {})"),
        ("--log-level", "warning", "debug, info, warning (default) or error"),
        ("--log-format", "auto", "auto (default), json or text"),
    ):
        ap.add_argument(flag, default=default, required=default is None, help=what)
    return ap


def main(argv: list[str] | None = None) -> int:
    from deltawire.logs import setup_logging

    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    # The API process decides when we stop (it closes our stdin once its
    # requests are answered): a Ctrl-C or a SIGTERM to the whole process
    # group (an init system stopping the service) must not cut a group short
    # while the API still answers its requests. If the API dies, so do we
    # (EOF, and the lifeline).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        store = open_store(args.store, **orjson.loads(args.options))
        store.open()
    except Exception as e:
        log.error("the edit writer cannot open the store: %s", e)
        return 1
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the API process: short-lived garbage
    out = sys.stdout.buffer
    with contextlib.suppress(BrokenPipeError), contextlib.closing(store):
        out.write(frame(READY, None))  # the store is open
        out.flush()
        serve(store, sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
