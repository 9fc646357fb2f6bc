"""ClientConnection, the agent's sans-IO side: no sockets, byte by byte."""

from __future__ import annotations

import orjson
import pytest

from deltawire.protocol import (
    NEED_DATA,
    Ack,
    BadJson,
    ClientConnection,
    Closed,
    ErrorFrame,
    Flow,
    Hello,
    LocalProtocolError,
    Snap,
    Welcome,
)

WIRE = (
    b'{"t":"welcome","v":1,"session":"s","acked":4}\n'
    b'{"t":"flow","min_interval":2}\r\n'
    b"\n"
    b'{"t":"ack","seq":7}\n'
    b'{"t":"ack","seq":6}\n'
    b'{"t":"error","code":"idle","msg":"gone","fatal":true}\n'
)
EVENTS = [Welcome("s", 4), Flow(2.0), Ack(7), Ack(6), ErrorFrame("idle", "gone", True)]


def _drain(conn: ClientConnection) -> list[object]:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


@pytest.mark.parametrize("step", [1, 7, len(WIRE)])
def test_events_and_state_byte_by_byte(step: int) -> None:
    conn = ClientConnection()
    events: list[object] = []
    for i in range(0, len(WIRE), step):
        conn.receive_data(WIRE[i : i + step])
        events += _drain(conn)
    assert events == EVENTS
    assert conn.welcome == Welcome("s", 4)
    assert conn.acked == 7  # cumulative: a lower ack later does not move it back
    assert conn.error == ErrorFrame("idle", "gone", True)
    assert not conn.closed
    conn.receive_data(b"")
    assert conn.closed
    assert _drain(conn) == [Closed()]  # once, then nothing more
    assert conn.next_event() is NEED_DATA


def test_closed_comes_after_the_last_frame() -> None:
    conn = ClientConnection()
    conn.receive_data(b'{"t":"ack","seq":1}\n')
    conn.receive_data(b"")
    assert _drain(conn) == [Ack(1), Closed()]


def test_a_bad_line_raises_and_the_next_one_is_read() -> None:
    conn = ClientConnection()
    conn.receive_data(b'not json\n{"t":"ack","seq":3}\n')
    with pytest.raises(BadJson):
        conn.next_event()
    assert conn.next_event() == Ack(3)


def test_send_encodes_frames_and_tracks_what_was_sent() -> None:
    conn = ClientConnection()
    hello = Hello(session="s", host="h")
    wire = conn.send(hello)
    assert orjson.loads(wire) == {"t": "hello", "v": 1, "session": "s", "host": "h"}
    assert conn.hello == hello
    data = conn.send_many([Snap(3, 1.5, "p", {"a": 1}), Snap(5, 2.5, "p", {"a": 2})])
    assert [orjson.loads(x)["seq"] for x in data.splitlines()] == [3, 5]
    assert conn.sent_seq == 5
    assert conn.send_raw(b'{"t":"bye","seq":9,"ts":1}\n') == b'{"t":"bye","seq":9,"ts":1}\n'


def test_hello_first_and_only_once() -> None:
    conn = ClientConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(Snap(0, 1.0, "p", {}))
    conn.send(Hello(session="s"))
    with pytest.raises(LocalProtocolError):
        conn.send(Hello(session="s"))
