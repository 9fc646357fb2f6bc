"""The cache's bump over its own RESP connection (redis_link.py), against a
real redis-server: a user, a password and a database from the URI; a
script cache Redis emptied; a connection Redis dropped; a wrong password."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from deltawire.collector.api.cache import RedisCache, Span, redis_gen_key
from deltawire.collector.api.redis_link import RedisLink

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


def test_a_dropped_connection_fails_one_bump_then_reconnects(redis_uri: str) -> None:
    async def body() -> None:
        async with _user(redis_uri, "pw") as (uri, db3):
            ns = uuid.uuid4().hex
            name = urlsplit(uri).username
            cache = RedisCache(uri, namespace=ns, retry_s=0.05)
            try:
                await cache.bump([], ["n"])
                assert await _gen(db3, ns) == 1
                await db3.execute_command("CLIENT", "KILL", "USER", name)
                await cache.bump([], ["n"])  # its reply never comes: this bump fails
                assert cache.stats.errors == 1 and not cache.healthy()
                async with asyncio.timeout(DEADLINE_S):  # until the retry is due
                    while time.monotonic() < cache._retry_at:
                        await asyncio.sleep(0.01)
                await cache.bump([], ["n"])
                assert cache.healthy() and await _gen(db3, ns) == 2
            finally:
                await cache.aclose()

    asyncio.run(body())
