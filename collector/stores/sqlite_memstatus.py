"""SQLite's memory statistics, turned off before SQLite starts in a process.

With them on (SQLite's default), every allocation SQLite makes takes one
process-wide mutex to count it. A ``GET /metrics`` page rendered by SQLite
(sqlite_page.py) makes thousands, so two store threads rendering at once
spent most of their time on that mutex: 1.0-1.1k pages/s from 2-4 threads
against 2.1k from one. Off, two threads rendered 5.5k pages/s against 3.0k
from one (the bench's store, 100 documents a page), and one thread alone
took 15-35% less CPU a page (311-475 µs against 442-560, interleaved runs).
Nothing in deltawire reads those statistics.

Importing ``deltawire.collector`` calls ``disable_memstatus``: every
collector process (ingest, its writer, the folder, the API, the edit
writer) imports it before anything imports Python's sqlite3 module, whose
import starts SQLite (after which ``sqlite3_config`` refuses, harmlessly).
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Final

__all__ = ["disable_memstatus"]

log = logging.getLogger(__name__)

# SQLITE_CONFIG_MEMSTATUS (sqlite3.h): whether SQLite counts its memory use.
_CONFIG_MEMSTATUS: Final = 9


#: Where the SQLite library Python's sqlite3 module links is found: by its
#: soname (no ``ctypes.util.find_library``, which runs ldconfig: milliseconds
#: at every start). Where Python carries its own copy of SQLite, the one
#: configured here is another and nothing changes.
_LIBRARIES: Final = ("libsqlite3.so.0", "libsqlite3.dylib")


def disable_memstatus() -> bool:
    """Turn off SQLite's memory statistics, process-wide; True if it took
    (False once sqlite3 is imported, or where the library is not found)."""
    if "_sqlite3" in sys.modules:
        return False
    for name in _LIBRARIES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            rc = lib.sqlite3_config(_CONFIG_MEMSTATUS, ctypes.c_int(0))
        except AttributeError:
            return False
        if rc != 0:  # SQLITE_MISUSE: SQLite had started
            log.debug("SQLite's memory statistics stay on: sqlite3_config answered %d", rc)
        return rc == 0
    return False
