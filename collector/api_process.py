"""The HTTP API runs in its own process (uvicorn + Starlette; measured ~15x the
requests/s of an HTTP server inside the trio loop). This module starts it, keeps
it running, and feeds it over its stdin: the ingest counters for ``/stats`` and
which sessions/names changed, so cached answers are invalidated."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
import trio

from deltawire.retry import Backoff

from .child import Child

if TYPE_CHECKING:
    from .pipeline import Chunk

__all__ = ["ApiProcess"]

#: An API process that keeps dying is restarted at most every 10 s; one that
#: served this long before it died was healthy, and restarts at once.
_RESTART_BACKOFF = Backoff(0.5, 10.0)
_HEALTHY_AFTER_S = 30.0

log = logging.getLogger("deltawire.collector.api_process")


class ApiProcess:
    def __init__(self, argv: list[str], stats_text: Callable[[], str]) -> None:
        self.argv = [sys.executable, "-m", "deltawire.collector.api", "--control-stdin",
                     "--parent-pid", str(os.getpid()), *argv]  # fmt: skip
        self._child = Child(self.argv, _RESTART_BACKOFF, grace=5.0)
        self._stats_text = stats_text
        self._sessions: set[str] = set()
        self._names: set[str] = set()
        self._span = [math.inf, -math.inf]  # of the timestamps since the last bump
        self.started = trio.Event()

    @property
    def process(self) -> trio.Process | None:
        """The API process, once started."""
        return self._child.process

    def on_commit(self, batch: list[Chunk]) -> None:
        span = self._span
        for chunk in batch:
            self._sessions.add(chunk.session)
            self._names |= chunk.names
            if chunk.lo < span[0]:
                span[0] = chunk.lo
            if chunk.hi > span[1]:
                span[1] = chunk.hi

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the API process until cancelled; restart it (with backoff) if it dies."""
        proc = await self._child.start()
        task_status.started()
        while True:
            started = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._feed, proc, nursery.cancel_scope)
                    await proc.wait()
                    nursery.cancel_scope.cancel()
            finally:
                await self._child.stop(terminate=True)
            log.error("the HTTP API process exited; restarting it", extra={"code": proc.returncode})
            if trio.current_time() - started > _HEALTHY_AFTER_S:
                self._child.healthy()
            proc = await self._child.restart()

    async def _feed(self, proc: trio.Process, scope: trio.CancelScope) -> None:
        assert proc.stdin is not None
        tick = 0
        try:
            while True:
                lines = []
                if self._sessions or self._names:
                    bump: dict[str, object] = {"op": "bump", "sessions": sorted(self._sessions),
                                               "names": sorted(self._names)}  # fmt: skip
                    if all(map(math.isfinite, self._span)):
                        bump["span"] = self._span
                    lines.append(orjson.dumps(bump))
                    self._sessions.clear()
                    self._names.clear()
                    self._span = [math.inf, -math.inf]
                if tick % 10 == 0:
                    lines.append(orjson.dumps({"op": "stats", "text": self._stats_text()}))
                if lines:
                    await proc.stdin.send_all(b"\n".join(lines) + b"\n")
                tick += 1
                await trio.sleep(0.1)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()
