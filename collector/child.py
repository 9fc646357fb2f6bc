"""The collector's child processes (the store writer, the HTTP API): one way to
start one, restart it with backoff after it died, and stop it.

The owner notices a death its own way (the writer when a read of the child's
answers fails, the API supervisor when the process exits) and calls
``restart``; consecutive restarts wait longer and longer, so a child that
dies at start-up cannot spin a core. ``healthy`` resets the count.
"""

from __future__ import annotations

import subprocess

import trio

from deltawire.retry import Backoff

__all__ = ["STOP_GRACE_S", "Child"]

#: Seconds ``stop`` gives a child to finish by itself before killing it: the
#: writer may be committing its last batch.
STOP_GRACE_S = 10.0


class Child:
    def __init__(
        self,
        argv: list[str],
        backoff: Backoff,
        *,
        stdout: bool = False,
        grace: float = STOP_GRACE_S,
    ) -> None:
        self.argv = argv
        self.backoff = backoff
        #: seconds ``stop`` waits for the child to exit by itself before killing it
        self.grace = grace
        self._stdout = subprocess.PIPE if stdout else None
        self.process: trio.Process | None = None
        self.failures = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> trio.Process:
        """The child, started now unless it is running (stdin is always a pipe)."""
        if self.process is None or self.process.returncode is not None:
            self.process = await trio.lowlevel.open_process(
                self.argv, stdin=subprocess.PIPE, stdout=self._stdout
            )
        return self.process

    async def restart(self) -> trio.Process:
        """Kill what is left of the child, wait out the backoff, start it again."""
        self.failures += 1
        with trio.CancelScope(shield=True):
            if self.process is not None:
                await _kill(self.process)
            await trio.sleep(self.backoff.delay(self.failures))
        return await self.start()

    def healthy(self) -> None:
        """The child works again: the next restart waits the least."""
        self.failures = 0

    async def stop(self, terminate: bool = False) -> None:
        """EOF on its stdin (it finishes and exits), SIGTERM too if ``terminate``;
        killed after ``grace`` seconds."""
        proc = self.process
        if proc is None:
            return
        with trio.CancelScope(shield=True):
            if proc.stdin is not None:
                try:
                    await proc.stdin.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            if terminate and proc.returncode is None:
                proc.terminate()
            with trio.move_on_after(self.grace):
                await proc.wait()
            await _kill(proc)


async def _kill(proc: trio.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    with trio.CancelScope(shield=True):
        await proc.wait()
