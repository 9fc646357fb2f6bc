"""SQLite's memory statistics, turned off before SQLite starts in a process.

With them on (SQLite's default), every allocation SQLite makes takes one
process-wide mutex to count it. A ``GET /metrics`` page rendered by SQLite
(sqlite_page.py) makes thousands, so two store threads rendering at once
spent most of their time on that mutex: 1.0-1.1k pages/s from 2-4 threads
against 2.1k from one. Off, two threads rendered 5.5k pages/s against 3.0k
from one (the bench's store, 100 documents a page). Nothing in deltawire
reads those statistics.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Final

__all__ = ["disable_memstatus"]

log = logging.getLogger(__name__)

# SQLITE_CONFIG_MEMSTATUS (sqlite3.h): whether SQLite counts its memory use.
_CONFIG_MEMSTATUS: Final = 9


def disable_memstatus() -> bool:
    """Turn off SQLite's memory statistics, process-wide; True if it took.

    Only before Python's sqlite3 module is first imported: importing it
    starts SQLite, after which ``sqlite3_config`` refuses (harmlessly).
    ``open_store`` calls this before it imports the SQLite store. Where
    Python carries its own copy of SQLite, the one configured here is
    another and nothing changes."""
    if "_sqlite3" in sys.modules:
        return False
    path = ctypes.util.find_library("sqlite3")
    if path is None:
        return False
    try:
        lib = ctypes.CDLL(path)
        rc = lib.sqlite3_config(_CONFIG_MEMSTATUS, ctypes.c_int(0))
    except (OSError, AttributeError) as e:
        log.debug("SQLite's memory statistics stay on: %s", e)
        return False
    if rc != 0:  # SQLITE_MISUSE: a connection was opened first
        log.debug("SQLite's memory statistics stay on: sqlite3_config answered %d", rc)
    return rc == 0
