"""The HTTP API runs in processes of its own (uvicorn + Starlette; measured ~15x
the requests/s of an HTTP server inside the trio loop): ``API_WORKERS`` of them
on one port (api/peers.py). This module starts them, keeps them running, and
feeds each over its stdin: the ingest counters for ``/stats`` and which
sessions/names changed, so cached answers are invalidated."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
import trio

from deltawire.retry import Backoff

from .api.__main__ import READY_LINE
from .child import Child

if TYPE_CHECKING:
    from .pipeline import Chunk

__all__ = ["MAX_AUTO_WORKERS", "ApiProcess", "auto_workers", "remove_orphan_dirs"]

#: An API process that keeps dying is restarted at most every 10 s; one that
#: served this long before it died was healthy, and restarts at once.
_RESTART_BACKOFF = Backoff(0.5, 10.0)
_HEALTHY_AFTER_S = 30.0
#: ``API_WORKERS=auto``: one a core, up to this many (each holds its own cache
#: and edit writer; past the cores they only take turns).
MAX_AUTO_WORKERS = 4

log = logging.getLogger("deltawire.collector.api_process")


_DIR_PREFIX = "deltawire-api-"


def remove_orphan_dirs(parent: str | None = None) -> int:
    """Remove the workers' directories whose collector is gone (killed before
    it could remove its own); how many. Only ours: a directory of another
    user's, or whose collector runs, stays."""
    removed = 0
    base = pathlib.Path(parent or tempfile.gettempdir())
    for path in base.glob(f"{_DIR_PREFIX}*-*"):
        pid = path.name[len(_DIR_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)  # raises if no such process
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        except OSError:  # not ours to signal, or gone meanwhile: leave it
            continue
    return removed


def auto_workers() -> int:
    """API workers for this machine: its cores (at most ``MAX_AUTO_WORKERS``)
    on Linux, whose SO_REUSEPORT spreads connections over them; 1 elsewhere."""
    if not sys.platform.startswith("linux"):
        return 1
    return max(1, min(MAX_AUTO_WORKERS, len(os.sched_getaffinity(0))))


class _Worker:
    """One API process and what it has not been told yet."""

    def __init__(self, argv: list[str]) -> None:
        # stdout: the process says "ready" there once it listens.
        self.child = Child(argv, _RESTART_BACKOFF, stdout=True, grace=5.0)
        self.ready = False  # it said so once
        self.sessions: set[str] = set()
        self.names: set[str] = set()
        self.kinds: set[str | None] = set()  # None among them: not known, so all
        self.span = [math.inf, -math.inf]  # of the timestamps since the last bump

    def note(self, batch: list[Chunk]) -> None:
        span = self.span
        for chunk in batch:
            self.sessions.add(chunk.session)
            self.names |= chunk.names
            self.kinds |= chunk.kinds
            if chunk.lo < span[0]:
                span[0] = chunk.lo
            if chunk.hi > span[1]:
                span[1] = chunk.hi

    def bump_line(self) -> bytes | None:
        if not (self.sessions or self.names):
            return None
        bump: dict[str, object] = {"op": "bump", "sessions": sorted(self.sessions),
                                   "names": sorted(self.names)}  # fmt: skip
        if None not in self.kinds:  # else left out: every kind's scope is bumped
            bump["kinds"] = sorted(self.kinds)  # type: ignore[type-var]
        if all(map(math.isfinite, self.span)):
            bump["span"] = self.span
        self.sessions, self.names, self.kinds = set(), set(), set()
        self.span = [math.inf, -math.inf]
        return orjson.dumps(bump)


class ApiProcess:
    """The API's ``workers`` processes (``API_WORKERS``), started with ``argv``."""

    def __init__(self, argv: list[str], stats_text: Callable[[], str], workers: int = 1) -> None:
        self.argv = [sys.executable, "-m", "deltawire.collector.api", "--control-stdin",
                     "--parent-pid", str(os.getpid()), *argv]  # fmt: skip
        self.workers = max(1, workers)
        self._stats_text = stats_text
        self._peers_dir: str | None = None
        self._workers: list[_Worker] = []
        #: Set once every worker listens (then the port's connections are
        #: spread over all of them: the kernel hashes only among listeners).
        self.ready = trio.Event()

    @property
    def processes(self) -> list[trio.Process]:
        """The API processes started so far."""
        return [w.child.process for w in self._workers if w.child.process is not None]

    def on_commit(self, batch: list[Chunk]) -> None:
        for worker in self._workers:
            worker.note(batch)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the API processes until cancelled; restart one (with backoff) if it dies."""
        try:
            argvs = [self.argv]
            if self.workers > 1:
                # Private to us (0700): the workers' journals and sockets (peers.py),
                # named after us, so a later collector can tell it was left behind.
                remove_orphan_dirs()
                self._peers_dir = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")
                argvs = [[*self.argv, "--workers", str(self.workers), "--worker", str(i),
                          "--peers", self._peers_dir] for i in range(self.workers)]  # fmt: skip
            self._workers = [_Worker(argv) for argv in argvs]
            async with trio.open_nursery() as nursery:
                for worker in self._workers:
                    await nursery.start(self._supervise, worker)
                task_status.started()
        finally:
            if self._peers_dir is not None:
                with contextlib.suppress(OSError):
                    shutil.rmtree(self._peers_dir)

    async def _supervise(
        self, worker: _Worker, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        proc = await worker.child.start()
        task_status.started()
        while True:
            started = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._feed, worker, proc, nursery.cancel_scope)
                    nursery.start_soon(self._read_ready, worker, proc)
                    await proc.wait()
                    nursery.cancel_scope.cancel()
            finally:
                await worker.child.stop(terminate=True)
            log.error("an HTTP API process exited; restarting it", extra={"code": proc.returncode})
            if trio.current_time() - started > _HEALTHY_AFTER_S:
                worker.child.healthy()
            proc = await worker.child.restart()

    async def _read_ready(self, worker: _Worker, proc: trio.Process) -> None:
        """Read the worker's stdout: its "ready" line, then nothing (to EOF)."""
        assert proc.stdout is not None
        seen = b""
        async for data in proc.stdout:
            if not worker.ready:
                seen = (seen + data)[-64:]
                if READY_LINE in seen:
                    worker.ready = True
                    if all(w.ready for w in self._workers):
                        self.ready.set()

    async def _feed(self, worker: _Worker, proc: trio.Process, scope: trio.CancelScope) -> None:
        """Every 100 ms, the worker's news; the counters every second."""
        assert proc.stdin is not None
        tick = 0
        try:
            while True:
                lines = [] if (bump := worker.bump_line()) is None else [bump]
                if tick % 10 == 0:
                    lines.append(orjson.dumps({"op": "stats", "text": self._stats_text()}))
                if lines:
                    await proc.stdin.send_all(b"\n".join(lines) + b"\n")
                tick += 1
                await trio.sleep(0.1)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()
