"""API keys, roles and rate limits.

``API_KEYS`` is ``KEY:ROLE,KEY:ROLE``; a request carries its key as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. ``read`` may GET,
``write`` may also create, change and delete points made through the API,
``admin`` may also change or delete documents that came from a stream. With no
keys configured every request is ``admin`` (and the server binds 127.0.0.1).

Rate limits are a token bucket per key (per client address without keys):
``rate`` requests/s on average, ``burst`` at once; over it, 429 with
``Retry-After``. With several API workers the buckets are shared
(``SharedBuckets``): the limit is the same whichever worker a connection reached.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import hmac
import math
import mmap
import os
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import Request

from .errors import ApiError

__all__ = ["Buckets", "Keys", "LocalBuckets", "RateLimiter", "Role", "SharedBuckets", "parse_keys"]


class Role(enum.IntEnum):
    read = 1
    write = 2
    admin = 3


def parse_keys(text: str | tuple[str, ...]) -> Keys:
    """``KEY:ROLE,...`` (or its parts) -> Keys; ValueError naming a bad entry."""
    parts = text if isinstance(text, tuple) else tuple(p.strip() for p in text.split(","))
    roles: dict[str, Role] = {}
    for part in parts:
        if not part:
            continue
        key, sep, role = part.rpartition(":")
        if not sep or not key or role not in Role.__members__:
            raise ValueError(f"{part[:4]}…: expected KEY:ROLE with ROLE read, write or admin")
        roles[key] = Role[role]
    return Keys(roles)


@dataclass(frozen=True, slots=True)
class Keys:
    roles: Mapping[str, Role] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.roles)

    def presented(self, request: Request) -> str | None:
        auth = request.headers.get("authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        return request.headers.get("x-api-key")

    def role_of(self, request: Request) -> Role:
        """The request's role; 401 if keys are configured and it has none that works."""
        if not self.roles:
            return Role.admin
        key = self.presented(request)
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "an API key is required: Authorization: Bearer KEY or X-API-Key: KEY",
                headers={"www-authenticate": "Bearer"},
            )
        for known, role in self.roles.items():
            # Compare every key in constant time: no timing hint of a prefix.
            if hmac.compare_digest(known.encode(), key.encode()):
                return role
        raise ApiError(
            401, "unauthorized", "unknown API key", headers={"www-authenticate": "Bearer"}
        )


def require(role: Role, needed: Role, what: str) -> None:
    if role < needed:
        raise ApiError(
            403, "forbidden", f"{what} needs the {needed.name} role; this key has {role.name}"
        )


__all__ += ["require"]

_MAX_BUCKETS = 10_000  # clients tracked at once; more: the idlest are forgotten


class Buckets(Protocol):
    """Where the token buckets live: in this process, or shared by the API workers."""

    def take(self, who: str, now: float, rate: float, burst: float) -> float:
        """Refill ``who``'s bucket to ``now`` and take a token if it has one;
        the tokens it had (< 1: none was taken)."""
        ...


class LocalBuckets:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, at)

    def take(self, who: str, now: float, rate: float, burst: float) -> float:
        tokens, at = self._buckets.get(who, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if len(self._buckets) >= _MAX_BUCKETS and who not in self._buckets:
            self._buckets.clear()  # crude but bounded: everyone starts full again
        self._buckets[who] = (tokens - 1.0 if tokens >= 1.0 else tokens, now)
        return tokens


#: A shared bucket: the client's hash (its owner), tokens, when counted.
_SLOT = struct.Struct("Qdd")
_SLOTS = 1 << 15  # ~768 KiB; two clients on one slot share a bucket until one is idle


class SharedBuckets:
    """Token buckets in a file every API worker maps, under an exclusive
    ``flock`` for each take (~2 µs): a client's limit is one limit, whichever
    worker each of its connections reached. ``time.monotonic`` is the
    machine's, the same in every process."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = _SLOT.size * _SLOTS
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    def take(self, who: str, now: float, rate: float, burst: float) -> float:
        owner = int.from_bytes(hashlib.blake2b(who.encode(), digest_size=8).digest(), "little")
        at_ = (owner % _SLOTS) * _SLOT.size
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            key, tokens, at = _SLOT.unpack_from(self._map, at_)
            if key != owner or at == 0.0:
                tokens, at = burst, now  # a new client (or another's slot: it was idle)
            tokens = min(burst, tokens + max(0.0, now - at) * rate)
            _SLOT.pack_into(self._map, at_, owner, tokens - 1.0 if tokens >= 1.0 else tokens, now)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return tokens

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        buckets: Buckets | None = None,
    ) -> None:
        self.rate, self.burst, self.clock = rate, max(1, burst), clock
        self.buckets = buckets if buckets is not None else LocalBuckets()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, who: str) -> None:
        """Take a token for ``who``; 429 with Retry-After if there is none."""
        tokens = self.buckets.take(who, self.clock(), self.rate, float(self.burst))
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise ApiError(
                429,
                "rate_limited",
                f"over {self.rate:g} requests/s; retry in {wait} s",
                headers={"retry-after": str(wait)},
            )
