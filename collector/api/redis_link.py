"""One Redis connection that runs one Lua script, spoken in RESP directly:
the query cache's bump (cache.py), once per group commit of the API's writes.

Why not redis-py for it: a bump through redis-py's asyncio client (its pool,
command packing, retry wrapper and reply parser) cost the API process
~120-130 µs of CPU; the same EVALSHA written and read here costs ~20 µs
(a loop against the test Redis, with hiredis), and its round trip is over
sooner, so the group's answers wait less. Everything else (lookups, puts,
pub/sub) stays with redis-py.

The replies the script gives are an integer (``:n``) or an error (``-...``),
one line each. Calls take turns (a lock): each is one write and one reply,
and a call cut short (a timeout, a cancellation, an error) closes the
connection, as its reply would otherwise be read as the next call's. The
next call connects again. TLS (``rediss://``) is not spoken here: the
caller keeps redis-py for it (``RedisLink.supports``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

__all__ = ["RedisLink", "RedisLinkError"]


class RedisLinkError(Exception):
    """Redis answered with an error, or something this link cannot read."""


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RedisLink:
    """``await call(keys, args)``: the script's integer answer."""

    def __init__(self, uri: str, script: str, timeout_s: float = 0.5) -> None:
        from redis.asyncio.connection import parse_url

        self._where = parse_url(uri)  # host, port or path; db, username, password
        self._script = script.encode()
        self._sha = hashlib.sha1(self._script).hexdigest().encode()
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @staticmethod
    def supports(uri: str) -> bool:
        """Plain TCP or a Unix socket (TLS is redis-py's)."""
        from redis.asyncio.connection import parse_url

        return "connection_class" not in parse_url(uri) or uri.startswith("unix:")

    async def call(self, keys: Sequence[bytes], args: Sequence[bytes]) -> int:
        head = [b"%d" % len(keys), *keys, *args]
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    reader, writer = await self._connected()
                    writer.write(_command(b"EVALSHA", self._sha, *head))
                    reply = await reader.readline()
                    if reply.startswith(b"-NOSCRIPT"):  # Redis restarted: its script cache is empty
                        writer.write(_command(b"EVAL", self._script, *head))
                        reply = await reader.readline()
                    return self._integer(reply)
            except BaseException:
                self._close()
                raise

    @staticmethod
    def _integer(reply: bytes) -> int:
        if reply.startswith(b":"):
            return int(reply[1:])
        if not reply:
            raise ConnectionError("redis closed the connection")
        raise RedisLinkError(reply.decode("utf-8", "replace").strip())

    async def _connected(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            return self._reader, self._writer
        where = self._where
        if "path" in where:
            reader, writer = await asyncio.open_unix_connection(where["path"])
        else:
            host, port = where.get("host", "localhost"), where.get("port", 6379)  # redis-py's
            reader, writer = await asyncio.open_connection(host, port)
        self._reader, self._writer = reader, writer
        if where.get("password"):
            user = where.get("username")
            auth = (
                [user.encode(), where["password"].encode()]
                if user
                else [where["password"].encode()]
            )
            await self._expect_ok(_command(b"AUTH", *auth))
        if where.get("db"):
            await self._expect_ok(_command(b"SELECT", b"%d" % int(where["db"])))
        return reader, writer

    async def _expect_ok(self, command: bytes) -> None:
        assert self._reader is not None and self._writer is not None
        self._writer.write(command)
        reply = await self._reader.readline()
        if not reply.startswith(b"+OK"):
            raise RedisLinkError(reply.decode("utf-8", "replace").strip() or "no answer")

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def aclose(self) -> None:
        async with self._lock:
            self._close()
