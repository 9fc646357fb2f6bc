"""The folder process computes at SCHED_IDLE and writes at the normal policy."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from deltawire.collector.stores.sqlite_folder import _Policy
from deltawire.testing.harness import sqlite_with_folder, wait_until

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE") or not _Policy(0, 10).works(),
    reason="this kernel or these privileges give no way back from SCHED_IDLE",
)

_PROBE = """
import os
from deltawire.collector.stores.sqlite_folder import _Policy
base = os.getpriority(os.PRIO_PROCESS, 0)
os.nice(10)
policy = _Policy(base, base + 10)
policy.rest()
seen = []
def now():
    seen.extend([os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0) - base])
now()
with policy.normal():
    now()
now()
print(*seen)
"""


def test_normal_inside_idle_outside() -> None:
    """Write transactions at the normal policy and the priority the folder
    was started with; idle (and niced) outside them."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, timeout=30)  # fmt: skip
    idle, normal = str(os.SCHED_IDLE), str(os.SCHED_OTHER)
    assert out.stdout.split() == [idle, "10", normal, "0", idle, "10"]


_STARVED_PROBE = """
import os, time
from deltawire.collector.stores import sqlite_folder
sqlite_folder.STARVED_S = 0.05
policy = sqlite_folder._Policy(0, 10)
policy.rest()
stop = policy.paced(lambda timeout: False)
seen = [os.sched_getscheduler(0)]
deadline = time.monotonic() + 20
while os.sched_getscheduler(0) == os.SCHED_IDLE and time.monotonic() < deadline:
    stop(0)  # a full slice each time: behind
seen.append(os.sched_getscheduler(0))
with policy.normal():
    pass
seen.append(os.sched_getscheduler(0))  # still resting at the normal policy
stop(0.2)  # a short slice: caught up
seen.append(os.sched_getscheduler(0))
print(*seen)
"""


def test_a_starved_folder_rests_niced_until_it_catches_up() -> None:
    out = subprocess.run([sys.executable, "-c", _STARVED_PROBE], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    idle, normal = str(os.SCHED_IDLE), str(os.SCHED_OTHER)
    assert out.stdout.split() == [idle, normal, normal, idle]


def _policy(pid: int) -> int:
    # /proc/PID/stat: field 41 (the fields after the command's ")" start at 3)
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[41 - 3])


def test_the_folder_process_runs_at_idle_priority(tmp_path: pathlib.Path) -> None:
    with sqlite_with_folder(tmp_path / "p.db") as (_store, folder):
        wait_until(lambda: _policy(folder.pid) == os.SCHED_IDLE, timeout=30,
                   what="the folder at SCHED_IDLE")  # fmt: skip
