"""Issue 16: "a zstd bomb is refused with an error, and RSS stays flat".

A collector serves in this process (``serve``, thread writer) on a real
socket; zstd bombs arrive on real connections and are refused. With the
cyclic GC off, every ``ServerConnection`` must then be freed by reference
counting once its connection has closed: one that is kept (in a reference
cycle, or by anything the collector holds per closed connection) would keep
its buffers with it, which is how 200 bombs once left the collector 230 MB
bigger. RSS itself is measured by ``python -m bench.zmem``.
"""

from __future__ import annotations

import gc
import pathlib
from typing import Any, Final

import pytest
import trio
import zstandard

from deltawire.protocol import (
    NEED_DATA,
    ClientConnection,
    ErrorFrame,
    Hello,
    ServerConnection,
    Welcome,
)
from deltawire.testing.harness import collector_in_process

_BOMBS: Final = 6
#: How long closed connections may take to be gone: each lingers up to 1 s
#: for its peer to read the error (collector.connection._LINGER_SECONDS).
_GONE_WITHIN_S: Final = 15.0


def _bomb(unit: bytes) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=16)
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    chunk = unit * (1 << 20)
    return b"".join(obj.compress(chunk) for _ in range(64)) + obj.flush(
        zstandard.COMPRESSOBJ_FLUSH_BLOCK
    )


async def _next(stream: trio.SocketStream, conn: ClientConnection) -> Any:
    while (event := conn.next_event()) is NEED_DATA:
        conn.receive_data(await stream.receive_some(65536))
    return event


async def _send_bomb(port: int, i: int, bomb: bytes) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = ClientConnection()
        await stream.send_all(conn.send(Hello(session=f"bomb-{i}", compress=("zstd",))))
        assert isinstance(await _next(stream, conn), Welcome)
        try:
            await stream.send_all(bomb)
        except trio.BrokenResourceError:
            pass  # refused before all of it was read: the error is still there to read
        while not isinstance(event := await _next(stream, conn), ErrorFrame):
            pass
        return str(event.code)


def _live_server_connections() -> int:
    return sum(type(o) is ServerConnection for o in gc.get_objects())


@pytest.mark.slow  # a collector, six bombs and their 1 s linger: a few seconds
async def test_refused_bombs_leave_no_connection_behind(tmp_path: pathlib.Path) -> None:
    bombs = [_bomb(b"\n"), _bomb(b"x")]
    async with collector_in_process(tmp_path) as port:
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()  # only reference counting frees what the bombs leave
        try:
            before = _live_server_connections()
            codes: list[str] = []
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for i in range(_BOMBS):

                        async def one(i: int = i) -> None:
                            codes.append(await _send_bomb(port, i, bombs[i % 2]))

                        nursery.start_soon(one)
            assert codes == ["bad_stream"] * _BOMBS, codes
            # The connections close on their own (after their linger): wait for
            # that condition, with a deadline.
            with trio.move_on_after(_GONE_WITHIN_S):
                while _live_server_connections() > before:
                    await trio.sleep(0.05)
            left = _live_server_connections() - before
        finally:
            if was_enabled:
                gc.enable()
    assert left == 0, f"{left} of {_BOMBS} refused connections still alive (a reference cycle?)"
