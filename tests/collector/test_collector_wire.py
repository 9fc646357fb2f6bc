"""Every error code over real TCP, against a collector serving in this process."""

from __future__ import annotations

import pathlib

import trio

from deltawire.protocol import Welcome
from deltawire.testing.harness import Client, collector_in_process

HELLO = {"t": "hello", "v": 1, "session": "wire-1"}


async def _fatal(port: int, *lines: bytes | dict[str, object]) -> Client:
    client = await Client.connect(port)
    await client.send(*lines)
    await client.until_closed()
    return client


async def test_error_codes_over_the_wire(tmp_path: pathlib.Path) -> None:
    async with collector_in_process(tmp_path, tokens=frozenset({"s3cret"}), max_frame_bytes=2048,
                                    idle_timeout=1.0) as port:  # fmt: skip
        c = await _fatal(port, b'{"t":"snap","seq":1,"ts":1,"name":"a","data":{}}\n')
        assert [(e.code, e.fatal) for e in c.errors] == [("bad_hello", True)]

        c = await _fatal(port, {**HELLO, "token": "wrong"})
        assert [(e.code, e.fatal) for e in c.errors] == [("auth", True)]
        c = await _fatal(port, HELLO)
        assert [e.code for e in c.errors] == ["auth"]

        c = await _fatal(port, {**HELLO, "v": 2, "token": "s3cret"})
        assert [(e.code, e.fatal) for e in c.errors] == [("version", True)]

        c = await _fatal(port, {**HELLO, "token": "s3cret"}, b'{"t":"event","name":"' + b"x" * 3000)
        assert isinstance(c.frames[0], Welcome)
        assert [(e.code, e.fatal) for e in c.errors] == [("frame_too_large", True)]

        # Idle: a connection dribbling a partial line is cut like a silent one.
        c = await Client.connect(port)
        await c.send({**HELLO, "token": "s3cret"})
        await c.until(lambda cl: cl.welcome)
        async with trio.open_nursery() as nursery:

            async def dribble() -> None:
                try:
                    while True:
                        await c.send(b" ")
                        await trio.sleep(0.1)  # the pace of the dribble, not synchronisation
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            nursery.start_soon(dribble)
            await c.until_closed(timeout=10)
            nursery.cancel_scope.cancel()
        assert [(e.code, e.fatal) for e in c.errors] == [("idle", True)]

        # Non-fatal codes, each answered and acked; then a bye closes cleanly.
        c = await Client.connect(port)
        await c.send(
            {**HELLO, "token": "s3cret"},
            b"not json\n",
            b'{"t":"snap","seq":1,"ts":1,"name":"a"}\n',
            b'{"t":"nope","seq":2}\n',
            b'{"t":"delta","seq":3,"ts":1,"name":"a","data":{}}\n',
            b'{"t":"snap","seq":4,"ts":1,"name":"a","data":{"v":1}}\n',
            b'{"t":"snap","seq":4,"ts":1,"name":"a","data":{"v":1}}\n',
            b'{"t":"bye","seq":5,"ts":2}\n',
        )
        await c.until_closed()
        assert [(e.code, e.seq, e.fatal) for e in c.errors] == [
            ("bad_json", None, False), ("bad_frame", 1, False), ("unknown_type", 2, False),
            ("no_base", 3, False), ("bad_seq", 4, False),
        ]  # fmt: skip
        assert c.acked == 5


async def test_too_many_errors_and_overloaded(tmp_path: pathlib.Path) -> None:
    async with collector_in_process(tmp_path, max_connections=2) as port:
        env_errors = b"junk\n" * 101
        c = await _fatal(port, HELLO, env_errors)
        assert c.errors[-1].code == "too_many_errors" and c.errors[-1].fatal
        assert sum(e.code == "bad_json" for e in c.errors) == 100

        a = await Client.connect(port)
        await a.send({**HELLO, "session": "a"})
        await a.until(lambda cl: cl.welcome)
        b = await Client.connect(port)
        await b.send({**HELLO, "session": "b"})
        await b.until(lambda cl: cl.welcome)
        c = await Client.connect(port)
        await c.until_closed()
        assert [(e.code, e.fatal) for e in c.errors] == [("overloaded", True)]
        await a.aclose()
        await b.aclose()
