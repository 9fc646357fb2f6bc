"""A load generator for the collector, run as its own process by bench.ingest.

Each session streams the recording (re-timestamped, seq = index) over one
connection, delta-encoded or as full JSON snaps, as fast as the collector takes
it; ack latency is measured from sending a seq to receiving an ack covering it.
Prints one JSON object with the results.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import socket
import sys
import time
from typing import Any

import orjson
import trio

from deltawire.protocol import (
    CODECS,
    EXTENSIONS,
    NEED_DATA,
    Ack,
    ClientConnection,
    Closed,
    Deflater,
    DeltaEncoder,
    Encoder,
    ErrorFrame,
    Hello,
    Snap,
    group_batches,
)

from .codec import load_recording

__all__ = ["main"]


def _session_bytes(
    session: str, samples: list[tuple[str, float, dict[str, Any]]], n: int, delta: bool,
    zstd: bool = False, counter: bool = True,
) -> tuple[Hello, bytes, list[tuple[int, int]]]:  # fmt: skip
    """The hello, the wire bytes after it and, per chunk, (end offset, last seq).
    With zstd, as the watchdog sends: counter patches, batched (``counter``;
    else plain delta frames), each chunk the next block-flushed piece of one
    stream."""
    counter = zstd and counter
    enc, denc = Encoder(), DeltaEncoder(counter=counter)
    deflater = Deflater() if zstd else None
    hello = Hello(session=session, host="bench", compress=CODECS if zstd else (),
                  ext=EXTENSIONS if counter else ())  # fmt: skip
    parts: list[bytes] = []
    chunk: list[Any] = []
    marks: list[tuple[int, int]] = []
    size = 0
    base = time.time()
    for seq in range(n):
        name, _ts, data = samples[seq % len(samples)]
        ts = round(base + seq * 0.001, 3)
        frame = denc.encode(seq, ts, name, data) if delta else Snap(seq, ts, name, data)
        chunk.append(frame)
        if seq % 50 == 49 or seq == n - 1:
            piece = enc.send_many(list(group_batches(chunk)) if counter else chunk)
            chunk = []
            if deflater is not None:
                piece = deflater.compress(piece)
            parts.append(piece)
            size += len(piece)
            marks.append((size, seq))
    return hello, b"".join(parts), marks


class _Session:
    """One connection: its wire bytes, where each chunk ends, and when each
    chunk went out (for the ack latency)."""

    def __init__(self, hello: Hello, wire: bytes, marks: list[tuple[int, int]]) -> None:
        self.hello = hello
        self.conn = ClientConnection()
        self.wire = memoryview(wire)
        self.marks = marks
        self.seqs = [m[1] for m in marks]
        self.sent_at: list[float] = []
        self.done = trio.Event()
        self.sock: socket.socket | None = None
        self.stream: trio.SocketStream | None = None
        self.queued = 0  # bytes handed to the pacer so far
        self.written = 0  # bytes the kernel took so far

    async def connect(self, port: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        self.sock = sock
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        # The hello, then the welcome (after which a zstd stream may start).
        await self.stream.send_all(self.conn.send(self.hello))
        while self.conn.welcome is None:
            self.conn.receive_data(await self.stream.receive_some(65536))
            while (frame := self.conn.next_event()) is not NEED_DATA:
                if type(frame) is Closed:
                    raise SystemExit(f"collector closed before the welcome: {self.conn.error}")

    async def read_acks(self, latencies: list[float], errors: list[str]) -> None:
        assert self.stream is not None
        conn = self.conn
        acked_idx = -1
        last = self.marks[-1][1]
        while True:
            conn.receive_data(await self.stream.receive_some(65536))
            now = time.perf_counter()
            while (frame := conn.next_event()) is not NEED_DATA:
                if type(frame) is Closed:
                    self.done.set()
                    return
                if isinstance(frame, Ack):
                    idx = bisect.bisect_right(self.seqs, frame.seq) - 1
                    for i in range(acked_idx + 1, min(idx + 1, len(self.sent_at))):
                        latencies.append(now - self.sent_at[i])
                    acked_idx = max(acked_idx, idx)
                    if frame.seq >= last:
                        self.done.set()
                        return
                elif isinstance(frame, ErrorFrame):
                    errors.append(frame.code)

    async def send_all_chunks(self) -> None:
        """Unpaced: every chunk as fast as the collector takes it."""
        assert self.stream is not None
        start = 0
        for end, _seq in self.marks:
            await self.stream.send_all(self.wire[start:end])
            self.sent_at.append(time.perf_counter())
            start = end

    def flush(self) -> bool:
        """Hand the kernel what it takes of the queued bytes, without blocking;
        True once everything queued is out."""
        assert self.sock is not None
        while self.written < self.queued:
            try:
                n = self.sock.send(self.wire[self.written : self.queued])
            except (BlockingIOError, InterruptedError):
                return False
            self.written += n
        return True


#: The pacer's tick: chunks due within it go out together. Waking once per
#: chunk (2000 times a second at 100k samples/s) cost the load generator a
#: fifth of a core on this 2-core machine, taken from the collector it measures.
_TICK = 0.005


async def _pace(sessions: list[_Session], chunk_interval: float) -> None:
    """Send every session's chunks on its own schedule (sessions staggered
    over one interval, as real agents are), from one task, with non-blocking
    sends; a chunk's latency counts from when it was due."""
    heap = [(chunk_interval * i / len(sessions), i, 0) for i in range(len(sessions))]
    heapq.heapify(heap)
    t0 = trio.current_time()
    clock0 = time.perf_counter()
    backlog: set[int] = set()
    while heap or backlog:
        now = trio.current_time() - t0
        while heap and heap[0][0] <= now:
            due, i, k = heapq.heappop(heap)
            st = sessions[i]
            st.queued = st.marks[k][0]
            st.sent_at.append(clock0 + due)
            backlog.add(i)
            if k + 1 < len(st.marks):
                heapq.heappush(heap, (due + chunk_interval, i, k + 1))
        backlog = {i for i in backlog if not sessions[i].flush()}
        await trio.sleep(_TICK)


