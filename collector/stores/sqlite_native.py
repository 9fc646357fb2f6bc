"""``dw_page``, the C function that writes a page of stored documents as the
API's JSON inside SQLite (sqlite_docjson.c), built and loaded on first use.

Why: an uncached ``GET /metrics`` page was 80 % SQLite rendering each row
with ~20 SQL string operations (sqlite_page.py); in C the statement costs
less than half (figures in docs/api-performance.md).

How: the C file is compiled once per machine, with the C compiler found
(``$CC``, else ``cc``), into the deltawire cache directory
(``$DELTAWIRE_CACHE``, default ``~/.cache/deltawire``), under a name that
holds a hash of the source, the SQLite library and the machine's kind, and
reused after.
Loading it registers ``dw_page`` with SQLite's ``sqlite3_auto_extension``,
so every connection the process opens from then on has it. It links the very
library Python's sqlite3 module uses (found in this process's memory map):
no handle is taken from Python's objects.

Where this cannot be done (no compiler, not Linux, a Python that carries its
own SQLite, a build that fails or writes a wrong document in the check below)
``install`` answers False, says why once in the log, and pages are written
in SQL as before: the same bytes, slower. ``?render=sql`` on the store URI
asks for that directly.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from typing import Final

from . import sqlite_page
from .base import FoundPage

__all__ = ["SOURCE", "install"]

log = logging.getLogger(__name__)

SOURCE: Final = pathlib.Path(__file__).with_name("sqlite_docjson.c")

#: How long a build may take before it counts as failed: a cold compiler on
#: a busy machine takes a few seconds, and the store waits for it once.
_BUILD_TIMEOUT_S: Final = 120.0

#: A row and the bytes views.doc_out writes for it: checked after loading,
#: so a library that links but misbehaves is never used.
_CHECK_SQL: Final = (
    "SELECT dw_page(1, 7, 's\"\n', 3, 'sample', 'cpu', NULL, '[\"t\"]', 1800000000.0005,"
    " 1.5, '{\"a\":1}', NULL, 1)"
)
_CHECK_OUT: Final = FoundPage(
    b'{"id":"7","session":"s\\"\\n","seq":3,"kind":"sample","name":"cpu","host":null,'
    b'"tags":["t"],"timestamp":"2027-01-15T08:00:00.000Z","value":1.5,"data":{"a":1}}',
    1,
    None,
    None,
)

_lock = threading.Lock()
_state: bool | None = None  # None: not tried yet in this process


def install() -> bool:
    """Register ``dw_page`` for the connections this process opens from now
    on; True where it is (built if need be: once per machine). Tried once
    per process; later calls answer the first one's result."""
    global _state
    with _lock:
        if _state is None:
            try:
                _state = _install()
            except Exception as exc:  # any failure: SQL renders the pages instead
                log.warning("pages are written in SQL (the C renderer failed: %s)", exc)
                _state = False
        return _state


def _install() -> bool:
    if not sys.platform.startswith("linux"):
        log.info("pages are written in SQL: the C renderer is built on Linux only")
        return False
    library = _sqlite_library()
    if library is None:
        log.info("pages are written in SQL: Python's sqlite3 links no shared libsqlite3")
        return False
    built = _built(library)
    if built is None:
        return False
    lib = ctypes.CDLL(str(built))
    rc = lib.dw_install()
    if rc != 0:
        log.warning("pages are written in SQL: sqlite3_auto_extension answered %d", rc)
        return False
    conn = sqlite3.connect(":memory:")
    try:
        (answer,) = conn.execute(_CHECK_SQL).fetchone()
    finally:
        conn.close()
    out = sqlite_page.native_page(answer)
    if out != _CHECK_OUT:
        # Registered, so every connection has it, but find_page will not call it.
        log.warning("pages are written in SQL: the C renderer wrote %r", out)
        return False
    return True


def _sqlite_library() -> pathlib.Path | None:
    """The shared SQLite library Python's sqlite3 module runs on, from this
    process's memory map (it is mapped once ``sqlite3`` is imported)."""
    try:
        maps = pathlib.Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if "/libsqlite3.so" in path and os.path.exists(path):
            return pathlib.Path(path)
    return None


def _cache_dir() -> pathlib.Path:
    return pathlib.Path(
        os.environ.get("DELTAWIRE_CACHE") or pathlib.Path.home() / ".cache" / "deltawire"
    )


def _built(library: pathlib.Path) -> pathlib.Path | None:
    """The compiled renderer for ``library``: from the cache, or built now."""
    source = SOURCE.read_bytes()
    # A home directory shared by machines of other kinds gets one build each.
    where = f"{library.resolve()}\0{platform.machine()}".encode()
    key = hashlib.sha256(source + where).hexdigest()[:16]
    target = _cache_dir() / "native" / f"sqlite_docjson-{key}.so"
    if target.exists():
        return target
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        log.warning("pages are written in SQL: no C compiler (%s) to build the C renderer", cc)
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place: processes starting at
    # once each build their own and the last rename wins, whole.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE), str(library)],
            capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S,
        )  # fmt: skip
        if done.returncode != 0:
            log.warning(
                "pages are written in SQL: building the C renderer failed: %s",
                (done.stderr or done.stdout).strip()[-2000:],
            )
            return None
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("built the C page renderer: %s", target)
    return target
