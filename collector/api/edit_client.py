"""The edit writer process (edit_writer.py) as the API process sees it:
``EditWriter`` starts it, sends it groups of edits, matches its answers to
them, restarts it if it dies, and stops it with the API.

A group's answer waits for the writer's commit (and fsync): durability is
the same as in-process. If the writer dies, the groups it had get a
StoreUnavailable (every request in them: 503 ``store_unavailable``, as for a
store that fails) and so does every group until it is back: it is restarted
at once, then with backoff if it keeps dying (it exits at start when it
cannot open the store). A client may then retry, as after any 503. An edit
whose group was under way when the writer died may or may not have been
committed (as when a connection drops after a request was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import subprocess
import sys
import time
from collections.abc import Sequence

import anyio

from deltawire.collector.stores.base import StoreError, StoreUnavailable
from deltawire.retry import Backoff

from .edit_jobs import EditDone, EditJob
from .edit_writer import HEADER, READY, Failed, frame

__all__ = ["EditWriter", "EditWriterFailed"]

log = logging.getLogger("deltawire.collector.api")

#: A writer that keeps dying is restarted at most every 10 s; one that ran
#: this long before it died was healthy, and is restarted at once.
_RESTART_BACKOFF = Backoff(0.5, 10.0)
_HEALTHY_AFTER_S = 30.0
#: Its start (opening the store: a MongoDB server may take its timeout to
#: answer) and its exit once its stdin is closed (the groups under way).
_START_S = 60.0
_STOP_S = 10.0


class EditWriterFailed(Exception):
    """The edit writer did not start (it could not open the store)."""


class EditWriter:
    """``apply(jobs)``: their answers, committed by the writer process."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = [sys.executable, "-m", "deltawire.collector.api.edit_writer", *argv]
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[list[EditDone] | Failed]] = {}
        self._groups = 0
        self._up = False  # started and answering
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the writer and supervise it; EditWriterFailed if it does not come up."""
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _spawn(self) -> None:
        proc = self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            group, _ = await asyncio.wait_for(_read_frame(proc.stdout), _START_S)
        except (asyncio.IncompleteReadError, TimeoutError):
            group = None
        if group != READY:
            await self._reap(proc)
            raise EditWriterFailed(f"the edit writer did not start (exit {proc.returncode})")
        self._up = True

    async def _supervise(self) -> None:
        """Hand the writer's answers to their groups until its stdout ends;
        then restart it: at once, then with backoff while it keeps dying."""
        failures = 0
        while True:
            started = time.monotonic()
            proc = self._proc
            if self._up and proc is not None:
                await self._answers(proc)
                self._lost()
                await self._reap(proc)
                log.error("the edit writer process exited; restarting it",
                          extra={"code": proc.returncode})  # fmt: skip
                failures = 1 if time.monotonic() - started > _HEALTHY_AFTER_S else failures + 1
            if failures > 1:
                await asyncio.sleep(_RESTART_BACKOFF.delay(failures - 1))
            try:
                await self._spawn()
                self.restarts += 1
            except EditWriterFailed as e:
                failures += 1
                log.error("%s; retrying", e)

    async def _answers(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                group, result = await _read_frame(proc.stdout)
                future = self._pending.pop(group, None)
                if future is not None and not future.done():
                    future.set_result(result)  # type: ignore[arg-type]

    def _lost(self) -> None:
        self._up = False
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(Failed(True, "the edit writer process exited"))

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: it answers what it has and exits
        try:
            await asyncio.wait_for(proc.wait(), _STOP_S)
        except TimeoutError:
            log.error("the edit writer did not exit; killing it", extra={"pid": proc.pid})
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def apply(self, jobs: list[EditJob]) -> list[EditDone]:
        """The answers of ``jobs``, committed together; StoreError (503) if
        the writer failed or is not running."""
        proc = self._proc
        if not self._up or proc is None or proc.stdin is None:
            raise StoreUnavailable("the edit writer process is not running (restarting)")
        self._groups += 1
        group = self._groups
        future = self._pending[group] = asyncio.get_running_loop().create_future()
        try:
            # No drain: at most MAX_FLUSHES groups are under way (EditBatcher),
            # so what waits in the pipe's buffer stays small.
            proc.stdin.write(frame(group, jobs))
        except (OSError, RuntimeError) as e:  # it died just now: the supervisor restarts it
            self._pending.pop(group, None)
            raise StoreUnavailable(f"the edit writer process is gone: {e}") from None
        # Sent: from here on the writer may commit it, so its answer is
        # awaited whatever happens to this request (EditBatcher relies on it).
        with anyio.CancelScope(shield=True):
            result = await future
        if isinstance(result, Failed):
            raise (StoreUnavailable if result.unavailable else StoreError)(result.reason)
        return result

    async def aclose(self) -> None:
        """Stop supervising, then the writer (once the groups under way are answered)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._proc is not None:
            await self._reap(self._proc)
        self._lost()


async def _read_frame(stream: asyncio.StreamReader) -> tuple[int, object]:
    (size,) = HEADER.unpack(await stream.readexactly(HEADER.size))
    group, body = pickle.loads(await stream.readexactly(size))  # from our own child only
    return group, body
