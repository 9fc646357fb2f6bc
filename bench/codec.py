"""Codec bench: wire bytes per sample (delta vs full JSON) and samples/s through
encode + decode + reassemble, on the committed psutil recording, on one core."""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from typing import Any

import orjson

from deltawire.protocol import NEED_DATA, DeltaEncoder, Encoder, Hello, ServerConnection, Snap

from .report import Table

RECORDING = pathlib.Path(__file__).parent / "data" / "recording.ndjson"

__all__ = ["load_recording", "main", "run"]


def load_recording(path: pathlib.Path = RECORDING) -> list[tuple[str, float, dict[str, Any]]]:
    out = []
    for line in path.read_bytes().splitlines():
        rec = orjson.loads(line)
        out.append((rec["name"], rec["ts"], rec["data"]))
    return out


def _encode(
    samples: list[tuple[str, float, dict[str, Any]]], delta: bool, keyframe_every: int
) -> bytes:
    enc = Encoder()
    denc = DeltaEncoder(keyframe_every)
    parts = [enc.send(Hello(session="bench"))]
    for seq, (name, ts, data) in enumerate(samples):
        frame = denc.encode(seq, ts, name, data) if delta else Snap(seq, ts, name, data)
        parts.append(enc.send(frame))
    return b"".join(parts)


def _decode(wire: bytes, chunk: int = 65536) -> int:
    conn = ServerConnection()
    n = 0
    for i in range(0, len(wire), chunk):
        conn.receive_data(wire[i : i + chunk])
        while conn.next_event() is not NEED_DATA:
            n += 1
    return n - 1  # the hello


def _rate(fn: Any, n: int, min_seconds: float) -> float:
    """Samples per second of ``fn`` (which processes ``n`` samples), best of repeats."""
    best = float("inf")
    total = 0.0
    while total < min_seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        total += dt
    return n / best


def run(seconds: float = 2.0, keyframe_every: int = 100) -> Table:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the goal says
    samples = load_recording()
    # Repeat the recording so the throughput loop is long enough to time.
    many = samples * max(1, 20000 // len(samples))
    n = len(samples)
    wire_delta = _encode(samples, True, keyframe_every)
    wire_full = _encode(samples, False, keyframe_every)
    hello = len(Encoder().send(Hello(session="bench")))
    bps_delta = (len(wire_delta) - hello) / n
    bps_full = (len(wire_full) - hello) / n
    assert _decode(wire_delta) == n

    big_delta = _encode(many, True, keyframe_every)
    big_full = _encode(many, False, keyframe_every)
    m = len(many)
    rt_delta = _rate(lambda: _decode(_encode(many, True, keyframe_every)), m, seconds)
    rt_full = _rate(lambda: _decode(_encode(many, False, keyframe_every)), m, seconds)
    enc_delta = _rate(lambda: _encode(many, True, keyframe_every), m, seconds / 2)
    dec_delta = _rate(lambda: _decode(big_delta), m, seconds / 2)
    dec_full = _rate(lambda: _decode(big_full), m, seconds / 2)

    t = Table(f"codec — {n} psutil samples recorded at 1 s (bench/data/recording.ndjson), "
              f"keyframe every {keyframe_every}, one core", ["delta (deltawire)", "full JSON (baseline)"])  # fmt: skip
    t.row(
        "wire bytes / sample", bps_delta, bps_full, goal="delta >= 5x smaller", lower_is_better=True
    )
    t.row("encode+decode+reassemble samples/s", rt_delta, rt_full, goal=">= 200k/s")
    t.row("encode samples/s", enc_delta, None)
    t.row("decode+reassemble samples/s", dec_delta, dec_full)
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="timing budget per figure")
    ap.add_argument("--keyframe-every", type=int, default=100)
    args = ap.parse_args(argv)
    print(run(args.seconds, args.keyframe_every).render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
