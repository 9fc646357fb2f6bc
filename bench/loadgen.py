"""A load generator for the collector, run as its own process by bench.ingest.

Each session streams the recording (re-timestamped, seq = index) over one
connection, delta-encoded or as full JSON snaps, as fast as the collector takes
it; ack latency is measured from sending a seq to receiving an ack covering it.
Prints one JSON object with the results.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from typing import Any

import orjson
import trio

from protocol import NEED_DATA, SERVER, Ack, Decoder, DeltaEncoder, Encoder, ErrorFrame, Hello, Snap

from .codec import load_recording

__all__ = ["main"]


def _session_bytes(
    session: str, samples: list[tuple[str, float, dict[str, Any]]], n: int, delta: bool
) -> tuple[bytes, list[tuple[int, int]]]:
    """The wire bytes of one session and, per chunk, (end offset, last seq)."""
    enc, denc = Encoder(), DeltaEncoder()
    parts = [enc.send(Hello(session=session, host="bench"))]
    marks: list[tuple[int, int]] = []
    size = len(parts[0])
    base = time.time()
    for seq in range(n):
        name, _ts, data = samples[seq % len(samples)]
        ts = round(base + seq * 0.001, 3)
        frame = denc.encode(seq, ts, name, data) if delta else Snap(seq, ts, name, data)
        line = enc.send(frame)
        parts.append(line)
        size += len(line)
        if seq % 50 == 49 or seq == n - 1:
            marks.append((size, seq))
    return b"".join(parts), marks


async def _run_session(port: int, wire: bytes, marks: list[tuple[int, int]], latencies: list[float],
                       errors: list[str], chunk_interval: float = 0.0,
                       offset: float = 0.0) -> None:  # fmt: skip
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    last = marks[-1][1]
    sent_at: list[float] = []  # per mark
    seqs = [m[1] for m in marks]
    done = trio.Event()

    async def reader() -> None:
        dec = Decoder(SERVER)
        acked_idx = -1
        while True:
            data = await stream.receive_some(65536)
            if not data:
                done.set()
                return
            now = time.perf_counter()
            dec.receive_data(data)
            while (frame := dec.next_event()) is not NEED_DATA:
                if isinstance(frame, Ack):
                    idx = bisect.bisect_right(seqs, frame.seq) - 1
                    for i in range(acked_idx + 1, min(idx + 1, len(sent_at))):
                        latencies.append(now - sent_at[i])
                    acked_idx = max(acked_idx, idx)
                    if frame.seq >= last:
                        done.set()
                        return
                elif isinstance(frame, ErrorFrame):
                    errors.append(frame.code)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        start = 0
        # Sessions are staggered over one interval, as real agents are: a
        # synchronised burst of every session at once is not a steady rate.
        t0 = trio.current_time() + offset
        for i, (end, _seq) in enumerate(marks):
            if chunk_interval:
                await trio.sleep_until(t0 + i * chunk_interval)  # pacing the offered load
            await stream.send_all(wire[start:end])
            sent_at.append(time.perf_counter())
            start = end
        await done.wait()
        nursery.cancel_scope.cancel()


async def _main(
    port: int, sessions: int, per_session: int, delta: bool, rate: float = 0.0
) -> dict[str, Any]:
    samples = load_recording()
    prepared = [_session_bytes(f"bench-{'d' if delta else 'f'}-{time.time_ns()}-{i}", samples,
                               per_session, delta) for i in range(sessions)]  # fmt: skip
    wire_bytes = sum(len(w) for w, _ in prepared)
    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    async with trio.open_nursery() as nursery:
        # 50 samples per chunk; a session's share of the offered rate sets its pace.
        chunk_interval = 50 * sessions / rate if rate > 0 else 0.0
        for i, (wire, marks) in enumerate(prepared):
            offset = chunk_interval * i / sessions
            nursery.start_soon(
                _run_session, port, wire, marks, latencies, errors, chunk_interval, offset
            )
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
    args = ap.parse_args(argv)
    result = trio.run(_main, args.port, args.sessions, args.per_session, not args.full, args.rate)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
