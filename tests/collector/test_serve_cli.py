"""``collector serve`` on a first run: a port that is taken is named, before
anything starts (exit code 1, one line, no traceback)."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import pytest

from deltawire.testing.servers import free_port


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
