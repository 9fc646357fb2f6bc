"""A TCP fault proxy on 127.0.0.1, in trio: network flaps for tests and the soak.

    proxy = FaultProxy(upstream_port)
    port = await nursery.start(proxy.run)     # agents connect here
    proxy.reset()                             # every open connection gets a TCP RST
    proxy.set_delay(0.2)                      # each forwarded chunk waits 200 ms
    proxy.set_blackhole(True)                 # nothing moves, nothing closes
    proxy.heal()                              # normal again

Each accepted connection opens one upstream connection and pumps bytes both
ways. A reset aborts both sides with SO_LINGER 0 (a real RST, as a dying
middlebox sends); a black hole holds the bytes back and keeps the sockets
open, as a dead route does, so only timeouts notice. Counters say what was
done, for the soak's table.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter

import trio

__all__ = ["FaultProxy"]

#: Bytes moved per read: the pump is a copy loop, not a parser.
_CHUNK = 65536
_LINGER_0 = struct.pack("ii", 1, 0)


class _Pair:
    def __init__(self, down: trio.SocketStream, up: trio.SocketStream) -> None:
        self.down = down
        self.up = up
        self.scope = trio.CancelScope()

    def abort(self) -> None:
        """Close both sides with an RST instead of a FIN."""
        for stream in (self.down, self.up):
            try:
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            except OSError:
                pass
        self.scope.cancel()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        self.blackhole = False
        #: accepted, refused_upstream, resets, connections_reset, blackholes, delays
        self.counts: Counter[str] = Counter()
        self._pairs: set[_Pair] = set()
        self._flowing = trio.Event()
        self._flowing.set()

    # -- faults (call from the same trio run) ---------------------------------
    def reset(self) -> None:
        self.counts["resets"] += 1
        self.counts["connections_reset"] += len(self._pairs)
        for pair in list(self._pairs):
            pair.abort()

    def set_delay(self, seconds: float) -> None:
        if seconds > 0:
            self.counts["delays"] += 1
        self.delay = seconds

    def set_blackhole(self, on: bool) -> None:
        if on and not self.blackhole:
            self.counts["blackholes"] += 1
            self._flowing = trio.Event()
        elif not on:
            self._flowing.set()
        self.blackhole = on

    def heal(self) -> None:
        self.set_delay(0.0)
        self.set_blackhole(False)

    # -- serving -------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, down: trio.SocketStream) -> None:
        self.counts["accepted"] += 1
        try:
            up = await trio.open_tcp_stream(*self.upstream)
        except OSError:
            self.counts["refused_upstream"] += 1
            await down.aclose()  # as a refused connection looks to the agent
            return
        pair = _Pair(down, up)
        self._pairs.add(pair)
        try:
            with pair.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, down, up, nursery.cancel_scope)
                    nursery.start_soon(self._pump, up, down, nursery.cancel_scope)
        finally:
            self._pairs.discard(pair)
            with trio.CancelScope(shield=True):
                for stream in (down, up):
                    try:
                        await stream.aclose()
                    except (trio.BrokenResourceError, OSError):
                        pass

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        try:
            while data := await src.receive_some(_CHUNK):
                if self.blackhole:
                    await self._flowing.wait()
                if self.delay:
                    await trio.sleep(self.delay)  # the injected latency itself
                await dst.send_all(data)
            await dst.send_eof()  # a FIN travels on as a FIN
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()
