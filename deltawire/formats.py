"""How values are written for people and for the API, the same everywhere:
times as RFC 3339, URIs without their credentials."""

from __future__ import annotations

import time

__all__ = ["redact_uri", "rfc3339"]


def rfc3339(ts: float, *, ms: bool = True) -> str:
    """Epoch seconds -> ``2026-11-23T08:00:00.123Z`` (UTC; ``ms=False``:
    whole seconds, ``2026-11-23T08:00:00Z``)."""
    if not ms:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts // 1)))
    sec, millis = divmod(round(ts * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{millis:03d}Z"


def redact_uri(uri: str) -> str:
    """``uri`` without the user and password of its authority, for logs and
    messages: ``mongodb://u:p@db:27017/x`` -> ``mongodb://***@db:27017/x``."""
    scheme, sep, rest = uri.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return uri
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"
