"""Backlogs: session spools that no running watchdog owns any more.

They are left by a watchdog that died (SIGKILL, power loss) or exited before
the collector acknowledged everything. Both the agent (at start) and
``watchdog spool send`` deliver them through the same ``Link`` as a live
session, under their original session ids.
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from .link import Connect, Link, RateLimiter
from .spool import FsyncPolicy, Spool, SpoolError, SpoolLocked, session_dir, session_dirs

__all__ = ["backlog_link", "deliver", "open_backlogs"]

log = logging.getLogger("deltawire.watchdog.backlog")


@contextmanager
def open_backlogs(
    root: pathlib.Path,
    *,
    sessions: tuple[str, ...] = (),
    exclude: pathlib.Path | None = None,
    max_bytes: int = 256 << 20,
    fsync: FsyncPolicy = "batch",
) -> Iterator[list[Spool]]:
    """Lock and open every backlog under ``root`` (or the named sessions).

    Directories a live watchdog owns are skipped; so are unusable ones, with a
    warning. Empty backlogs are removed on the way. Closes what it opened.
    """
    dirs = [session_dir(root, s) for s in sessions] if sessions else session_dirs(root)
    spools: list[Spool] = []
    try:
        for directory in dirs:
            if directory == exclude or not directory.is_dir():
                continue
            try:
                spool = Spool(directory, max_bytes=max_bytes, fsync=fsync)
            except SpoolLocked:
                continue
            except (SpoolError, OSError) as exc:
                log.warning("unusable backlog left alone",
                            extra={"directory": str(directory), "error": str(exc)})  # fmt: skip
                continue
            if not spool.segments:
                spool.destroy()
                continue
            spool.sealed = True  # in memory only: nothing more will be written to it
            spools.append(spool)
        yield spools
    finally:
        for spool in spools:
            spool.close()


async def deliver(
    link: Link,
    *,
    progress: Callable[[int], None] | None = None,
    stall_timeout: float | None = None,
) -> bool:
    """Send ``link``'s sealed spool until all of it is acknowledged, then delete it.

    ``progress(n)`` is called with the number of records newly acknowledged.
    With ``stall_timeout``, gives up (False) when nothing was acknowledged for
    that long, e.g. because the collector cannot be reached; what is left stays
    in the spool.
    """
    spool = link.spool
    stalled = False
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            nonlocal stalled
            left = spool.pending
            while True:
                with trio.move_on_after(stall_timeout or math.inf) as scope:
                    await spool.wait_changed()
                if scope.cancelled_caught:
                    stalled = True
                    nursery.cancel_scope.cancel()
                    return
                now = spool.pending
                if now < left and progress is not None:
                    progress(left - now)
                left = now

        nursery.start_soon(watch)
        await link.run()
        nursery.cancel_scope.cancel()
    if stalled or not spool.done:
        return False
    spool.destroy()
    return True


def backlog_link(spool: Spool, connect: Connect, *, token: str | None = None,
                 keyframe_every: int = 100, limiter: RateLimiter | None = None) -> Link:  # fmt: skip
    return Link(spool, connect, token=token, keyframe_every=keyframe_every, limiter=limiter,
                name="backlog")  # fmt: skip
