"""One test per error code the sans-IO layer detects, and the decoder's edge cases.

``auth``, ``overloaded`` and ``idle`` need policy, a socket or a clock: they are
tested over the wire in test_collector_errors.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from deltawire.protocol import (
    ERROR_CODES,
    NEED_DATA,
    SERVER,
    Ack,
    BadFrame,
    BadHello,
    BadJson,
    BadSeq,
    Decoder,
    Document,
    Encoder,
    ErrorFrame,
    Flow,
    FrameTooLarge,
    Hello,
    NoBase,
    ProtocolError,
    ServerConnection,
    TooManyErrors,
    UnknownType,
    UnsupportedVersion,
    Welcome,
    error_frame,
)

HELLO = b'{"t":"hello","v":1,"session":"s-1"}\n'


def _open(**kw: Any) -> ServerConnection:
    conn = ServerConnection(**kw)
    conn.receive_data(HELLO)
    assert isinstance(conn.next_event(), Hello)
    return conn


def _feed(conn: ServerConnection, line: bytes) -> Any:
    conn.receive_data(line)
    return conn.next_event()


def test_error_table_matches_protocol_md() -> None:
    assert ERROR_CODES == {
        "bad_hello": True, "auth": True, "version": True, "frame_too_large": True,
        "overloaded": True, "idle": True, "too_many_errors": True, "bad_json": False,
        "bad_frame": False, "unknown_type": False, "bad_seq": False, "no_base": False,
        "replaced": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    "first",
    [
        b'{"t":"snap","seq":1,"ts":1,"name":"a","data":{}}\n',
        b'{"t":"hello","v":1}\n',
        b'{"t":"hello","v":1,"session":"has space"}\n',
        b'{"t":"hello","v":1,"session":"' + b"x" * 129 + b'"}\n',
        b'{"t":"hello","v":"1","session":"s"}\n',
        b'{"t":"hello","v":1,"session":"s","tags":"web"}\n',
        b"not json\n",
        b"[1,2]\n",
    ],
)
def test_bad_hello(first: bytes) -> None:
    conn = ServerConnection()
    with pytest.raises(BadHello) as info:
        _feed(conn, first)
    assert info.value.fatal and info.value.code == "bad_hello"


def test_version() -> None:
    with pytest.raises(UnsupportedVersion) as info:
        _feed(ServerConnection(), b'{"t":"hello","v":2,"session":"s"}\n')
    assert info.value.code == "version" and info.value.fatal


def test_frame_too_large_with_and_without_newline() -> None:
    conn = _open(max_frame_bytes=64)
    conn.receive_data(b'{"t":"event","seq":1,"ts":1,"name":"' + b"x" * 100)
    with pytest.raises(FrameTooLarge):
        conn.next_event()
    with pytest.raises(FrameTooLarge):  # stays broken: no resynchronising
        conn.next_event()
    conn = _open(max_frame_bytes=64)
    with pytest.raises(FrameTooLarge) as info:
        _feed(conn, b'{"t":"event","seq":1,"ts":1,"name":"' + b"x" * 60 + b'"}\n')
    assert info.value.fatal


def test_line_exactly_at_limit_passes() -> None:
    line = b'{"t":"event","seq":1,"ts":1,"name":"a","data":{"p":"'
    line += b"x" * (64 - len(line) - 3) + b'"}}'
    assert len(line) == 64
    conn = _open(max_frame_bytes=64)
    assert isinstance(_feed(conn, line + b"\r\n"), Document)


@pytest.mark.parametrize(
    "line",
    [b"{nope\n", b"[1]\n", b'"s"\n', b"17\n", b"null\n", b'{"t":"event","name":"\xff\xfe"}\n'],
)
def test_bad_json_is_not_fatal(line: bytes) -> None:
    conn = _open()
    with pytest.raises(BadJson) as info:
        _feed(conn, line)
    assert not info.value.fatal
    assert isinstance(_feed(conn, b'{"t":"event","seq":1,"ts":1,"name":"ok"}\n'), Document)


@pytest.mark.parametrize(
    ("line", "seq"),
    [
        (b'{"seq":1,"ts":1}\n', 1),
        (b'{"t":5,"seq":1}\n', 1),
        (b'{"t":"snap","seq":-1,"ts":1,"name":"a","data":{}}\n', None),
        (b'{"t":"snap","seq":true,"ts":1,"name":"a","data":{}}\n', None),
        (b'{"t":"snap","seq":1.0,"ts":1,"name":"a","data":{}}\n', None),
        (b'{"t":"snap","seq":1,"ts":"now","name":"a","data":{}}\n', 1),
        (b'{"t":"snap","seq":1,"ts":1e300,"name":"a","data":{}}\n', 1),
        (b'{"t":"snap","seq":1,"ts":1,"name":"","data":{}}\n', 1),
        (b'{"t":"snap","seq":1,"ts":1,"name":"a","data":[]}\n', 1),
        (b'{"t":"snap","seq":1,"ts":1,"name":"a"}\n', 1),
        (b'{"t":"snap","seq":1,"ts":1,"name":"a","data":{"x":{"y":null}}}\n', 1),
        (b'{"t":"delta","seq":1,"ts":1,"name":"a","data":5}\n', 1),
        (b'{"t":"event","seq":1,"ts":1,"name":"a","data":"x"}\n', 1),
        (b'{"t":"bye","seq":1,"ts":1,"data":[0]}\n', 1),
        (b'{"t":"hello","v":1,"session":"again"}\n', None),
    ],
)
def test_bad_frame(line: bytes, seq: int | None) -> None:
    conn = _open()
    with pytest.raises(BadFrame) as info:
        _feed(conn, line)
    assert info.value.seq == seq and not info.value.fatal


def test_unknown_type_keeps_going_and_unknown_fields_are_ignored() -> None:
    conn = _open()
    with pytest.raises(UnknownType) as info:
        _feed(conn, b'{"t":"gossip","seq":4}\n')
    assert info.value.seq == 4 and not info.value.fatal
    doc = _feed(conn, b'{"t":"event","seq":1,"ts":1,"name":"a","future":[1,2]}\n')
    assert isinstance(doc, Document) and doc.data is None


def test_bad_seq_does_not_move_the_chain() -> None:
    conn = _open()
    _feed(conn, b'{"t":"snap","seq":5,"ts":1,"name":"a","data":{"v":1}}\n')
    for line in (
        b'{"t":"delta","seq":5,"ts":2,"name":"a","data":{"v":99}}\n',
        b'{"t":"delta","seq":3,"ts":2,"name":"a","data":{"v":99}}\n',
    ):
        with pytest.raises(BadSeq):
            _feed(conn, line)
    doc = _feed(conn, b'{"t":"delta","seq":9,"ts":3,"name":"a","data":{"w":2}}\n')
    assert doc.data == {"v": 1, "w": 2}


def test_no_base_and_rejected_snap_does_not_start_a_chain() -> None:
    conn = _open()
    with pytest.raises(NoBase) as info:
        _feed(conn, b'{"t":"delta","seq":1,"ts":1,"name":"a","data":{}}\n')
    assert info.value.seq == 1
    with pytest.raises(BadFrame):
        _feed(conn, b'{"t":"snap","seq":2,"ts":"x","name":"a","data":{"v":1}}\n')
    with pytest.raises(NoBase):
        _feed(conn, b'{"t":"delta","seq":3,"ts":1,"name":"a","data":{}}\n')
    # A rejected seq is not "used": the next frame may reuse it.
    doc = _feed(conn, b'{"t":"snap","seq":1,"ts":1,"name":"a","data":{"v":1}}\n')
    assert doc.seq == 1


def test_too_many_errors() -> None:
    conn = _open(max_errors=3)
    for _ in range(3):
        with pytest.raises(BadJson):
            _feed(conn, b"junk\n")
    with pytest.raises(TooManyErrors) as info:
        _feed(conn, b"junk\n")
    assert info.value.fatal


def test_frames_after_bye_are_rejected() -> None:
    conn = _open()
    assert _feed(conn, b'{"t":"bye","seq":1,"ts":1,"data":{"exit_code":3}}\n').kind == "session"
    with pytest.raises(BadFrame):
        _feed(conn, b'{"t":"event","seq":2,"ts":1,"name":"late"}\n')


def test_blank_lines_crlf_and_partial_lines() -> None:
    conn = ServerConnection()
    conn.receive_data(b"\n\r\n  \n" + HELLO[:10])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(HELLO[10:-1] + b"\r")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\n")
    assert isinstance(conn.next_event(), Hello)
    assert conn.next_event() is NEED_DATA


def test_buffer_is_bounded_for_slow_dribble() -> None:
    conn = _open(max_frame_bytes=1000)
    with pytest.raises(FrameTooLarge):
        for _ in range(2000):
            conn.receive_data(b"x")
            conn.next_event()
    assert conn.buffered <= 1002


def test_server_frames_round_trip() -> None:
    enc, dec = Encoder(), Decoder(SERVER)
    frames = [Welcome("s", -1), Ack(7), Flow(2.5), error_frame(BadSeq("late", seq=3)),
              ErrorFrame("idle", "bye", True)]  # fmt: skip
    dec.receive_data(enc.send_many(frames))  # type: ignore[arg-type]
    assert [dec.next_event() for _ in frames] == frames
    wire = orjson.loads(enc.send(frames[3]))
    assert wire == {"t": "error", "code": "bad_seq", "msg": "late", "fatal": False, "seq": 3}


def test_every_error_is_a_protocol_error() -> None:
    for cls in (BadHello, BadJson, BadFrame, BadSeq, NoBase, UnknownType, TooManyErrors):
        assert issubclass(cls, ProtocolError)
