"""A refused zstd bomb leaves nothing behind: its connection's buffers and
decompression context are freed by reference counting the moment the
connection is dropped (or at once by ``close``), never left to the cyclic GC.

The collector runs that GC rarely (it tunes it for throughput), so memory
held in a reference cycle outlived its connection: 200 bombs left the
collector's RSS 215 MB higher. These tests run with the GC off, so a cycle
shows as memory still traced after the connection is gone.
"""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any, Final

import pytest
import zstandard

from deltawire.protocol import (
    BadStream,
    ClientConnection,
    DeltaEncoder,
    Hello,
    ProtocolError,
    ServerConnection,
    Welcome,
)
from deltawire.protocol.codec import Encoder

#: What the protocol's own files may still hold once every connection is
#: gone: interned strings and caches, nowhere near one connection's buffer
#: (a bomb's was 256 KiB to 1.3 MiB).
_LEFT_BEHIND_BYTES: Final = 64 << 10
_BOMBS: Final = 6
_HELLO: Final = b'{"t":"hello","v":1,"session":"s","compress":["zstd"]}\n'


def _bomb(unit: bytes, mib: int = 64) -> bytes:
    """A few KiB of zstd that inflate to ``mib`` MiB of ``unit``."""
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=16)
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    chunk = unit * ((1 << 20) // len(unit))
    return b"".join(obj.compress(chunk) for _ in range(mib)) + obj.flush(
        zstandard.COMPRESSOBJ_FLUSH_BLOCK
    )


def _serve(data: bytes) -> str:
    """A connection fed ``data`` in 64 KiB reads, as the collector reads it,
    until a fatal error: its code. The connection is dropped on return."""
    server = ServerConnection()
    server.receive_data(_HELLO)
    events: list[Any] = []
    for i in range(0, len(data), 64 << 10):
        server.receive_data(data[i : i + (64 << 10)])
        while True:
            try:
                server.next_events(events)
            except ProtocolError as exc:
                if exc.fatal:
                    return exc.code
                continue
            break
        events.clear()
    return "none"


@contextlib.contextmanager
def _traced_protocol() -> Iterator[list[int]]:
    """Yields a list that gets, on exit, the bytes still allocated from the
    protocol's files: traced with the cyclic GC off."""
    result: list[int] = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    tracemalloc.start()
    try:
        yield result
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/protocol/*")])
        result.append(sum(stat.size for stat in snap.statistics("filename")))
    finally:
        tracemalloc.stop()
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize(
    "unit", [b"\n", b"x", b"{}\n"], ids=["blank-lines", "endless-line", "short-lines"]
)
def test_refused_bombs_leave_no_memory_behind(unit: bytes) -> None:
    bomb = _bomb(unit)
    _serve(bomb)  # once first: caches (the codec's, zstandard's) are not per connection
    with _traced_protocol() as left:
        codes = [_serve(bomb) for _ in range(_BOMBS)]
    assert set(codes) <= {"bad_stream", "frame_too_large", "too_many_errors"}, codes
    assert left[0] < _LEFT_BEHIND_BYTES, f"{left[0]} bytes left by {_BOMBS} refused bombs"


def test_a_session_that_ends_normally_leaves_no_memory_behind() -> None:
    """Every compressed connection, not only a bomb's: a decompressor that
    kept its sink (a bound method of the decoder) made a cycle of each."""
    client = ClientConnection()
    client.send(Hello(session="s", compress=("zstd",)))
    client.receive_data(Encoder().send(Welcome("s", -1, compress="zstd", negotiated=True)))
    client.next_event()
    enc = DeltaEncoder()
    stream = b"".join(
        client.send(enc.encode(seq, 1.7e9 + seq, "proc", {"cpu": seq, "pad": "x" * 600}))
        for seq in range(200)
    )

    def one() -> int:
        server = ServerConnection()
        server.receive_data(_HELLO + stream)
        events: list[Any] = []
        server.next_events(events)
        return len(events)

    assert one() == 201  # the hello and every sample
    with _traced_protocol() as left:
        for _ in range(_BOMBS):
            one()
    assert left[0] < _LEFT_BEHIND_BYTES, f"{left[0]} bytes left by {_BOMBS} sessions"


def test_close_frees_the_buffers_while_the_connection_is_still_referenced() -> None:
    """What the collector does when a connection ends: whatever still refers
    to the ServerConnection (a traceback, a task) no longer holds its buffer."""
    line_start = _bomb(b"x", mib=1)[: 1 << 10]  # ~half a MiB of one unfinished line
    with _traced_protocol() as left:
        server = ServerConnection()
        server.receive_data(_HELLO)
        server.next_events([])
        server.receive_data(line_start)
        assert server.buffered > 128 << 10
        server.close()
        assert server.buffered == 0
        with pytest.raises(BadStream):
            server.next_events([])
    assert left[0] < _LEFT_BEHIND_BYTES, f"{left[0]} bytes held after close"
