"""``ServerConnection.next_events`` (the collector's bulk fast path) against
``next_event`` (the reference path): on any stream of good and bad lines, fed
in any chunks, both must yield the same events and the same errors in the
same order."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.protocol import NEED_DATA, Document, Hello, ProtocolError, ServerConnection
from tests.strategies import examples, samples

_names = st.sampled_from(["process"] * 4 + ["system", "x" * 257, "", "ünï"])
_seqs = st.integers(min_value=-2, max_value=12)
_ts = st.sampled_from(
    [1.7e9, 1700000000.25, 1_700_000_000, -1.0, 1e300, True, "1", None, 253402300800.0]
)


@st.composite
def _frame_line(draw: st.DrawFn, index: int) -> bytes:
    kind = draw(
        st.sampled_from(["delta"] * 8 + ["snap"] * 2 + ["event", "bye", "hello", "junk", "blank"])
    )
    if kind == "junk":
        return draw(
            st.sampled_from(
                [
                    b"{not json",
                    b"[1,2]",
                    b'{"t":"nope","seq":3}',
                    b'{"seq":1}',
                    b"\xff\xfe",
                    b'{"t":"delta","seq":1,"ts":NaN,"name":"process","data":{}}',
                ]
            )
        )
    if kind == "blank":
        return draw(st.sampled_from([b"", b"  ", b"\t\r"]))
    if kind == "hello":
        return orjson.dumps({"t": "hello", "v": 1, "session": "s-1", "host": "h", "tags": ["a"]})
    # Mostly in order, so that long valid chains (the fast path) form.
    seq = index if draw(st.integers(0, 5)) else draw(_seqs)
    ts = 1.7e9 + index if draw(st.integers(0, 3)) else draw(_ts)
    frame: dict[str, Any] = {"t": kind, "seq": seq, "ts": ts}
    if kind != "bye":
        frame["name"] = draw(_names)
    if kind in ("delta", "snap"):
        data = draw(samples | st.sampled_from([None, [1], {"cpu": None}, {"a": {"b": None}}]))
        frame["data"] = data
    if draw(st.booleans()):
        del frame[draw(st.sampled_from(sorted(frame)))]
    line = orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS)
    return line + b"\r" if draw(st.integers(0, 9)) == 0 else line


_HELLO = b'{"t":"hello","v":1,"session":"s-1","host":"h","tags":["a"]}'


def _canon(event: Any) -> Any:
    if type(event) is Hello:
        return ("hello", event.session, event.host, event.tags)
    assert type(event) is Document
    fields = (event.session, event.seq, event.kind, event.name, event.ts, event.host,
              list(event.tags), event.data)  # fmt: skip
    # orjson keeps 1, 1.0 and true apart, where == would not.
    return ("doc", orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS))


def _error(exc: ProtocolError) -> Any:
    return ("error", exc.code, exc.seq, exc.fatal, exc.msg)


def _reference(chunks: list[bytes], max_errors: int) -> list[Any]:
    conn, out = ServerConnection(max_errors=max_errors, max_frame_bytes=4096), []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                out.append(_error(exc))
                if exc.fatal:
                    return out
                continue
            if event is NEED_DATA:
                break
            out.append(_canon(event))
            if type(event) is Document and event.kind == "session":
                return out  # the collector reads nothing after a bye
    return out


def _fast(chunks: list[bytes], max_errors: int) -> list[Any]:
    conn, out = ServerConnection(max_errors=max_errors, max_frame_bytes=4096), []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            events: list[Any] = []
            try:
                conn.next_events(events)
            except ProtocolError as exc:
                out.extend(_canon(e) for e in events)
                out.append(_error(exc))
                if exc.fatal:
                    return out
                continue
            out.extend(_canon(e) for e in events)
            if conn.ended:
                return out
            break
    return out


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=examples(400), deadline=None)
@given(
    lines=st.integers(0, 30).flatmap(lambda n: st.tuples(*[_frame_line(i) for i in range(n)])),
    with_hello=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    max_errors=st.sampled_from([3, 100]),
)
def test_fast_path_matches_reference(
    lines: tuple[bytes, ...], with_hello: bool, cuts: list[int], max_errors: int
) -> None:
    data = b"\n".join(([_HELLO] if with_hello else []) + list(lines)) + b"\n"
    chunks = _chunked(data, cuts)
    assert _fast(chunks, max_errors) == _reference(chunks, max_errors)


def test_fast_path_byte_by_byte_and_oversize_line() -> None:
    good = [_HELLO, b'{"t":"snap","seq":1,"ts":1.5e9,"name":"p","data":{"a":{"b":1}}}',
            b'{"t":"delta","seq":2,"ts":1.5e9,"name":"p","data":{"a":{"c":2}}}',
            b"x" * 5000, b'{"t":"delta","seq":3,"ts":1.5e9,"name":"p","data":{}}']  # fmt: skip
    data = b"\n".join(good) + b"\n"
    whole = _fast([data], 100)
    assert whole == _reference([data], 100)
    bytewise = [data[i : i + 1] for i in range(len(data))]
    assert _fast(bytewise, 100) == _reference(bytewise, 100)
    assert [e[:4] for e in _fast(bytewise, 100)] == [e[:4] for e in whole]
    assert [e[0] for e in whole] == ["hello", "doc", "doc", "error"]
    assert whole[-1][1:4] == ("frame_too_large", None, True)


def test_fast_path_reassembles_nested_deltas() -> None:
    lines = [_HELLO, b'{"t":"snap","seq":0,"ts":1.5e9,"name":"p","data":{"a":{"b":1,"c":[1]},"d":1}}',
             b'{"t":"delta","seq":1,"ts":1.5e9,"name":"p","data":{"a":{"b":null,"e":{"f":1}},"d":null}}',
             b'{"t":"bye","seq":2,"ts":1.5e9,"data":{"exit_code":3}}',
             b'{"t":"delta","seq":3,"ts":1.5e9,"name":"p","data":{}}']  # fmt: skip
    conn, events = ServerConnection(), []
    conn.receive_data(b"\n".join(lines) + b"\n")
    conn.next_events(events)
    assert [type(e) for e in events] == [Hello, Document, Document, Document]
    assert events[2].data == {"a": {"c": [1], "e": {"f": 1}}}
    assert events[3].kind == "session" and conn.ended
    try:
        conn.next_events(events)
    except ProtocolError as exc:
        assert exc.code == "bad_frame"
    else:
        raise AssertionError("a frame after the bye must be rejected")
