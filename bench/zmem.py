"""Compressed sessions and the collector's memory: RSS with many zstd sessions
held open, each with its decompression window filled, and RSS while zstd bombs
are sent (each must be refused with an error, and RSS stay flat).

    python -m bench.zmem [--sessions 1000,10000] [--bombs 400]

Every session says hello offering zstd and the watchdog's extensions, sends
the recording's first samples as the watchdog would (a snap per stream, then
batches of counter patches), then ~200 KiB of blank lines flushed 4 KiB at a
time, in rounds that each await an ack, which the collector skips but
decompresses through its window: so each connection's zstd context
is as full as a long-lived session's (a short bench session would leave most of
the window's pages untouched and measure less than production holds). The
session then waits for its last ack and stays open while RSS is read.
Bombs go ten at a time; RSS is read after each wave (once the wave's
connections have closed), of the collector's ingest process alone, where
bombs are decoded, and with its writer child (whose size moves on its own
timers). Flat is the goal: after half the bombs and after all of them, the
ingest process within ``_FLAT_MB`` (or ``_FLAT_SHARE``) of its RSS before.
Sessions open ten at a time (see ``_OPEN_AT_ONCE``: more trip the collector's
flow control, whose broadcast to every held session made 10,000 crawl). The
compressed bytes after the welcome are the same for every session, so the
load generator (this process) holds one copy, not one compressor per session.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Final

import psutil
import trio
import zstandard

from deltawire.protocol import (
    CODECS,
    EXTENSIONS,
    NEED_DATA,
    Ack,
    ClientConnection,
    DeltaEncoder,
    Encoder,
    ErrorFrame,
    Event,
    Hello,
    Welcome,
    group_batches,
)

from .codec import load_recording
from .ingest import _collector
from .report import Table

__all__ = ["main", "run"]

#: Blank-line padding per session: past the 64 KiB window plus its block
#: buffers, so every page of the decompression context has been written.
_PAD_BYTES: Final = 200 << 10
_PAD_LINE: Final = b" " * 4095 + b"\n"
#: Rounds the padding is sent in (each awaits an ack: a read holds a round).
_PAD_ROUNDS: Final = 4
#: Samples each session stores (a snap per stream, then batches of 8).
_SAMPLES: Final = 40
#: Sessions in flight at once. Each has at most one chunk in the collector's
#: ingest queue (it awaits an ack before sending more), and the queue is 16
#: chunks with flow control at 3/4 full: at 12 in flight the collector would
#: throttle, sending a flow frame to EVERY open connection on each crossing
#: (and another when it drains), which at a few thousand held sessions cost
#: more than the sessions themselves (500 in flight: 33/s falling to 17/s by
#: 2,000 held). Ten stays under the high water, and still fills the CPU.
_OPEN_AT_ONCE: Final = 10
#: "Flat" after the bombs: within this many MB of before, or this share of
#: it, whichever is more (the goal of issue 16: noise, not growth).
_FLAT_MB: Final = 15
_FLAT_SHARE: Final = 0.05
#: Pause before reading RSS after bombs: a refused connection lingers up to
#: 1 s for its peer to read the error (collector.connection._LINGER_SECONDS).
_SETTLE_S: Final = 1.5
#: A progress line every this many sessions opened (10,000 take minutes).
_PROGRESS_EVERY: Final = 1000


def _stream_pushes() -> list[tuple[bytes, int]]:
    """The pushes every session sends after its welcome (the same compressed
    bytes for all: one stream, one history), each with the seq to await."""
    samples = load_recording()[:_SAMPLES]
    conn = ClientConnection()
    conn.send(Hello(session="x", compress=CODECS, ext=EXTENSIONS))
    welcome = Welcome("x", -1, compress="zstd", negotiated=True, ext=EXTENSIONS)
    conn.receive_data(Encoder().send(welcome))
    assert isinstance(conn.next_event(), Welcome)
    enc = DeltaEncoder(counter=True)
    frames = [enc.encode(seq, ts, name, data) for seq, (name, ts, data) in enumerate(samples)]
    samples_piece = b"".join(conn.send_many(group_batches(frames[i : i + 8]))
                             for i in range(0, _SAMPLES, 8))  # fmt: skip
    pushes = [(samples_piece, _SAMPLES - 1)]
    # Then blank lines in 4 KiB flushes, a few rounds of them, each ending
    # with a tiny event whose ack is awaited before the next round.
    ts = samples[-1][1]
    flushes = _PAD_BYTES // len(_PAD_LINE)
    for r in range(_PAD_ROUNDS):
        seq = _SAMPLES + r
        piece = b"".join(conn.send_raw(_PAD_LINE) for _ in range(flushes // _PAD_ROUNDS))
        piece += conn.send_raw(Encoder().send(Event(seq, ts, "pad", None)))
        pushes.append((piece, seq))
    return pushes


def _bomb(kind: str) -> bytes:
    """A few KiB of zstd stream that inflates to 256 MiB: newlines (one read
    inflates past the per-read cap) or one endless line (past the frame limit)."""
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=16)  # fast to make
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    unit = b"\n" * (1 << 20) if kind == "newlines" else b"x" * (1 << 20)
    return b"".join(obj.compress(unit) for _ in range(256)) + obj.flush(
        zstandard.COMPRESSOBJ_FLUSH_BLOCK
    )


async def _read_until(stream: trio.SocketStream, conn: ClientConnection, want: Any) -> Any:
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        if want(event):
            return event


async def _session(port: int, name: str, pushes: list[tuple[bytes, int]]) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = ClientConnection()
    await stream.send_all(conn.send(Hello(session=name, compress=CODECS, ext=EXTENSIONS)))
    await _read_until(stream, conn, lambda e: type(e) is Welcome)
    for piece, seq in pushes:
        await stream.send_all(piece)
        await _read_until(stream, conn, lambda e, s=seq: type(e) is Ack and e.seq >= s)
    return stream


async def _open_sessions(port: int, count: int, pushes: list[tuple[bytes, int]]) -> list[Any]:
    """Open ``count`` sessions, at most ``_OPEN_AT_ONCE`` in flight, in a sliding
    window: one session's end starts the next, so no batch waits for its slowest."""
    held: list[Any] = []
    stamp = time.time_ns()
    limiter = trio.CapacityLimiter(_OPEN_AT_ONCE)
    t0 = time.monotonic()

    async def one(i: int) -> None:
        async with limiter:
            held.append(await _session(port, f"zmem-{stamp}-{i}", pushes))
        if len(held) % _PROGRESS_EVERY == 0:
            rate = len(held) / (time.monotonic() - t0)
            print(f"  {len(held)}/{count} sessions open ({rate:.0f}/s)", file=sys.stderr)

    async with trio.open_nursery() as nursery:
        for i in range(count):  # a waiting task costs the load generator ~1 KiB
            nursery.start_soon(one, i)
    return held


