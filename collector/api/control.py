"""The control pipe from the ingest process: NDJSON messages on our stdin.

- ``{"op": "stats", "text": "<Prometheus text>"}`` about once a second;
- ``{"op": "bump", "sessions": [...], "names": [...], "kinds": [...], "span":
  [lo, hi]}`` after store commits: what was written, and the range of its
  timestamps (optional: without it, every cached answer of those scopes is
  dropped). Without ``kinds``, every kind's scope is bumped.

Stdin is read by a daemon thread (a blocking read cannot be cancelled, and the
event loop must never block on it); each message is handed to the event loop,
where ``apply_control`` runs, so caches and counters are only touched from the
loop thread. EOF means the parent is gone: ``on_eof`` then stops the server.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import orjson

from .cache import EVERYTHING, QueryCache, Span
from .stats import IngestStats

__all__ = ["MAX_LINE_BYTES", "ControlError", "ControlReader", "apply_control", "parse_control"]

log = logging.getLogger("deltawire.collector.api.control")

MAX_LINE_BYTES = 8 << 20  # a stats text is tens of KB; anything this long is broken


class ControlError(ValueError):
    pass


def parse_control(line: bytes) -> dict[str, Any]:
    """One validated control message; ``ValueError`` for anything else."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ControlError(f"not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ControlError("not a JSON object")
    op = msg.get("op")
    if op == "stats":
        if not isinstance(msg.get("text"), str):
            raise ControlError("stats: 'text' must be a string")
    elif op == "bump":
        for key in ("sessions", "names", "kinds"):
            items = msg.get(key, [])
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise ControlError(f"bump: {key!r} must be a list of strings")
        span = msg.get("span")
        if span is not None and not (
            isinstance(span, list)
            and len(span) == 2
            and all(type(x) in (int, float) for x in span)
            and span[0] <= span[1]
        ):
            raise ControlError("bump: 'span' must be [lo, hi], two numbers with lo <= hi")
    else:
        raise ControlError(f"unknown op {op!r}")
    return msg


async def apply_control(msg: dict[str, Any], cache: QueryCache, ingest: IngestStats) -> None:
    if msg["op"] == "stats":
        ingest.update(msg["text"])
    else:
        span = msg.get("span")
        await cache.bump(
            msg.get("sessions", []),
            msg.get("names", []),
            EVERYTHING if span is None else Span(float(span[0]), float(span[1])),
            msg.get("kinds"),  # absent: not known, so every kind
        )


class ControlReader(threading.Thread):
    """Reads file descriptor ``fd`` line by line; ``deliver(msg)`` each message,
    then ``on_eof()``.

    Reads with ``os.read`` on the raw descriptor, not ``sys.stdin.buffer``: a
    daemon thread blocked inside a buffered reader holds its lock, and the
    interpreter aborts ("could not acquire lock ... at interpreter shutdown")
    when it flushes stdin on exit.
    """

    def __init__(
        self,
        fd: int,
        deliver: Callable[[dict[str, Any]], object],
        on_eof: Callable[[], object],
    ) -> None:
        super().__init__(name="control-stdin", daemon=True)
        self.fd, self.deliver, self.on_eof = fd, deliver, on_eof
        self.bad_lines = 0

    def run(self) -> None:
        pending = b""
        skipping = False  # inside an overlong line, dropping it up to its newline
        try:
            while chunk := os.read(self.fd, 1 << 16):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if skipping:
                        skipping = False  # this was the overlong line's tail
                        continue
                    self._line(line)
                if len(pending) > MAX_LINE_BYTES:
                    if not skipping:
                        self._bad(f"line longer than {MAX_LINE_BYTES} bytes")
                    pending, skipping = b"", True
            if pending and not skipping:
                self._line(pending)  # a last line without its newline
        except (OSError, RuntimeError) as e:
            # RuntimeError: the event loop closed under us (shutting down anyway).
            log.debug("control pipe reader stopped: %s", e)
        finally:
            try:
                self.on_eof()
            except RuntimeError:
                pass  # the loop is already gone

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = parse_control(line)
        except ControlError as e:
            self._bad(str(e))
            return
        self.deliver(msg)

    def _bad(self, why: str) -> None:
        self.bad_lines += 1
        # The first few, then every 1000th: a broken parent must not flood the log.
        if self.bad_lines <= 3 or self.bad_lines % 1000 == 0:
            log.warning("bad control message ignored (%d so far): %s", self.bad_lines, why)
