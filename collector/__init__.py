"""The collector: ingest (trio), the HTTP API and the stores they share."""

# Before anything imports sqlite3 (which starts SQLite): its memory
# statistics off in every collector process, for the allocation mutex they
# cost (stores/sqlite_memstatus.py says why, with figures).
from .stores.sqlite_memstatus import disable_memstatus as _disable_memstatus

_disable_memstatus()
