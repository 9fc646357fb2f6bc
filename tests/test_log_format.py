"""LOG_FORMAT=auto: text with local times when stderr is a terminal (a real
pseudo-terminal here), one JSON object per line when it is not; a child
process follows its parent's LOG_FORMAT."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

SCRIPT = (
    "import logging, sys\n"
    "from deltawire.logs import setup_logging\n"
    "setup_logging('info', sys.argv[1] if len(sys.argv) > 1 else None)\n"
    "logging.getLogger('deltawire.demo').info('collector ready', extra={'port': 7700})\n"
)


def run(*args: str, tty: bool, env: dict[str, str] | None = None) -> str:
    full_env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"} | (env or {})
    if not tty:
        return subprocess.run([sys.executable, "-c", SCRIPT, *args], env=full_env,
                              capture_output=True, text=True, timeout=30, check=True).stderr  # fmt: skip
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=full_env,
                              stderr=follower, stdout=subprocess.DEVNULL, timeout=30)  # fmt: skip
        assert proc.returncode == 0
        return os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)


def test_text_with_local_time_at_a_terminal() -> None:
    line = run(tty=True).strip()
    assert re.fullmatch(r"\d\d:\d\d:\d\d info +deltawire\.demo: collector ready port=7700", line)


def test_json_when_not_a_terminal() -> None:
    doc = json.loads(run(tty=False))
    assert doc["msg"] == "collector ready" and doc["level"] == "info" and doc["port"] == 7700


def test_asked_for_explicitly_and_inherited_by_children() -> None:
    assert json.loads(run("json", tty=True).strip())["msg"] == "collector ready"
    assert run("text", tty=False).strip().endswith("collector ready port=7700")
    # setup_logging() without a format: the environment's, as the collector's children get it.
    assert json.loads(run(tty=True, env={"LOG_FORMAT": "json"}).strip())["port"] == 7700
