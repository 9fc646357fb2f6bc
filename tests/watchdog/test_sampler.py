"""Tests for watchdog.sampler against real processes and the real host."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from deltawire.watchdog.sampler import ProcessSampler, SystemSampler

SLEEPER = "import time; time.sleep(30)"

# Each level spawns the next, then prints its own PID: once the test has read
# depth + 1 lines, every process in the chain exists.
CHAIN = """
import os, subprocess, sys, time
depth, code = int(sys.argv[1]), sys.argv[2]
if depth > 0:
    subprocess.Popen([sys.executable, "-c", code, str(depth - 1), code])
print(os.getpid(), flush=True)
time.sleep(30)
"""

Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    procs: list[subprocess.Popen[str]] = []

    def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        return proc

    try:
        yield _spawn
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


def find_none(value: Any, path: str = "$") -> list[str]:
    """Paths of every None inside a JSON-like value."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [hit for key, item in value.items() for hit in find_none(item, f"{path}.{key}")]
    if isinstance(value, list | tuple):
        return [hit for i, item in enumerate(value) for hit in find_none(item, f"{path}[{i}]")]
    return []


def assert_clean_json(sample: dict[str, Any]) -> None:
    assert find_none(sample) == []
    # Round-trips unchanged: only JSON types, nothing orjson would coerce.
    assert orjson.loads(orjson.dumps(sample)) == sample


def test_process_sample_fields(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    sample = ProcessSampler(proc.pid).sample()

    assert sample is not None
    assert_clean_json(sample)
    assert sample["pid"] == proc.pid
    assert isinstance(sample["status"], str)
    assert set(sample["cpu"]) == {"percent", "user", "system"}
    assert all(isinstance(v, float) for v in sample["cpu"].values())
    assert set(sample["mem"]) == {"rss", "vms"}
    assert sample["mem"]["rss"] > 0
    assert sample["threads"] >= 1
    assert set(sample["ctx"]) == {"voluntary", "involuntary"}
    assert sample["children"] == 0
    if hasattr(psutil.Process, "num_fds"):
        assert sample["fds"] >= 3  # stdin, stdout, stderr
    if hasattr(psutil.Process, "io_counters"):
        assert set(sample["io"]) == {"read_bytes", "write_bytes", "read_count", "write_count"}
    for counter in (
        sample["mem"]["rss"],
        sample["mem"]["vms"],
        sample["threads"],
        *sample["ctx"].values(),
        *sample.get("io", {}).values(),
    ):
        assert isinstance(counter, int)


def test_descendants_are_counted_and_summed(spawn: Spawn) -> None:
    proc = spawn(CHAIN, "2", CHAIN)
    assert proc.stdout is not None
    pids = [int(proc.stdout.readline()) for _ in range(3)]
    descendants = [pid for pid in pids if pid != proc.pid]
    try:
        sampler = ProcessSampler(proc.pid)
        sample = sampler.sample()
        assert sample is not None
        assert_clean_json(sample)
        assert sample["children"] == 2  # grandchild and great-grandchild
        assert sample["threads"] >= 3
        own_rss = psutil.Process(proc.pid).memory_info().rss
        assert sample["mem"]["rss"] > own_rss

        # Cached children are reused across samples, not rediscovered.
        again = sampler.sample()
        assert again is not None
        assert again["children"] == 2
    finally:
        for pid in reversed(descendants):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sample_is_none_once_the_process_exited(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    sampler = ProcessSampler(proc.pid)
    assert sampler.sample() is not None

    proc.terminate()
    proc.wait(timeout=10)

    assert sampler.sample() is None
    assert sampler.sample() is None


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="needs os.waitid")
def test_zombie_counts_as_exited(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    sampler = ProcessSampler(proc.pid)
    proc.terminate()
    # WNOWAIT blocks until the child has exited but leaves it unreaped.
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)

    assert sampler.sample() is None


def test_missing_pid_raises(spawn: Spawn) -> None:
    proc = spawn("pass")
    proc.wait(timeout=10)
    with pytest.raises(psutil.NoSuchProcess):
        ProcessSampler(proc.pid)


def test_system_sample_fields() -> None:
    sample = SystemSampler().sample()

    assert_clean_json(sample)
    assert 0.0 <= sample["cpu"]["percent"] <= 100.0
    assert len(sample["load"]) == 3
    assert all(isinstance(v, float) for v in sample["load"])
    assert set(sample["mem"]) == {"total", "available", "used", "percent"}
    assert set(sample["swap"]) == {"total", "used", "percent"}
    if psutil.disk_io_counters() is not None:
        assert set(sample["disk_io"]) == {"read_bytes", "write_bytes", "read_count", "write_count"}
    if psutil.net_io_counters() is not None:
        assert set(sample["net_io"]) == {"bytes_sent", "bytes_recv", "packets_sent", "packets_recv"}
    assert list(sample["disk"]) == ["/"]
    assert set(sample["disk"]["/"]) == {"total", "used", "percent"}
    assert sample["disk"]["/"]["total"] > 0


def test_bad_mount_is_skipped(tmp_path: Path) -> None:
    missing = str(tmp_path / "not-a-mount")
    sample = SystemSampler(["/", missing]).sample()
    assert list(sample["disk"]) == ["/"]

    only_bad = SystemSampler([missing]).sample()
    assert "disk" not in only_bad
    assert_clean_json(only_bad)


def test_new_children_are_found_at_the_next_rescan() -> None:
    # A parent that starts a child only once told to (a line on stdin).
    code = (
        "import subprocess, sys, time\n"
        "sys.stdin.readline()\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(c.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lazy = ProcessSampler(proc.pid, children_rescan=3600)
        eager = ProcessSampler(proc.pid, children_rescan=0)
        assert lazy.sample()["children"] == 0  # type: ignore[index]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        child = int(proc.stdout.readline())
        assert eager.sample()["children"] == 1  # type: ignore[index]
        # The lazy sampler keeps its cached (empty) list until its next rescan.
        assert lazy.sample()["children"] == 0  # type: ignore[index]
        os.kill(child, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
