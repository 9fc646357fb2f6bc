"""The `watchdog` command as a user meets it: real processes, messages, exit codes."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from deltawire.testing.harness import wait_until
from deltawire.watchdog.spool import Spool, session_dir, summarize

REPO = pathlib.Path(__file__).resolve().parents[2]


def env_for(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WATCHDOG_", "DELTAWIRE_", "LOG_"))}  # fmt: skip
    env.update(PYTHONPATH=str(REPO), DELTAWIRE_CONFIG_DIR=str(tmp_path),
               WATCHDOG_SPOOL_DIR=str(tmp_path / "spool"))  # fmt: skip
    env.update(extra)
    return env


def watchdog(tmp_path: pathlib.Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deltawire.watchdog", *args], env=env_for(tmp_path, **extra),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [[], ["run"], ["emit"], ["spool"], ["spool", "status"], ["spool", "send"], ["spool", "purge"]],
)
def test_every_command_has_help(tmp_path: pathlib.Path, args: list[str]) -> None:
    r = watchdog(tmp_path, *args, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage: watchdog" in r.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (
            ["run", "--interval", "fast", "--", "true"],
            {},
            "--interval: 'fast' must be a number > 0",
        ),
        (["run", "--push-every", "0", "--", "true"], {}, "--push-every"),
        (["run", "--", "true"], {"WATCHDOG_INTERVAL": "-1"}, "WATCHDOG_INTERVAL"),
        (["run", "--", "true"], {"WATCHDOG_COLLECTOR": "nohost"}, "WATCHDOG_COLLECTOR"),
        (["run", "--", "true"], {"WATCHDOG_SPOOL_MAX_BYTES": "1k"}, "WATCHDOG_SPOOL_MAX_BYTES"),
        (["run", "--", "true"], {"WATCHDOG_FSYNC": "sometimes"}, "WATCHDOG_FSYNC"),
        (["run"], {}, "give exactly one of"),
        (["run", "--system-only", "--", "true"], {}, "give exactly one of"),
        (["run", "--session", "has space", "--", "true"], {}, "--session"),
        (["run", "--pid", "99999999"], {}, "no process 99999999"),
        # The hello's limits, checked at start rather than refused by the collector.
        (["run", "--tag", "x" * 129, "--", "true"], {}, "at most 128 characters"),
        (["run", *[f"--tag=t{i}" for i in range(65)], "--", "true"], {}, "at most 64 tags"),
        (["run", "--", "true"], {"WATCHDOG_TAGS": ",".join("t" * 65)}, "WATCHDOG_TAGS"),
        (["run", "--token", "k" * 1025, "--", "true"], {}, "--token"),
    ],
)
def test_bad_input_is_a_message_and_an_exit_code(tmp_path: pathlib.Path, args: list[str],
                                                 env: dict[str, str], needle: str) -> None:  # fmt: skip
    r = watchdog(tmp_path, *args, **env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_env_file_values_are_used_and_flags_win(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text("WATCHDOG_INTERVAL=abc\n")
    r = watchdog(tmp_path, "run", "--", "true")
    assert r.returncode == 2 and "WATCHDOG_INTERVAL" in r.stderr and ".env" in r.stderr
    r = watchdog(tmp_path, "run", "--interval", "0.1", "--collector", "127.0.0.1:9", "--", "true",
                 WATCHDOG_SHUTDOWN_GRACE="0.2")  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_command_not_found_exits_127(tmp_path: pathlib.Path) -> None:
    r = watchdog(tmp_path, "run", "--", "/nonexistent/cmd")
    assert r.returncode == 127
    assert "command not found: /nonexistent/cmd" in r.stderr and "Traceback" not in r.stderr


def test_exit_code_and_quiet_logs_with_no_collector(tmp_path: pathlib.Path) -> None:
    # Nothing listens on port 9: the run still ends with the child's exit code,
    # logs one warning for the outage and one for the unacknowledged end.
    r = watchdog(tmp_path, "run", "--collector", "127.0.0.1:9", "--interval", "0.1", "--",
                 "sh", "-c", "sleep 0.5; exit 3", WATCHDOG_SHUTDOWN_GRACE="0.3")  # fmt: skip
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert '"dashboard":"http://127.0.0.1:8080/ui/sessions/' in lines[0]  # where to look
    assert 1 <= len(lines[1:]) <= 3, r.stderr
    assert all(line.startswith("{") for line in lines)  # structured (JSON) logs


def test_sigterm_is_forwarded_and_the_childs_code_returned(tmp_path: pathlib.Path) -> None:
    app = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
           "print('ready', flush=True)\n"
           "time.sleep(60)\n")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "deltawire.watchdog", "run", "--collector", "127.0.0.1:9", "--",
         sys.executable, "-c", app],
        env=env_for(tmp_path, WATCHDOG_SHUTDOWN_GRACE="0.2"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_child_killed_by_a_signal_exits_128_plus_n(tmp_path: pathlib.Path) -> None:
    r = watchdog(tmp_path, "run", "--collector", "127.0.0.1:9", "--", "sh", "-c", "kill -KILL $$",
                 WATCHDOG_SHUTDOWN_GRACE="0.2")  # fmt: skip
    assert r.returncode == 128 + 9


def _backlog(root: pathlib.Path, session: str, n: int) -> None:
    spool = Spool(session_dir(root, session), meta={"session": session, "host": "h", "tags": []})
    for i in range(n):
        spool.append("sample", 1700000000.0 + i, "system", {"i": i})
    spool.commit()
    spool.close()


def test_spool_status_and_purge(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "spool"
    r = watchdog(tmp_path, "spool", "status")
    assert r.returncode == 0 and "empty" in r.stdout
    _backlog(root, "old-run-1", 5)
    _backlog(root, "old-run-2", 3)
    r = watchdog(tmp_path, "spool", "status")
    assert r.returncode == 0
    assert "old-run-1" in r.stdout and "backlog" in r.stdout and "2 session(s)" in r.stdout
    r = watchdog(tmp_path, "spool", "status", "--json")
    assert [line.count('"records"') for line in r.stdout.splitlines()] == [1, 1]

    r = watchdog(tmp_path, "spool", "purge", "--session", "old-run-1")
    assert r.returncode == 2 and "--yes" in r.stderr  # no terminal to ask on
    r = watchdog(tmp_path, "spool", "purge", "--session", "old-run-1", "--yes")
    assert r.returncode == 0 and "5 records" in r.stderr
    assert not session_dir(root, "old-run-1").exists() and session_dir(root, "old-run-2").exists()


def test_spool_send_gives_up_on_an_unreachable_collector(tmp_path: pathlib.Path) -> None:
    _backlog(tmp_path / "spool", "old-run", 3)
    r = watchdog(tmp_path, "spool", "send", "--collector", "127.0.0.1:9", "--timeout", "1",
                 "--quiet")  # fmt: skip
    assert r.returncode == 1
    assert "old-run not delivered" in r.stderr and "Traceback" not in r.stderr
    assert session_dir(tmp_path / "spool", "old-run").exists()  # nothing lost


def test_system_only_ends_on_sigterm_with_a_bye(tmp_path: pathlib.Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "deltawire.watchdog", "run", "--system-only", "--session", "host-only",
         "--interval", "0.05", "--collector", "127.0.0.1:9"],
        env=env_for(tmp_path, WATCHDOG_SHUTDOWN_GRACE="0.2"), stderr=subprocess.DEVNULL,
    )  # fmt: skip
    directory = session_dir(tmp_path / "spool", "host-only")
    try:

        def spooled() -> bool:
            assert proc.poll() is None, "the watchdog exited early"
            return directory.exists() and summarize(directory).records >= 2

        wait_until(spooled, 60, "two records in the spool")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    spool = Spool(directory)
    cursor = spool.cursor(-1)
    records = cursor.next_batch(1 << 20)
    cursor.close()
    spool.close()
    assert {r.name for r in records if r.kind == "sample"} == {"system"}
    assert records[-1].kind == "bye" and records[-1].data == {"reason": "stopped"}


def test_unusable_tls_ca_is_a_message(tmp_path: pathlib.Path) -> None:
    r = watchdog(tmp_path, "run", "--", "true", WATCHDOG_TLS_CA=str(tmp_path / "missing.pem"))
    assert r.returncode == 2 and "WATCHDOG_TLS_CA" in r.stderr and "Traceback" not in r.stderr
