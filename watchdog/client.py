"""The application's side of local events: ``emit("name", {...})``.

    from deltawire.watchdog.client import emit
    emit("deploy.finished", {"version": "1.4.2"})

Standard library only, so it can also be copied into an application. It never
raises and never blocks for long: without a watchdog (``DELTAWIRE_EVENTS`` unset
or nobody listening) ``emit`` returns False and the application carries on.
Thread-safe; a forked child opens its own connection.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

__all__ = ["ENV_VAR", "emit"]

#: The environment variable holding the watchdog's event socket path.
ENV_VAR = "DELTAWIRE_EVENTS"

_lock = threading.Lock()
_conn: tuple[int, str, socket.socket] | None = None  # (pid, path, socket)


def emit(
    name: str,
    data: dict[str, Any] | None = None,
    *,
    path: str | None = None,
    timeout: float = 1.0,
) -> bool:
    """Send one event to the watchdog; True if it was handed over."""
    path = path or os.environ.get(ENV_VAR)
    if not path:
        return False
    event: dict[str, Any] = {"name": name}
    if data is not None:
        event["data"] = data
    try:
        line = (json.dumps(event, separators=(",", ":"), allow_nan=False) + "\n").encode()
    except (TypeError, ValueError):
        return False  # not JSON: a telemetry bug must not become an application crash
    with _lock:
        # One retry on a fresh connection: the watchdog may have restarted.
        for _ in range(2):
            sock = _connection(path, timeout)
            if sock is None:
                return False
            try:
                sock.sendall(line)
                return True
            except OSError:
                _drop()
    return False


def _connection(path: str, timeout: float) -> socket.socket | None:
    global _conn
    pid = os.getpid()
    if _conn is not None:
        if _conn[0] == pid and _conn[1] == path:
            return _conn[2]
        _drop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    _conn = (pid, path, sock)
    return sock


def _drop() -> None:
    global _conn
    if _conn is not None:
        if _conn[0] == os.getpid():
            try:
                _conn[2].close()
            except OSError:
                pass
        _conn = None