async def _main(
    port: int,
    sessions: int,
    per_session: int,
    delta: bool,
    rate: float = 0.0,
    zstd: bool = False,
    hold: float = 0.0,
    counter: bool = True,
) -> dict[str, Any]:
    samples = load_recording()
    prepared = [_Session(*_session_bytes(f"bench-{'d' if delta else 'f'}-{time.time_ns()}-{i}",
                                         samples, per_session, delta, zstd, counter))
                for i in range(sessions)]  # fmt: skip
    wire_bytes = sum(len(st.wire) for st in prepared)
    latencies: list[float] = []
    errors: list[str] = []
    for st in prepared:
        await st.connect(port)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    # On stderr as the timed part starts: a probe of the collector's
    # processes (CPU, run-queue and sleep times) reads from here on.
    print(orjson.dumps({"timing": True}).decode(), file=sys.stderr, flush=True)
    async with trio.open_nursery() as nursery:
        for st in prepared:
            nursery.start_soon(st.read_acks, latencies, errors)
        if rate > 0:
            # 50 samples per chunk; a session's share of the offered rate sets its pace.
            nursery.start_soon(_pace, prepared, 50 * sessions / rate)
        else:
            for st in prepared:
                nursery.start_soon(st.send_all_chunks)
        for st in prepared:
            await st.done.wait()
        nursery.cancel_scope.cancel()
    if hold:
        print(orjson.dumps({"holding": len(prepared)}).decode(), file=sys.stderr, flush=True)
        await trio.sleep(hold)  # the connections stay open while RSS is read
    for st in prepared:
        assert st.stream is not None
        await st.stream.aclose()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))]
            if latencies
            else float("nan")
        )

    total = sessions * per_session
    return {"samples": total, "seconds": elapsed, "rate": total / elapsed, "wire_bytes": wire_bytes,
            "loadgen_cpu_s": cpu, "p50_ms": pct(0.50) * 1000, "p99_ms": pct(0.99) * 1000, "errors": errors[:10]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--per-session", type=int, default=1000)
    ap.add_argument("--full", action="store_true", help="full JSON snaps instead of deltas")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offered samples/s over all sessions (0: as fast as accepted)",
    )
    ap.add_argument("--zstd", action="store_true", help="offer zstd stream compression")
    ap.add_argument("--no-counter", action="store_true",
                    help="with --zstd: plain delta frames (default: batched counter patches)")  # fmt: skip
    ap.add_argument("--hold", type=float, default=0.0,
                    help="seconds to keep the connections open at the end (RSS probes)")  # fmt: skip
    args = ap.parse_args(argv)
    result = trio.run(_main, args.port, args.sessions, args.per_session, not args.full, args.rate,
                      args.zstd, args.hold, not args.no_counter)  # fmt: skip
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
