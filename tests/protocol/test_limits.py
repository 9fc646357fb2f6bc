"""PROTOCOL.md "Limits on what a frame may carry": depth 64, the int64 range,
bounded hello fields. Each limit is enforced on both ways out of
``ServerConnection`` (the reference path and the bulk fast path), is a
non-fatal error with the frame's seq (``bad_hello`` for a hello), and leaves
the connection, its seq and its delta chains as they were."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltawire.protocol import (
    BadFrame,
    BadHello,
    Document,
    Hello,
    ServerConnection,
    client_frame_from_dict,
)
from deltawire.protocol.frames import (
    INT64_MAX,
    INT64_MIN,
    MAX_DATA_DEPTH,
    MAX_HELLO_TAG_CHARS,
    MAX_HELLO_TAGS,
    MAX_HELLO_TEXT_CHARS,
    line_needs_limit_check,
)
from deltawire.testing.fuzzing import outcomes

HELLO = b'{"t":"hello","v":1,"session":"s-1"}\n'
SNAP = b'{"t":"snap","seq":0,"ts":1.5,"name":"p","data":{"a":1}}\n'


def nested(depth: int, leaf: Any = 1, *, array: bool = False) -> Any:
    """A value that nests ``depth`` levels (an object or array inside data is level 1)."""
    value = leaf
    for _ in range(depth):
        value = [value] if array else {"k": value}
    return value


def _events(lines: bytes, *, bulk: bool) -> list[Any]:
    """Every event and error the lines make, in order, through one of the two ways."""
    return outcomes([HELLO + lines], bulk=bulk)


def _frame(t: str, seq: int, data: Any) -> bytes:
    return orjson.dumps({"t": t, "seq": seq, "ts": 2.0, "name": "p", "data": data}) + b"\n"


def _deep_frame(t: str, seq: int, depth: int) -> bytes:
    """A frame whose data nests ``depth`` levels, deeper than orjson writes."""
    head = orjson.dumps({"t": t, "seq": seq, "ts": 2.0, "name": "p"})[:-1]
    return head + b',"data":{"x":' + b'{"k":' * depth + b"1" + b"}" * depth + b"}}\n"


@pytest.mark.parametrize("bulk", [False, True], ids=["next_event", "next_events"])
@pytest.mark.parametrize("kind", ["snap", "delta", "event", "bye"])
@pytest.mark.parametrize("array", [False, True], ids=["objects", "arrays"])
def test_depth_limit(bulk: bool, kind: str, array: bool) -> None:
    ok = {"x": nested(MAX_DATA_DEPTH, array=array)}  # the value of x is level 1
    too_deep = {"x": nested(MAX_DATA_DEPTH + 1, array=array)}
    lines = SNAP + _frame(kind, 1, too_deep) + _frame(kind, 2, ok)
    events = _events(lines, bulk=bulk)
    assert isinstance(events[0], Hello)
    assert isinstance(events[1], Document) and events[1].seq == 0
    err = events[2]
    assert isinstance(err, BadFrame) and err.seq == 1 and not err.fatal
    assert "deep" in err.msg
    assert isinstance(events[3], Document) and events[3].seq == 2  # the connection goes on
    assert len(events) == 4


@pytest.mark.parametrize("bulk", [False, True], ids=["next_event", "next_events"])
@pytest.mark.parametrize("depth", [254, 980, 1019])
def test_depths_that_crashed_the_collector(bulk: bool, depth: int) -> None:
    """Defects 1 and 2 of issue 11: 980-1023 levels raised RecursionError (no
    error frame, connection dropped); 252-254 were stored but unservable."""
    lines = _deep_frame("snap", 1, depth) + _deep_frame("delta", 2, depth)
    events = _events(lines, bulk=bulk)
    assert [type(e) for e in events] == [Hello, BadFrame, BadFrame]
    assert [e.seq for e in events[1:]] == [1, 2]


@pytest.mark.parametrize("bulk", [False, True], ids=["next_event", "next_events"])
@pytest.mark.parametrize(
    "literal",
    [b"9223372036854775808", b"-9223372036854775809", b"18446744073709551615",
     b"18446744073709551616", b"123456789012345678901234567890"],
)  # fmt: skip
def test_integers_outside_int64_are_bad_frame(bulk: bool, literal: bytes) -> None:
    """Defect 7: 2**64 was stored as 1.8446744073709552e+19 and acked."""
    lines = (
        SNAP
        + b'{"t":"delta","seq":1,"ts":2.0,"name":"p","data":{"a":' + literal + b"}}\n"
        + b'{"t":"event","seq":2,"ts":2.0,"name":"e","data":{"l":[1,' + literal + b"]}}\n"
        + b'{"t":"delta","seq":3,"ts":2.0,"name":"p","data":{"a":2}}\n'
    )  # fmt: skip
    events = _events(lines, bulk=bulk)
    assert [type(e) for e in events] == [Hello, Document, BadFrame, BadFrame, Document]
    assert [e.seq for e in events[1:]] == [0, 1, 2, 3]
    assert "int64" in events[2].msg
    assert events[4].data == {"a": 2}  # the rejected delta moved no chain


@pytest.mark.parametrize("bulk", [False, True], ids=["next_event", "next_events"])
def test_integers_at_the_int64_bounds_and_long_numbers_that_are_not_integers(bulk: bool) -> None:
    data = {"max": INT64_MAX, "min": INT64_MIN, "s": "12345678901234567890123"}
    line = orjson.dumps({"t": "snap", "seq": 1, "ts": 2.0, "name": "q", "data": data}) + b"\n"
    line += b'{"t":"delta","seq":2,"ts":2.0,"name":"q","data":{"f":1.2345678901234567890123,'
    line += b'"e":1e123,"g":12345678901234567890.5,"h":-1.5e-300}}\n'
    events = _events(line, bulk=bulk)
    assert [type(e) for e in events] == [Hello, Document, Document]
    assert events[1].data == data
    assert events[2].data["g"] == 12345678901234567890.5


@given(st.integers())
def test_int_literal_check_agrees_with_python(n: int) -> None:
    line = orjson.dumps({"t": "event", "seq": 1, "ts": 1, "name": "e"})[:-1]
    line += b',"data":{"n":' + str(n).encode() + b',"s":"' + str(n).encode() + b'"}}'
    try:
        conn = ServerConnection()
        conn.receive_data(HELLO + line + b"\n")
        assert isinstance(conn.next_event(), Hello)
        doc = conn.next_event()
    except BadFrame:
        assert not INT64_MIN <= n <= INT64_MAX
    else:
        assert INT64_MIN <= n <= INT64_MAX
        assert isinstance(doc, Document) and doc.data == {"n": n, "s": str(n)}


def test_quick_line_test_never_passes_a_line_that_breaks_a_limit() -> None:
    assert line_needs_limit_check(_deep_frame("snap", 1, MAX_DATA_DEPTH + 1))
    assert line_needs_limit_check(b'{"data":{"a":9223372036854775808}}')
    assert not line_needs_limit_check(SNAP)


def _hello(**fields: Any) -> dict[str, Any]:
    return {"t": "hello", "v": 1, "session": "s", **fields}


@pytest.mark.parametrize(
    "fields",
    [
        {"host": "h" * (MAX_HELLO_TEXT_CHARS + 1)},
        {"agent": "a" * (MAX_HELLO_TEXT_CHARS + 1)},
        {"tags": ["t"] * (MAX_HELLO_TAGS + 1)},
        {"tags": ["t" * (MAX_HELLO_TAG_CHARS + 1)]},
        {"tags": ["x" * 100] * 10_000},  # defect 4: copied into every document
        {"tags": [1]},
        {"tags": "t"},
    ],
    ids=["host", "agent", "tag-count", "tag-length", "10k-tags", "tag-type", "tags-type"],
)
def test_hello_limits(fields: dict[str, Any]) -> None:
    with pytest.raises(BadHello):
        client_frame_from_dict(_hello(**fields))
    conn = ServerConnection()
    conn.receive_data(orjson.dumps(_hello(**fields)) + b"\n")
    with pytest.raises(BadHello) as caught:
        conn.next_event()
    assert caught.value.fatal


def test_hello_at_its_limits_is_accepted() -> None:
    hello = client_frame_from_dict(
        _hello(
            host="h" * MAX_HELLO_TEXT_CHARS,
            agent="a" * MAX_HELLO_TEXT_CHARS,
            tags=["t" * MAX_HELLO_TAG_CHARS] * MAX_HELLO_TAGS,
        )
    )
    assert isinstance(hello, Hello) and len(hello.tags) == MAX_HELLO_TAGS
