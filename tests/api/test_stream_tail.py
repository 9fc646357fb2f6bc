"""``collector tail`` following a real collector's GET /stream: a real
collector process, an agent streaming a session over TCP, and the tail as a
subprocess whose output is read line by line with deadlines."""

from __future__ import annotations

import pathlib
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import trio

from deltawire.testing.harness import (
    CollectorProcess,
    collector_process,
    make_samples,
    stream_session,
)

pytestmark = pytest.mark.slow

DEADLINE_S = 20.0


@pytest.fixture
def collector(tmp_path: pathlib.Path) -> Iterator[CollectorProcess]:
    with collector_process(tmp_path, http=True) as cp:
        yield cp


def lines_of(stream: object) -> queue.Queue[str]:
    """Lines of a pipe as they come (a reader thread), so a test can wait for
    the next one with a deadline."""
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return q


def tail(cp: CollectorProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "deltawire.collector", "tail",
         "--api", f"http://127.0.0.1:{cp.http_port}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_tail_prints_a_line_per_stored_document(collector: CollectorProcess) -> None:
    proc = tail(collector, "--session", "tail-me")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        status, out = lines_of(proc.stderr), lines_of(proc.stdout)
        assert status.get(timeout=DEADLINE_S).startswith("tail: following http://127.0.0.1:")
        trio.run(stream_session, collector.port, "other", make_samples(3))
        trio.run(stream_session, collector.port, "tail-me", make_samples(4))
        # "other" was stored first: had the filter let it through, it would come first.
        got = [out.get(timeout=DEADLINE_S) for _ in range(4)]
        for line in got:
            assert "\x1b[" not in line  # not a terminal: no colour
            _, session, kind, name, *summary = line.split()
            assert (session, kind, name) == ("tail-me", "sample", "process")
            assert summary[0] == "cpu"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_filter_the_collector_refuses_is_exit_code_2(collector: CollectorProcess) -> None:
    proc = tail(collector, "--session", "x" * 300)
    _, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 2
    assert "422" in err and "session" in err
    assert "Traceback" not in err
