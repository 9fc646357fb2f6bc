"""Codec bench: wire bytes per sample (delta vs full JSON) and samples/s through
encode + decode + reassemble, on the committed psutil recording, on one core."""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from typing import Any

import orjson

from deltawire.protocol import (
    CODECS,
    COUNTER,
    EXTENSIONS,
    NEED_DATA,
    ZSTD,
    ClientConnection,
    DeltaEncoder,
    Encoder,
    Hello,
    ServerConnection,
    Snap,
    Welcome,
    group_batches,
)

from .report import Table

RECORDING = pathlib.Path(__file__).parent / "data" / "recording.ndjson"

__all__ = ["bandwidth", "load_recording", "main", "run"]


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


def _best(fn: Any, min_seconds: float, clock: Any = time.perf_counter) -> float:
    """The shortest time ``fn`` took on ``clock``, repeated for ``min_seconds``."""
    best = float("inf")
    total = 0.0
    while total < min_seconds:
        t0 = clock()
        fn()
        dt = clock() - t0
        best = min(best, dt)
        total += dt
    return best


def _rate(fn: Any, n: int, min_seconds: float) -> float:
    """Samples per second of ``fn`` (which processes ``n`` samples), best of repeats."""
    return n / _best(fn, min_seconds)


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
    print(bandwidth(args.seconds).render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- bandwidth: bytes and CPU per sample, plain and compressed -----------------

#: Samples sent together: the watchdog pushes every push_every ticks, and each
#: tick samples the process and the system (two lines of the recording).
PUSH_EVERY: tuple[int, ...] = (1, 4, 10)
_STREAMS = 2

#: Published figures to read ours against (bytes per sample or per value).
ANCHORS = (
    ("Prometheus remote write v1", "~50 B/sample"),
    ("Netdata zstd streaming", "~10.5 B/value"),
    ("Gorilla (Facebook TSDB)", "1.37 B/point"),
    ("24-value sample at 30 B", "1.25 B/value"),
)

Variant = str
VARIANTS: tuple[Variant, ...] = (
    "full JSON", "delta", "delta+zstd", "delta+zstd+counter", "delta+zstd+counter+batch"
)  # fmt: skip


def _ext(variant: Variant) -> tuple[str, ...]:
    """The extensions a variant negotiates."""
    if variant.endswith("batch"):
        return EXTENSIONS
    return (COUNTER,) if variant.endswith("counter") else ()


def _pushes(
    samples: list[tuple[str, float, dict[str, Any]]], variant: Variant, push_every: int
) -> list[bytes]:
    """The bytes of each push, as the watchdog's link would send them."""
    client = ClientConnection()
    zstd = variant.startswith("delta+zstd")
    ext = _ext(variant)
    client.send(Hello(session="bench", compress=CODECS if zstd else (), ext=ext))
    client.receive_data(_welcome(zstd, ext))
    client.next_event()
    denc = DeltaEncoder(counter=COUNTER in ext)
    per_push = push_every * _STREAMS
    out = []
    for start in range(0, len(samples), per_push):
        frames: list[Any] = []
        for seq in range(start, min(start + per_push, len(samples))):
            name, ts, data = samples[seq]
            if variant == "full JSON":
                frames.append(Snap(seq, ts, name, data))
                continue
            frames.append(denc.encode(seq, ts, name, data))
        out.append(client.send_many(group_batches(frames) if "batch" in ext else frames))
    return out


def _welcome(zstd: bool, ext: tuple[str, ...]) -> bytes:
    welcome = Welcome("bench", -1, compress=ZSTD if zstd else None, negotiated=zstd,
                      ext=ext or None)  # fmt: skip
    return Encoder().send(welcome)


def _server_side(pushes: list[bytes], zstd: bool, ext: tuple[str, ...]) -> int:
    server = ServerConnection()
    hello = Hello(session="bench", compress=CODECS if zstd else (), ext=ext)
    server.receive_data(Encoder().send(hello))
    server.next_event()
    server.send(server.welcome(-1))
    events: list[Any] = []
    for push in pushes:
        server.receive_data(push)
        server.next_events(events)
    return len(events)


def _cpu_per_sample(fn: Any, n: int, min_seconds: float) -> float:
    """CPU microseconds per sample of ``fn`` (which handles ``n`` samples), best of repeats."""
    return _best(fn, min_seconds, time.process_time) / n * 1e6


def bandwidth(seconds: float = 1.0) -> Table:
    samples = load_recording()
    n = len(samples)
    t = Table(f"bandwidth — {n} psutil samples recorded at 1 s, {_STREAMS} streams a tick, "
              "bytes per sample on the wire incl. frame overhead; CPU per sample on one core",
              ["this variant", "full JSON (baseline)"])  # fmt: skip
    budget = seconds / (len(VARIANTS) * len(PUSH_EVERY) * 2)
    full_cpu: dict[int, tuple[float, float]] = {}
    for push_every in PUSH_EVERY:
        full = sum(map(len, _pushes(samples, "full JSON", push_every))) / n
        for variant in VARIANTS:
            pushes = _pushes(samples, variant, push_every)
            zstd, ext = "zstd" in variant, _ext(variant)
            bps = sum(map(len, pushes)) / n
            decoded = _server_side(pushes, zstd, ext)
            assert decoded == n, (variant, decoded)
            agent = _cpu_per_sample(lambda v=variant, p=push_every: _pushes(samples, v, p), n,
                                    budget)  # fmt: skip
            collector = _cpu_per_sample(lambda p=pushes, z=zstd, x=ext: _server_side(p, z, x),
                                        n, budget)  # fmt: skip
            if variant == "full JSON":
                full_cpu[push_every] = (agent, collector)
            goal = "<= 30 (14x)" if push_every == 4 and variant.endswith("batch") else ""
            t.row(f"push {push_every:>2} {variant}: bytes/sample", bps, full, goal=goal,
                  lower_is_better=True)  # fmt: skip
            fa, fc = full_cpu[push_every]
            t.row(f"push {push_every:>2} {variant}: agent CPU us/sample", agent, fa,
                  ratio=False)  # fmt: skip
            t.row(f"push {push_every:>2} {variant}: collector CPU us/sample", collector, fc,
                  ratio=False)  # fmt: skip
    for name, figure in ANCHORS:
        t.row(f"anchor: {name} {figure}", None, None, ratio=False)
    return t
