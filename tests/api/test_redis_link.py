"""The cache's own RESP connection (redis_link.py), against a real
redis-server: a user, a password and a database from the URI; a script
cache Redis emptied; a connection Redis dropped; a wrong password;
pipelined commands and their replies; a reply that comes too late."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from deltawire.collector.api.cache import RedisCache, Span, redis_gen_key
from deltawire.collector.api.redis_link import RedisLink, RedisLinkError

pytestmark = pytest.mark.redis

DEADLINE_S = 10.0


@asynccontextmanager
async def _user(redis_uri: str, password: str) -> AsyncIterator[tuple[str, Redis]]:
    """A Redis user of its own (so its connections can be told apart), and
    an admin client on database 3; yields the user's URI on database 3."""
    admin = Redis.from_url(redis_uri)
    name = f"link-{uuid.uuid4().hex[:8]}"
    await admin.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "&*", "+@all")
    at = urlsplit(redis_uri).netloc
    db3 = Redis.from_url(redis_uri.rsplit("/", 1)[0] + "/3")
    try:
        yield f"redis://{name}:{password}@{at}/3", db3
    finally:
        await admin.execute_command("ACL", "DELUSER", name)
        await admin.aclose()
        await db3.aclose()


async def _gen(db: Redis, ns: str) -> int:
    return int(await db.get(redis_gen_key("all", ns)) or 0)


def test_bumps_authenticate_select_their_database_and_survive_a_script_flush(
    redis_uri: str,
) -> None:
    async def body() -> None:
        async with _user(redis_uri, "s3cret") as (uri, db3):
            assert RedisLink.supports(uri) and not RedisLink.supports("rediss://h:6380/0")
            ns = uuid.uuid4().hex
            cache = RedisCache(uri, namespace=ns)
            try:
                await cache.bump(["s"], ["n"], Span(1.0, 2.0))
                assert await _gen(db3, ns) == 1 and cache.stats.errors == 0
                await db3.script_flush()  # as after a Redis restart: EVALSHA says NOSCRIPT
                await cache.bump(["s"], ["n"], Span(1.0, 2.0))
                assert await _gen(db3, ns) == 2 and cache.stats.errors == 0
            finally:
                await cache.aclose()
            wrong = RedisCache(uri.replace("s3cret", "wrong"), namespace=ns)
            try:
                await wrong.bump(["s"], ["n"])  # refused: counted, logged, never raised
                assert wrong.stats.errors == 1 and not wrong.healthy()
                assert await _gen(db3, ns) == 2
            finally:
                await wrong.aclose()

    asyncio.run(body())


def test_a_dropped_connection_is_noticed_and_replaced(redis_uri: str) -> None:
    """Redis drops the link's connection between two bumps: the link sees it
    close (its reader), and the next bump connects again: no bump lost."""

    async def body() -> None:
        async with _user(redis_uri, "pw") as (uri, db3):
            ns = uuid.uuid4().hex
            name = urlsplit(uri).username
            cache = RedisCache(uri, namespace=ns, retry_s=0.05)
            try:
                await cache.bump([], ["n"])
                assert await _gen(db3, ns) == 1
                conn = cache._link._conn  # type: ignore[union-attr]
                assert conn is not None and not conn.closed
                await db3.execute_command("CLIENT", "KILL", "USER", name)
                async with asyncio.timeout(DEADLINE_S):  # until its reader sees the close
                    while not conn.closed:
                        await asyncio.sleep(0.005)
                await cache.bump([], ["n"])
                assert cache.stats.errors == 0 and cache.healthy()
                assert await _gen(db3, ns) == 2
            finally:
                await cache.aclose()

    asyncio.run(body())


def test_pipelined_commands_get_their_own_replies(redis_uri: str) -> None:
    """Commands from many tasks at once share one connection, each reply
    matched to its command in order (large values split across reads
    included); an error reply fails its command alone."""

    async def body() -> None:
        link = RedisLink(redis_uri, timeout_s=DEADLINE_S)
        ns = uuid.uuid4().hex
        try:
            sizes = [0, 1, 100, 70_000, 1 << 20] * 20

            async def one(i: int, size: int) -> None:
                value = (b"%d:" % i) * (size // 8 + 1)
                assert await link.command("SET", f"{ns}:{i}", value, "PX", 60_000) == b"OK"
                got = await link.command("MGET", f"{ns}:{i}", f"{ns}:none")
                assert got == [value, None]

            async with asyncio.timeout(DEADLINE_S):
                await asyncio.gather(*[one(i, n) for i, n in enumerate(sizes)])
                await link.command("SET", f"{ns}:text", "x")
                with pytest.raises(RedisLinkError, match="not an integer"):
                    await link.command("INCR", f"{ns}:text")
                assert await link.command("INCR", f"{ns}:n") == 1  # the connection goes on
        finally:
            await link.aclose()

    asyncio.run(body())


def test_a_reply_past_its_timeout_closes_the_connection(redis_uri: str) -> None:
    """A command whose reply does not come in time fails, and so does every
    command queued behind it on that connection; the next one reconnects."""

    async def body() -> None:
        link = RedisLink(redis_uri, timeout_s=0.2)
        try:
            blocked = asyncio.gather(
                link.command("BLPOP", uuid.uuid4().hex, 5),  # holds the connection
                link.command("PING"),
                return_exceptions=True,
            )
            first, second = await blocked
            assert isinstance(first, TimeoutError)
            assert isinstance(second, TimeoutError | ConnectionError)
            assert await link.command("PING") == b"PONG"
        finally:
            await link.aclose()

    asyncio.run(body())
