"""One write lock for every process that writes a SQLite store file.

SQLite lets one connection write at a time. A connection that finds the write
lock taken sleeps in its busy handler and tries again: after 1, 2, 5, 10, 15,
20, 25, 25, 25, 50, 50, 100 ms... and meanwhile the collector's writer child,
which commits a batch every few milliseconds under ingest, takes the lock
again and again. The API process's PUT or DELETE kept losing that race: its
p95 was seconds, or it gave up with 503 after ``busy_timeout``.

So every write transaction of every process (the ingest writer child, the
API, a rollup folder) first takes an exclusive ``flock`` on a file beside the
database (``<db>-wlock``), blocking: the kernel wakes a waiter the moment the
holder lets go, instead of it polling on a timer, and the holder, which goes
back to reading its next batch first, rarely gets there before it.
``BEGIN IMMEDIATE`` then finds SQLite's own lock free at once (busy_timeout
still guards against writers that do not take this lock, like the sqlite3
shell). The lock is taken only around a transaction: keep each one short,
since any writer waits out the longest.

Within a process a ``threading.Lock`` comes first: ``flock`` locks belong to
an open file, which every thread of the process shares. The kernel drops the
lock of a process that dies, so a crash never leaves the file locked.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LOCK_SUFFIX", "WriteLock"]

#: The lock file's name is the database file's plus this.
LOCK_SUFFIX = "-wlock"


class WriteLock:
    """The cross-process write lock of the SQLite file at ``db_path``."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + LOCK_SUFFIX
        self.local = threading.Lock()
        self._fd: int | None = None

    def open(self) -> None:
        """Open (create) the lock file; raises OSError if that is not possible."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the lock too, should a thread still hold it

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock: this thread against the process's others (``local``,
        which the caller may already hold: see ``across_processes``), then
        this process against the others."""
        with self.local, self.across_processes():
            yield

    @contextmanager
    def across_processes(self) -> Iterator[None]:
        """The file lock alone, for a caller that holds ``local`` already."""
        fd = self._fd
        if fd is None:  # not open (or closed meanwhile): only the process lock
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
