"""The store writer: where batches become durable.

Decoding and reassembling frames takes a core; so does turning documents into
rows and committing them. Python gives one core per process, so by default the
collector commits in a child process of its own (``python -m collector.writer``)
and the ingest process only ships it batches over a pipe: length-prefixed
orjson, one reply per batch, in order. ``ThreadWriter`` does the same work in a
worker thread of the ingest process (tests, small deployments).

Either way a writer retries while the store is unavailable and never returns
before the batch is committed; a document the store refuses for good (a value
it cannot represent) is isolated and reported, so it cannot block the rest.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import orjson
import trio

from protocol import Document

from .stores.base import Store, StoreError, StoreUnavailable

__all__ = ["BatchResult", "BatchWriter", "ProcessWriter", "ThreadWriter", "commit_batch", "main"]

log = logging.getLogger("collector.writer")

_HEADER = struct.Struct(">I")


@dataclass(slots=True)
class BatchResult:
    #: (index in the batch, reason) of documents the store refused for good
    rejected: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    retries: int = 0


class BatchWriter(Protocol):
    async def write(self, docs: Sequence[Document]) -> BatchResult: ...

    async def aclose(self) -> None: ...


def commit_batch(store: Store, docs: Sequence[Document], sleep: Any = time.sleep) -> BatchResult:
    """Commit ``docs``, retrying while the store is unavailable (blocking)."""
    result = BatchResult()
    started = time.perf_counter()
    try:
        result.retries = _retrying(store, docs, sleep)
    except StoreError as exc:
        log.error("store refused a batch; isolating the documents it cannot store",
                  extra={"error": repr(exc), "docs": len(docs)})  # fmt: skip
        for i, doc in enumerate(docs):
            try:
                result.retries += _retrying(store, [doc], sleep)
            except StoreError as one:
                log.error("document refused by the store",
                          extra={"session": doc.session, "seq": doc.seq, "error": repr(one)})  # fmt: skip
                result.rejected.append((i, str(one)[:200]))
    result.seconds = time.perf_counter() - started
    return result


def _retrying(store: Store, docs: Sequence[Document], sleep: Any) -> int:
    delay, retries = 0.05, 0
    while True:
        try:
            store.write_batch(docs)
            if retries:
                log.warning("store writes resumed", extra={"retries": retries})
            return retries
        except StoreUnavailable as exc:
            if not retries:
                log.warning("store unavailable; retrying until it is back",
                            extra={"error": repr(exc), "docs": len(docs)})  # fmt: skip
        except StoreError:
            raise
        except Exception as exc:  # unknown: retried, dropping would lose data
            if not retries:
                log.exception(
                    "store write failed unexpectedly; retrying", extra={"error": repr(exc)}
                )
        retries += 1
        sleep(delay)
        delay = min(delay * 2, 2.0)


class ThreadWriter:
    """Commits in a worker thread of this process."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def write(self, docs: Sequence[Document]) -> BatchResult:
        # Not cancellable on purpose: a write in flight must finish so that
        # what we ack and what is stored never disagree.
        return await trio.to_thread.run_sync(commit_batch, self.store, docs)

    async def aclose(self) -> None:
        pass


def _encode_docs(docs: Sequence[Document]) -> bytes:
    return orjson.dumps(
        [[d.session, d.seq, d.kind, d.name, d.ts, d.host, d.tags, d.data] for d in docs]
    )


def _decode_docs(payload: bytes) -> list[Document]:
    return [
        Document(s, seq, kind, name, ts, host, tuple(tags), data)
        for s, seq, kind, name, ts, host, tags, data in orjson.loads(payload)
    ]


def _grow_pipe(stream: Any) -> None:
    """A batch is ~1 MB: a 1 MiB pipe moves it in a few writes instead of a
    ping-pong of 64 KiB ones between the two processes (Linux only)."""
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, AttributeError, ValueError):
        pass  # a smaller pipe is only slower


class ProcessWriter:
    """Commits in a child process; restarts it (and resends) if it dies."""

    def __init__(
        self, store_uri: str, store_options: dict[str, Any], log_level: str = "warning"
    ) -> None:
        self.argv = [sys.executable, "-m", "collector.writer", "--store", store_uri,
                     "--options", orjson.dumps(store_options).decode(), "--log-level", log_level]  # fmt: skip
        self._proc: trio.Process | None = None
        self._buf = bytearray()

    async def _process(self) -> trio.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await trio.lowlevel.open_process(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            self._buf.clear()
            _grow_pipe(self._proc.stdin)
        return self._proc

    async def write(self, docs: Sequence[Document]) -> BatchResult:
        payload = _encode_docs(docs)
        delay = 0.1
        while True:
            proc = await self._process()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                with trio.CancelScope(shield=True):  # see ThreadWriter.write
                    await proc.stdin.send_all(_HEADER.pack(len(payload)) + payload)
                    reply = await self._read_frame(proc.stdout)
                r = orjson.loads(reply)
                return BatchResult(
                    [(i, why) for i, why in r["rejected"]], r["seconds"], r["retries"]
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError) as exc:
                log.error("the store writer process died; restarting it and resending",
                          extra={"error": repr(exc)})  # fmt: skip
                await self._kill(proc)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _read_frame(self, stream: trio.abc.ReceiveStream) -> bytes:
        buf = self._buf
        while True:
            if len(buf) >= 4:
                (size,) = _HEADER.unpack_from(buf)
                if len(buf) >= 4 + size:
                    frame = bytes(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    return frame
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise EOFError("writer closed its output")
            buf += chunk

    @staticmethod
    async def _kill(proc: trio.Process) -> None:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()

    async def aclose(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with trio.CancelScope(shield=True):
            if proc.stdin is not None:
                try:
                    await proc.stdin.aclose()  # EOF: the writer finishes and exits
                except trio.BrokenResourceError:
                    pass
            with trio.move_on_after(10):
                await proc.wait()
            await self._kill(proc)


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


def serve(store: Store, inp: BinaryIO, out: BinaryIO) -> None:
    """Read batches, commit each, answer each, until EOF."""
    while (header := _read_exact(inp, 4)) is not None:
        (size,) = _HEADER.unpack(header)
        payload = _read_exact(inp, size)
        if payload is None:
            raise EOFError("truncated batch")
        result = commit_batch(store, _decode_docs(payload))
        reply = orjson.dumps({"rejected": result.rejected, "seconds": result.seconds,
                              "retries": result.retries})  # fmt: skip
        out.write(_HEADER.pack(len(reply)) + reply)
        out.flush()


def main(argv: list[str] | None = None) -> int:
    from deltawire.logs import setup_logging

    from .stores import open_store

    ap = argparse.ArgumentParser(prog="python -m collector.writer",
                                 description="The collector's store writer process (started by "
                                 "'collector serve'; speaks length-prefixed JSON on stdin/stdout).")  # fmt: skip
    ap.add_argument("--store", required=True)
    ap.add_argument("--options", default="{}", help="store options as a JSON object")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    # The parent decides when we stop (it closes our stdin once drained): a
    # Ctrl-C or a SIGTERM to the whole process group must not cut a batch short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    store = open_store(args.store, **orjson.loads(args.options))
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # see collector.server._tune_gc
    delay = 0.1
    while True:
        try:
            store.open()
            break
        except StoreUnavailable as exc:
            log.warning("store unavailable at start; retrying", extra={"error": repr(exc)})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    try:
        serve(store, sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
