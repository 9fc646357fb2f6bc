"""Record real watchdog samples to use as the delta-encoding benchmark input.

Starts a busy workload child of its own, samples it with ``ProcessSampler`` and
the host with ``SystemSampler`` every ``--interval`` seconds, and writes one
NDJSON line per sample::

    {"name": "process" | "system", "ts": <epoch seconds, 3 decimals>, "data": {...}}

Example::

    python bench/record.py --minutes 3 --interval 1 --out bench/data/recording.ndjson

The same file doubles as the workload: ``--workload`` (hidden) runs the child.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

import orjson

# Run as a plain script (sys.path[0] is bench/), so make the repo importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deltawire.testing.servers import stop_process
from deltawire.watchdog.sampler import ProcessSampler, SystemSampler

PROGRESS_EVERY_S = 10.0
CHILD_STOP_TIMEOUT_S = 10.0
MiB = 1024 * 1024

# ---------------------------------------------------------------------------
# Workload (runs in the child process)
# ---------------------------------------------------------------------------

# Short-lived grandchild: spins or sleeps for argv[2] seconds, so the sampler
# sees descendants appear and vanish with and without CPU use.
_GRANDCHILD_CODE = """
import sys, time
mode, seconds = sys.argv[1], float(sys.argv[2])
if mode == "sleep":
    time.sleep(seconds)
else:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(i * i for i in range(10_000))
"""


def _payload(rng: random.Random, size: int) -> bytes:
    # Part random, part repetitive, so compression ratio and speed vary the way
    # real data does instead of always hitting zlib's incompressible path.
    random_part = rng.randbytes(int(size * rng.uniform(0.1, 0.9)))
    filler = b"deltawire telemetry " * (size // 20 + 1)
    return (random_part + filler)[:size]


def _compress_bursts(stop: threading.Event, rng: random.Random) -> None:
    while not stop.is_set():
        # Some bursts fan out to helper threads so the thread count moves too.
        helpers = [
            threading.Thread(
                target=_compress_for,
                args=(stop, random.Random(rng.random()), rng.uniform(0.3, 2.0)),
                name="compress-helper",
            )
            for _ in range(rng.choice((0, 0, 0, 1, 2)))
        ]
        for helper in helpers:
            helper.start()
        _compress_for(stop, rng, rng.uniform(0.2, 2.5))
        for helper in helpers:
            helper.join()
        stop.wait(rng.uniform(0.1, 3.0))


def _compress_for(stop: threading.Event, rng: random.Random, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():
        data = _payload(rng, rng.choice((16, 64, 256, 1024)) * 1024)
        zlib.compress(data, rng.randint(1, 9))


def _file_churn(stop: threading.Event, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory(prefix="deltawire-bench-") as tmp:
        path = Path(tmp) / "churn.bin"
        while not stop.is_set():
            chunks = rng.randint(4, 128)  # 256 KiB .. 8 MiB
            with path.open("wb") as fh:
                for _ in range(chunks):
                    fh.write(_payload(rng, 64 * 1024))
                if rng.random() < 0.5:
                    # Only an fsync reliably turns page-cache writes into
                    # write_bytes within the recording window.
                    fh.flush()
                    os.fsync(fh.fileno())
                    if hasattr(os, "posix_fadvise"):
                        # Drop the cached pages so the read below hits the
                        # disk and read_bytes moves, not just read_count.
                        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            with path.open("rb") as fh:
                while fh.read(256 * 1024):
                    pass
            path.unlink()
            stop.wait(rng.uniform(0.2, 2.0))


def _memory_churn(stop: threading.Event, rng: random.Random) -> None:
    limit = 192 * MiB
    blocks: list[bytes] = []
    while not stop.is_set():
        held = sum(len(block) for block in blocks)
        roll = rng.random()
        if roll < 0.1:
            blocks.clear()
        elif roll < 0.6 and held < limit:
            size = rng.randint(1, 48) * MiB
            # Repetition writes every byte (bytearray(n) would be calloc'd and
            # stay untouched), so RSS really grows; blocks this large are
            # mmap'd, so freeing them really shrinks it again.
            blocks.append(b"\x5a" * min(size, limit - held))
        elif blocks:
            blocks.pop(rng.randrange(len(blocks)))
        stop.wait(rng.uniform(0.5, 4.0))


def _spawn_children(stop: threading.Event, rng: random.Random) -> None:
    while not stop.wait(rng.uniform(2.0, 12.0)):
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _GRANDCHILD_CODE,
                    rng.choice(("spin", "spin", "sleep")),
                    f"{rng.uniform(0.3, 3.0):.2f}",
                ],
                stdin=subprocess.DEVNULL,
            )
            for _ in range(rng.choice((1, 1, 1, 2)))
        ]
        try:
            for proc in procs:
                while proc.poll() is None and not stop.wait(0.1):
                    pass
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def _watch_stdin(stop: threading.Event) -> None:
    # The recorder holds our stdin open; EOF means it died without stopping
    # us (e.g. SIGKILL), so don't linger as an orphan burning CPU.
    sys.stdin.buffer.read()
    stop.set()


def run_workload(seed: int) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_watch_stdin, args=(stop,), name="stdin", daemon=True).start()

    workers: list[tuple[str, Callable[[threading.Event, random.Random], None]]] = [
        ("compress", _compress_bursts),
        ("files", _file_churn),
        ("memory", _memory_churn),
        ("spawn", _spawn_children),
    ]
    threads = [
        threading.Thread(target=target, args=(stop, random.Random(seed * 100 + i)), name=name)
        for i, (name, target) in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join()


# ---------------------------------------------------------------------------
# Recorder
# ---------------------------------------------------------------------------


def _start_workload(seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--workload", "--seed", str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )


def _stop_workload(child: subprocess.Popen[bytes]) -> None:
    if child.stdin is not None:
        child.stdin.close()
    stop_process(child, CHILD_STOP_TIMEOUT_S)


def _write(fh: IO[bytes], name: str, ts: float, data: dict[str, Any]) -> int:
    line = orjson.dumps({"name": name, "ts": ts, "data": data}) + b"\n"
    fh.write(line)
    return len(line)


class _Cost:
    """Wall and CPU time per sample() call.

    Wall time includes waiting for a core while the workload keeps them busy;
    the sampling thread's CPU time is what sampling itself costs the host.
    """

    def __init__(self) -> None:
        self.wall_s: list[float] = []
        self.cpu_s: list[float] = []

    def measure(self, sample: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        result = sample()
        self.cpu_s.append(time.thread_time() - cpu)
        self.wall_s.append(time.perf_counter() - wall)
        return result

    def summary(self, label: str) -> str:
        return f"{label}: wall {_stats(self.wall_s)}; cpu {_stats(self.cpu_s)}"


def _stats(seconds: Sequence[float]) -> str:
    us = sorted(value * 1e6 for value in seconds)
    p95 = us[min(len(us) - 1, int(len(us) * 0.95))]
    return (
        f"mean {statistics.fmean(us):.0f} us, median {statistics.median(us):.0f} us, "
        f"p95 {p95:.0f} us, max {us[-1]:.0f} us"
    )


def record(minutes: float, interval: float, out: Path, mounts: Sequence[str], seed: int) -> None:
    total = max(1, round(minutes * 60 / interval))
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed at the end so an aborted run never leaves a
    # truncated file that looks like a valid benchmark input.
    partial = out.with_name(out.name + ".partial")
    child = _start_workload(seed)
    log = sys.stderr
    print(
        f"recording pid {child.pid}: {total} samples every {interval:g}s -> {out}",
        file=log,
        flush=True,
    )
    proc_cost = _Cost()
    sys_cost = _Cost()
    written = 0
    try:
        proc_sampler = ProcessSampler(child.pid)
        sys_sampler = SystemSampler(mounts)
        start = time.monotonic()
        next_progress = start + PROGRESS_EVERY_S
        with partial.open("wb") as fh:
            for index in range(1, total + 1):
                # Deadlines from a fixed origin so sampling cost doesn't drift
                # the cadence.
                time.sleep(max(0.0, start + index * interval - time.monotonic()))

                ts = round(time.time(), 3)
                proc_data = proc_cost.measure(proc_sampler.sample)
                if proc_data is None:
                    raise RuntimeError(
                        f"workload pid {child.pid} exited early (code {child.poll()})"
                    )
                written += _write(fh, "process", ts, proc_data)

                ts = round(time.time(), 3)
                sys_data = sys_cost.measure(sys_sampler.sample)
                written += _write(fh, "system", ts, sys_data)

                now = time.monotonic()
                if now >= next_progress or index == total:
                    next_progress += PROGRESS_EVERY_S
                    cpu = proc_data["cpu"]["percent"]
                    rss = proc_data["mem"]["rss"] / MiB
                    print(
                        f"[{now - start:5.0f}s] {index}/{total} samples, {written} bytes; "
                        f"workload cpu {cpu}% rss {rss:.0f} MiB "
                        f"threads {proc_data['threads']} children {proc_data['children']}",
                        file=log,
                        flush=True,
                    )
        partial.replace(out)
    finally:
        _stop_workload(child)
        partial.unlink(missing_ok=True)
    print(f"wrote {2 * total} lines, {written} bytes to {out}", file=log)
    print(proc_cost.summary("ProcessSampler.sample()"), file=log)
    print(sys_cost.summary("SystemSampler.sample()"), file=log)


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Record watchdog process and system samples of a synthetic busy "
        "workload as NDJSON (the delta-encoding benchmark input).",
    )
    parser.add_argument(
        "--minutes", type=_positive, default=3.0, help="recording length (default: 3)"
    )
    parser.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between samples (default: 1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "data" / "recording.ndjson",
        help="output NDJSON file (default: bench/data/recording.ndjson)",
    )
    parser.add_argument(
        "--mount",
        dest="mounts",
        metavar="MOUNT",
        action="append",
        help="mount point for disk usage; repeatable (default: /)",
    )
    parser.add_argument("--seed", type=int, default=0, help="workload random seed (default: 0)")
    parser.add_argument("--workload", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.workload:
        run_workload(args.seed)
        return
    try:
        record(args.minutes, args.interval, args.out, args.mounts or ["/"], args.seed)
    except KeyboardInterrupt:
        sys.exit("interrupted; no output written")


if __name__ == "__main__":
    main()