async def _send_bomb(port: int, i: int, bomb: bytes) -> str:
    """One bomb connection; the code of the error that ends it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = ClientConnection()
    try:
        await stream.send_all(conn.send(Hello(session=f"bomb-{i}", compress=CODECS)))
        await _read_until(stream, conn, lambda e: type(e) is Welcome)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(bomb)
        with trio.fail_after(30):
            error = await _read_until(stream, conn, lambda e: type(e) is ErrorFrame)
        return str(error.code)
    finally:
        await stream.aclose()


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of the collector and its writer child."""
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _rss(proc: psutil.Process) -> int:
    total = 0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


async def _measure(port: int, pid: int, sessions: int, bombs: int) -> dict[str, Any]:
    proc = psutil.Process(pid)
    pushes = _stream_pushes()
    idle = _rss(proc)
    t0, cpu0, own0 = time.monotonic(), _cpu(proc), time.process_time()
    held = await _open_sessions(port, sessions, pushes)
    opened = time.monotonic() - t0
    cpu = {"collector": _cpu(proc) - cpu0, "loadgen": time.process_time() - own0}
    await trio.sleep(1.0)  # let the writer settle: RSS of the steady state
    loaded = _rss(proc)
    parent = proc.memory_info().rss
    curve = [loaded]
    #: (bombs sent, ingest process RSS, with the writer) at half and at all.
    marks: list[tuple[int, int, int]] = []
    codes: dict[str, int] = {}
    if bombs:
        kinds = [_bomb("newlines"), _bomb("line")]

        async def sample() -> None:
            while True:
                await trio.sleep(0.1)
                curve.append(_rss(proc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            for start in range(0, bombs, 10):  # ten at a time
                async with trio.open_nursery() as wave:
                    for i in range(start, min(bombs, start + 10)):

                        async def one(i: int = i) -> None:
                            code = await _send_bomb(port, i, kinds[i % 2])
                            codes[code] = codes.get(code, 0) + 1

                        wave.start_soon(one)
                sent = min(bombs, start + 10)
                if sent == bombs or (sent >= bombs // 2 and not marks):
                    await trio.sleep(_SETTLE_S)
                    marks.append((sent, proc.memory_info().rss, _rss(proc)))
            nursery.cancel_scope.cancel()
        curve.append(_rss(proc))
    for stream in held:
        await stream.aclose()
    return {"idle": idle, "loaded": loaded, "parent": parent, "curve": curve, "codes": codes,
            "marks": marks, "held": len(held), "open_s": opened, "cpu": cpu}  # fmt: skip


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def run(counts: tuple[int, ...] = (1000, 10000), bombs: int = 400) -> Table:
    mib = 1 << 20
    t = Table("zstd sessions — collector RSS (incl. writer child), each session's "
              "decompression window filled, SQLite store", ["figure", "baseline"])  # fmt: skip
    _raise_nofile(max(counts) + 1024)  # inherited by the collector
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            # Sessions opened early must outlive the opening of the rest.
            extra = ("--max-connections", str(count + bombs + 100), "--idle-timeout", "7200")
            with _collector(pathlib.Path(tmp), extra=extra) as (proc, port, _http, _db):
                r = trio.run(_measure, port, proc.pid, count, bombs if count == counts[0] else 0)
            per = (r["loaded"] - r["idle"]) / max(1, r["held"]) / 1024
            t.row(f"{count} sessions held: RSS MB (baseline: idle collector)", r["loaded"] / mib,
                  r["idle"] / mib, ratio=False, goal="< 300 MB" if count == 1000 else "")  # fmt: skip
            t.row(f"{count} sessions: KiB per session", per, None, ratio=False)
            t.row(f"{count} sessions: collector process alone (no writer child) MB",
                  r["parent"] / mib, None, ratio=False)  # fmt: skip
            t.row(f"{count} sessions: opened and stored in s", r["open_s"], None, ratio=False)
            t.row(f"{count} sessions: CPU s collector+writer (baseline: load generator)",
                  r["cpu"]["collector"], r["cpu"]["loadgen"], ratio=False)  # fmt: skip
            if r["codes"]:
                curve, loaded = r["curve"], r["loaded"]
                t.row(f"{bombs} bombs (256 MiB each) over {count} sessions: RSS MB max "
                      "with the writer child (baseline: before)", max(curve) / mib, curve[0] / mib, ratio=False)  # fmt: skip
                t.row("  RSS MB after the bombs / median during", curve[-1] / mib,
                      statistics.median(curve) / mib, ratio=False)  # fmt: skip
                parent = r["parent"]
                flat = max(_FLAT_MB, _FLAT_SHARE * parent / mib)
                for sent, alone, total in r["marks"]:
                    t.row(f"  ingest process RSS MB after {sent} bombs (baseline: before them)",
                          alone / mib, parent / mib, ratio=False,
                          goal=f"flat: <= +{flat:.0f} MB")  # fmt: skip
                    t.row(f"  with the writer child, after {sent} bombs", total / mib,
                          loaded / mib, ratio=False)  # fmt: skip
                t.row("  bombs refused: " + ", ".join(f"{k} x{v}" for k, v in
                                                       sorted(r["codes"].items())),
                      sum(r["codes"].values()), bombs, ratio=False, goal="all")  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.zmem", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--sessions", default="1000,10000",
                    help="comma-separated session counts [default: 1000,10000]")  # fmt: skip
    ap.add_argument("--bombs", type=int, default=400,
                    help="bombs sent at the first count, ten at a time [default: 400]")  # fmt: skip
    args = ap.parse_args(argv)
    counts = tuple(int(x) for x in args.sessions.split(",") if x.strip())
    print(run(counts, args.bombs).render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
