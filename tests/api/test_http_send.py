"""http.py's ``send``: an answer written on the socket directly (the send
without the GIL) or through the transport, over a real TCP connection, must
arrive whole and in order whatever the kernel takes at once (16 MB: more
than its buffers hold while the client is not reading), given in one part
or several (an answer's head and body, gathered by one writev), under uvloop (what
the API runs) and asyncio's own loop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

import pytest
import uvloop

from deltawire.collector.api.http import send
from deltawire.testing.servers import HOST


def _pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on loopback: (the server's end, the client's)."""
    with socket.create_server((HOST, 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


def _read(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(min(65536, n - len(got)))
        assert chunk, "closed early"
        got += chunk
    return bytes(got)


async def _exchange() -> None:
    loop = asyncio.get_running_loop()
    server, client = _pair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server)
    try:
        fd = transport.get_extra_info("socket").fileno()
        small, big = os.urandom(100), os.urandom(16 << 20)  # big: more than the buffers hold
        send(transport, fd, small[:30], small[30:])  # an answer's head and body
        assert transport.get_write_buffer_size() == 0  # the kernel took it: written directly
        send(transport, fd, big[:4096], big[4096:])  # the kernel takes part of the second
        assert transport.get_write_buffer_size() > 0  # the rest waits in the transport
        # The client reads some (the loop does not run meanwhile): the socket
        # has room again while the transport still holds the rest of ``big``.
        head = _read(client, 1 << 20)
        tail = [os.urandom(10), os.urandom(50_000)]
        for data in tail:  # queued behind it, never written past it
            send(transport, fd, data)
        want = small + big + b"".join(tail)
        got = head + await loop.run_in_executor(None, _read, client, len(want) - len(head))
        assert got == want
        transport.close()
        send(transport, fd, b"late")  # closing: never written to the descriptor
    finally:
        transport.close()
        client.close()


@pytest.mark.parametrize("new_loop", [uvloop.new_event_loop, asyncio.new_event_loop])
def test_answers_arrive_whole_and_in_order(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(asyncio.wait_for(_exchange(), 30))
