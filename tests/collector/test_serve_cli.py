"""``collector serve`` on a first run: a port that is taken is named, before
anything starts (exit code 1, one line, no traceback); "ready" is logged once
the dashboard it names answers."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys
import threading

import pytest

from deltawire.testing.servers import free_port, stop_process


@pytest.mark.parametrize("which", ["--listen", "--http"])
def test_a_taken_port_is_named(tmp_path: pathlib.Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        other = f"127.0.0.1:{free_port()}"
        addrs = {"--listen": other, "--http": other} | {which: busy}
        proc = subprocess.run(
            [sys.executable, "-m", "deltawire.collector", "serve", f"--listen={addrs['--listen']}",
             f"--http={addrs['--http']}", f"--store=sqlite:///{tmp_path / 'db.sqlite'}"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"{busy} is already in use" in proc.stderr
    assert which in proc.stderr  # and how to choose another
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "db.sqlite").exists()  # nothing was started


def test_ready_names_the_dashboard_once_it_answers(tmp_path: pathlib.Path) -> None:
    http = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deltawire.collector", "serve", f"--listen=127.0.0.1:{free_port()}",
         f"--http=127.0.0.1:{http}", f"--store=sqlite:///{tmp_path / 'db.sqlite'}",
         "--log-level=info"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    deadline = threading.Timer(60, proc.kill)  # a hung start fails the test, not the run
    deadline.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"collector ready"' in line:
                break
        else:
            pytest.fail("no 'collector ready' line")
        assert json.loads(line)["dashboard"] == f"http://127.0.0.1:{http}/"
        # At once, no retry: the page the line names answers.
        with socket.create_connection(("127.0.0.1", http), timeout=5):
            pass
    finally:
        deadline.cancel()
        stop_process(proc)
