"""The collector's children (the store writer, the HTTP API) never outlive it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import psutil
import pytest

from deltawire.collector.child import STOP_GRACE_S
from deltawire.collector.lifeline import ORPHAN_GRACE_S
from deltawire.collector.settings import COLLECTOR_VARS
from deltawire.testing.harness import (
    COLLECTOR_STOP_TIMEOUT_S,
    REPO,
    collector_process,
    wait_until,
)


def _gone(proc: psutil.Process) -> bool:
    """Exited (a zombie waiting for whoever adopted it counts: it runs no more)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _children(pid: int) -> dict[str, psutil.Process]:
    """The collector's writer and API processes (and the API workers' edit
    writers), by role, once the writer and two API workers run."""
    found = {}
    for child in psutil.Process(pid).children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "deltawire.collector.writer_child" in cmdline:
            found["writer"] = child
        elif "deltawire.collector.api" in cmdline:
            found[f"API worker {child.pid}"] = child
            for grandchild in child.children():
                found[f"edit writer {grandchild.pid}"] = grandchild
    workers = sum(role.startswith("API worker") for role in found)
    edit_writers = sum(role.startswith("edit writer") for role in found)
    return found if "writer" in found and workers == edit_writers == 2 else {}


@pytest.mark.slow
def test_children_exit_when_the_collector_is_killed(tmp_path: pathlib.Path) -> None:
    with collector_process(tmp_path, "--writer", "process", "--api-workers", "2",
                           http=True) as col:  # fmt: skip
        children = wait_until(lambda: _children(col.pid), timeout=20, what="writer and API")
        col.kill()
        for role, child in children.items():
            try:
                wait_until(lambda c=child: _gone(c), timeout=ORPHAN_GRACE_S + 10,
                           what=f"the {role} child of a killed collector to exit")  # fmt: skip
            finally:
                if not _gone(child):
                    child.kill()


def test_a_busy_orphan_is_ended_by_its_lifeline(tmp_path: pathlib.Path) -> None:
    """A child that would never stop by itself (it ignores its stdin and waits
    for ever) still exits once its parent is gone: the lifeline ends it."""
    child = textwrap.dedent("""
        import sys, threading
        from deltawire.collector.lifeline import exit_with_parent
        exit_with_parent(int(sys.argv[1]), grace=0.1)
        threading.Event().wait()
    """)
    parent = textwrap.dedent(f"""
        import os, subprocess, sys
        c = subprocess.Popen([sys.executable, "-c", {child!r}, str(os.getpid())],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        print(c.pid, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                         cwd=REPO, timeout=30, check=True)  # fmt: skip
    orphan = psutil.Process(int(out.stdout.split()[0]))
    try:
        wait_until(lambda: _gone(orphan), timeout=10, what="the orphan to exit")
    finally:
        if not _gone(orphan):
            orphan.kill()


def test_a_stopped_collector_gets_longer_than_its_own_grace() -> None:
    """The harness SIGKILLs a collector only after its shutdown grace and its
    writer's stop could both have run out (else it would cut a clean stop)."""
    grace = next(float(v.default) for v in COLLECTOR_VARS if v.name == "SHUTDOWN_GRACE")
    assert grace + STOP_GRACE_S < COLLECTOR_STOP_TIMEOUT_S
