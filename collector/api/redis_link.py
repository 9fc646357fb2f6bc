"""One Redis connection spoken in RESP directly, its commands pipelined: the
query cache's lookups, puts and bump (cache.py).

Why not redis-py for them: a command through redis-py's asyncio client (its
pool, command packing, retry wrapper and reply parser) costs the API process
~60-130 µs of CPU. Measured in a loop against a local redis-server: the
bump's EVALSHA ~120-130 µs through redis-py against ~20 µs here; a cache
miss's MGET plus the SET of its ~27 KB answer 163 µs against 30 µs (with
hiredis parsing the replies in both). Pub/sub (the near cache) stays with
redis-py, and so does everything under TLS (``rediss://``), which is not
spoken here (``RedisLink.supports``).

Commands go out in the order they are called, without waiting for the
replies before (Redis answers in order: a FIFO of futures matches them). A
call that waits past its timeout closes the connection, and so does a
connection Redis drops or a reply that cannot be read: every call still
waiting then fails (``ConnectionError``), and the next call connects again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis

__all__ = ["RedisLink", "RedisLinkError"]


class RedisLinkError(Exception):
    """Redis answered with an error."""


def _command(parts: Sequence[bytes | str | int]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Connection:
    """One TCP (or Unix) connection: commands written, replies matched in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.closed = False
        self._replies = asyncio.get_running_loop().create_task(self._read(reader))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise ConnectionError("the connection to redis closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.writer.write(command)
        return future

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(1 << 16):
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future = self.waiting.popleft()
                    if future.done():  # its caller gave up (and closed us): nothing to tell
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(RedisLinkError(str(reply)))
                    else:
                        future.set_result(reply)
        except (OSError, hiredis.ProtocolError, IndexError):
            pass  # a dropped connection, or bytes that are not RESP: closed below
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.writer.close()
        if self._replies is not asyncio.current_task():
            self._replies.cancel()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError("the connection to redis closed"))


class RedisLink:
    """``await command("MGET", k1, k2)``: Redis's reply (bytes, int, None
    or a list of them), ``RedisLinkError`` for an error reply."""

    def __init__(self, uri: str, timeout_s: float = 0.5) -> None:
        from redis.asyncio.connection import parse_url

        self._where = parse_url(uri)  # host, port or path; db, username, password
        self._timeout_s = timeout_s
        self._connecting = asyncio.Lock()
        self._conn: _Connection | None = None

    @staticmethod
    def supports(uri: str) -> bool:
        """Plain TCP or a Unix socket (TLS is redis-py's)."""
        from redis.asyncio.connection import parse_url

        return "connection_class" not in parse_url(uri) or uri.startswith("unix:")

    async def command(self, *parts: bytes | str | int) -> Any:
        conn = None
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await self._connected()
                return await conn.send(_command(parts))
        except TimeoutError:
            if conn is not None:  # a reply that never came: the ones behind it would not either
                conn.close()
            raise

    async def script(self, script: bytes, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """EVALSHA of ``script``; EVAL when Redis does not have it (a restart)."""
        sha = hashlib.sha1(script).hexdigest()
        try:
            return await self.command(b"EVALSHA", sha, len(keys), *keys, *args)
        except RedisLinkError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.command(b"EVAL", script, len(keys), *keys, *args)

    async def _connected(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            where = self._where
            if "path" in where:
                reader, writer = await asyncio.open_unix_connection(where["path"])
            else:
                host, port = where.get("host", "localhost"), where.get("port", 6379)  # redis-py's
                reader, writer = await asyncio.open_connection(host, port)
            conn = _Connection(reader, writer)
            try:
                if where.get("password"):
                    user = where.get("username")
                    auth = [user, where["password"]] if user else [where["password"]]
                    await conn.send(_command([b"AUTH", *auth]))
                if where.get("db"):
                    await conn.send(_command([b"SELECT", int(where["db"])]))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            return conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        self._close()
