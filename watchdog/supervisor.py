"""The watched application: start it, forward signals to it, learn how it ended.

The child runs in its own process group and signals are forwarded to the whole
group, so ``sh -c 'sleep 2; exit 3'`` stops as one even though ``sh`` would
leave ``sleep`` behind. (The price: an interactive program that reads the
terminal is stopped by SIGTTIN; the watchdog is meant for services.)

Why this is not the collector's child-process helper (``collector/child.py``):
the jobs differ in every part that helper has. It restarts a child of our own
with backoff and stops it by EOF on a stdin pipe; here the child is the
user's program, run exactly once (its exit ends the session and becomes the
watchdog's exit code), with the terminal's stdio, in a process group of its
own, with every operator signal forwarded. What both do, start a process and
kill-and-reap it, is one trio call each.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psutil
import trio

__all__ = [
    "FORWARDED_SIGNALS",
    "ExitStatus",
    "SpawnError",
    "Supervisor",
    "wait_pid_exit",
]

#: What an operator or init system sends to stop or poke a service.
FORWARDED_SIGNALS: Final = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class SpawnError(Exception):
    """The command could not be started; ``exit_code`` follows the shell (127, 126)."""

    def __init__(self, msg: str, exit_code: int) -> None:
        super().__init__(msg)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How the session ended, and the exit code the watchdog itself returns."""

    exit_code: int
    signal: int | None = None  # the child was killed by this signal
    reason: str | None = None  # for sessions without a child: "exited", "stopped"

    @classmethod
    def from_returncode(cls, rc: int) -> ExitStatus:
        if rc < 0:
            # The shell's convention, so scripts see what they would without us.
            return cls(128 - rc, signal=-rc)
        return cls(rc)

    def bye_data(self) -> dict[str, Any]:
        """The bye's data as docs/protocol.md has it: ``{"exit_code": 3}`` or
        ``{"signal": "SIGTERM"}``; ``{"reason": ...}`` without a child."""
        if self.signal is not None:
            try:
                return {"signal": signal.Signals(self.signal).name}
            except ValueError:
                return {"signal": f"SIG{self.signal}"}
        if self.reason is not None:
            return {"reason": self.reason}
        return {"exit_code": self.exit_code}


class Supervisor:
    """Runs one command as the watchdog's child."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        if not argv:
            raise ValueError("empty command")
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.process: trio.Process | None = None
        self.forwarded = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def spawn(self) -> int:
        """Start the command (stdio inherited); returns its pid."""
        try:
            self.process = await trio.lowlevel.open_process(
                self.argv, env=self.env, process_group=0
            )
        except FileNotFoundError:
            raise SpawnError(f"command not found: {self.argv[0]}", 127) from None
        except PermissionError:
            raise SpawnError(f"permission denied: {self.argv[0]}", 126) from None
        except OSError as exc:
            raise SpawnError(f"cannot run {self.argv[0]}: {exc.strerror or exc}", 126) from None
        return self.process.pid

    def send_signal(self, signum: int) -> None:
        """Deliver ``signum`` to the child's process group (to the child alone if
        it left the group)."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        self.forwarded += 1
        try:
            os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    async def forward(self, signals: Any) -> None:
        """Forward every signal from a ``trio.open_signal_receiver``."""
        async for signum in signals:
            self.send_signal(signum)

    async def wait(self) -> ExitStatus:
        assert self.process is not None
        return ExitStatus.from_returncode(await self.process.wait())

    async def kill(self) -> None:
        """Last resort when the watchdog itself must stop: kill and reap."""
        proc = self.process
        if proc is not None and proc.returncode is None:
            self.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await proc.wait()


async def wait_pid_exit(pid: int, poll: float = 1.0) -> None:
    """Until process ``pid`` (not our child) has exited.

    Uses a pidfd (Linux >= 5.3): readable exactly when the process exits, and
    immune to pid reuse. Elsewhere it polls, as there is no event to wait for.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:
            fd = None
        if fd is not None:
            try:
                await trio.lowlevel.wait_readable(fd)
                return
            finally:
                os.close(fd)
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
        await trio.sleep(poll)
