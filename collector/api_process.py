"""The HTTP API runs in its own process (uvicorn + Starlette; measured ~15x the
requests/s of an HTTP server inside the trio loop). This module starts it, keeps
it running, and feeds it over its stdin: the ingest counters for ``/stats`` and
which sessions/names changed, so cached answers are invalidated."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
import trio

if TYPE_CHECKING:
    from .pipeline import Chunk

__all__ = ["ApiProcess"]

log = logging.getLogger("deltawire.collector.api_process")


class ApiProcess:
    def __init__(self, argv: list[str], stats_text: Callable[[], str]) -> None:
        self.argv = [sys.executable, "-m", "deltawire.collector.api", "--control-stdin", *argv]
        self._stats_text = stats_text
        self._sessions: set[str] = set()
        self._names: set[str] = set()
        self.process: trio.Process | None = None
        self.started = trio.Event()

    def on_commit(self, batch: list[Chunk]) -> None:
        for chunk in batch:
            self._sessions.add(chunk.session)
            self._names |= chunk.names

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the API process until cancelled; restart it if it dies."""
        backoff = 0.5
        first = True
        while True:
            proc = await trio.lowlevel.open_process(self.argv, stdin=subprocess.PIPE)
            self.process = proc
            if first:
                first = False
                task_status.started()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._feed, proc, nursery.cancel_scope)
                    await proc.wait()
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop(proc)
            log.error("the HTTP API process exited; restarting it", extra={"code": proc.returncode})
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _feed(self, proc: trio.Process, scope: trio.CancelScope) -> None:
        assert proc.stdin is not None
        tick = 0
        try:
            while True:
                lines = []
                if self._sessions or self._names:
                    lines.append(orjson.dumps({"op": "bump", "sessions": sorted(self._sessions),
                                               "names": sorted(self._names)}))  # fmt: skip
                    self._sessions.clear()
                    self._names.clear()
                if tick % 10 == 0:
                    lines.append(orjson.dumps({"op": "stats", "text": self._stats_text()}))
                if lines:
                    await proc.stdin.send_all(b"\n".join(lines) + b"\n")
                tick += 1
                await trio.sleep(0.1)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()

    @staticmethod
    async def _stop(proc: trio.Process) -> None:
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
