"""The supervisor with real child processes and real signals."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest
import trio

from deltawire.testing.harness import wait_for
from deltawire.watchdog.supervisor import ExitStatus, SpawnError, Supervisor, wait_pid_exit


def test_exit_status_mapping() -> None:
    assert ExitStatus.from_returncode(3) == ExitStatus(3)
    assert ExitStatus.from_returncode(3).bye_data() == {"exit_code": 3}
    killed = ExitStatus.from_returncode(-signal.SIGTERM)
    assert killed.exit_code == 143
    assert killed.bye_data() == {"signal": "SIGTERM"}
    assert ExitStatus(0, reason="stopped").bye_data() == {"reason": "stopped"}


async def test_exit_code_of_the_child() -> None:
    sup = Supervisor(["sh", "-c", "exit 3"])
    await sup.spawn()
    assert await sup.wait() == ExitStatus(3)


async def test_environment_reaches_the_child(tmp_path: object) -> None:
    sup = Supervisor(["sh", "-c", 'test "$DELTAWIRE_EVENTS" = /x/y'], {"DELTAWIRE_EVENTS": "/x/y"})
    await sup.spawn()
    assert (await sup.wait()).exit_code == 0


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["/nonexistent/program"], 127), (["/etc/hostname"], 126)],
)
async def test_spawn_errors_follow_the_shell(argv: list[str], code: int) -> None:
    with pytest.raises(SpawnError) as info:
        await Supervisor(argv).spawn()
    assert info.value.exit_code == code
    assert argv[0] in str(info.value)


async def test_signals_reach_the_whole_process_group() -> None:
    # sh would die of SIGTERM and leave its sleep behind; the group dies as one.
    sup = Supervisor(["sh", "-c", "sleep 30; exit 0"])
    pid = await sup.spawn()
    proc = psutil.Process(pid)
    await wait_for(proc.children, 30, "sh to start its sleep")  # a process start: generous
    grandchild = proc.children()[0]
    sup.send_signal(signal.SIGTERM)
    status = await sup.wait()
    assert status.signal == signal.SIGTERM and status.exit_code == 143
    with trio.fail_after(10):
        await wait_pid_exit(grandchild.pid)  # a pidfd: readable once it exited


async def test_a_trapped_signal_decides_the_exit_code() -> None:
    sup = Supervisor(
        [sys.executable, "-c",
         "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
         "print('ready', flush=True)\n"
         "time.sleep(30)\n"],
    )  # fmt: skip
    # stdout is inherited; to see "ready" run the child through a pipe instead.
    sup.process = await trio.lowlevel.open_process(sup.argv, stdout=subprocess.PIPE,
                                                   process_group=0)  # fmt: skip
    assert sup.process.stdout is not None
    with trio.fail_after(30):  # a Python start: generous on a slow machine
        assert b"ready" in await sup.process.stdout.receive_some(100)
    sup.send_signal(signal.SIGTERM)
    assert await sup.wait() == ExitStatus(7)
    await sup.process.stdout.aclose()


async def test_wait_pid_exit_for_a_process_that_is_not_ours() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def waiter() -> None:
                await wait_pid_exit(proc.pid)
                done.set()

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            proc.terminate()
            with trio.fail_after(10):
                await done.wait()
    finally:
        proc.kill()
        proc.wait()


async def test_kill_reaps_a_child_still_running() -> None:
    sup = Supervisor(["sleep", "30"])
    await sup.spawn()
    await sup.kill()
    assert sup.process is not None and sup.process.returncode == -signal.SIGKILL
