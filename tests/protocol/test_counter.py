"""The counter extension: cdelta frames reassemble exactly (ints exact, floats
bit-exact), only when negotiated, and never past int64."""

from __future__ import annotations

import math
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.protocol import (
    NEED_DATA,
    BadFrame,
    CDelta,
    ClientConnection,
    DeltaEncoder,
    Hello,
    ServerConnection,
    UnknownType,
    Welcome,
    to_counter_patch,
)
from tests.strategies import examples

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
LEAF = st.one_of(INT64, st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                 st.text(max_size=5))  # fmt: skip
KEYS = st.sampled_from(["a", "b", "c", "io"])
SAMPLE = st.recursive(
    st.dictionaries(KEYS, LEAF, max_size=4),
    lambda inner: st.dictionaries(KEYS, st.one_of(LEAF, inner), max_size=4),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values, with floats compared bit for bit (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


def _server(ext: tuple[str, ...] = ("counter",)) -> ServerConnection:
    server = ServerConnection()
    server.receive_data(orjson.dumps(Hello(session="s", ext=ext).wire()) + b"\n")
    assert isinstance(server.next_event(), Hello)
    return server


@settings(max_examples=examples(150), deadline=None)
@given(samples=st.lists(SAMPLE, min_size=1, max_size=12))
def test_cdelta_chains_reassemble_exactly(samples: list[dict[str, Any]]) -> None:
    enc = DeltaEncoder(counter=True)
    server = _server()
    assert server.reassembler is not None and server.reassembler.counter
    wire = b"".join(
        orjson.dumps(enc.encode(i, 1.0 + i, "p", s).wire()) + b"\n" for i, s in enumerate(samples)
    )
    server.receive_data(wire)
    docs: list[Any] = []
    server.next_events(docs)
    assert len(docs) == len(samples)
    for doc, sample in zip(docs, samples, strict=True):
        assert _same(doc.data, sample), (doc.data, sample)


def test_a_growing_counter_sends_its_increment() -> None:
    enc = DeltaEncoder(counter=True)
    same = {"status": "running", "cmdline": "python -m app --serve"}
    enc.encode(0, 1.0, "p", {"io": {"read_bytes": 1380352, "rate": 1.5}, "on": True, **same})
    frame = enc.encode(1, 2.0, "p", {"io": {"read_bytes": 1384448, "rate": 2.5}, "on": 1, **same})
    assert type(frame) is CDelta
    # The int grew by 4096; the float and the bool-to-int change go whole.
    assert frame.data == {"io": {"read_bytes": 4096, "rate": 2.5}, "on": 1}
    assert to_counter_patch({"n": 5}, {"n": None}) == {"n": None}


def test_cdelta_is_unknown_unless_negotiated() -> None:
    server = _server(ext=())
    server.receive_data(b'{"t":"snap","seq":1,"ts":1,"name":"p","data":{"n":1}}\n'
                        b'{"t":"cdelta","seq":2,"ts":2,"name":"p","data":{"n":1}}\n')  # fmt: skip
    assert server.next_event().data == {"n": 1}
    with pytest.raises(UnknownType) as info:
        server.next_event()
    assert info.value.seq == 2 and not info.value.fatal


def test_a_sum_past_int64_is_a_bad_frame_and_moves_no_chain() -> None:
    server = _server()
    big = (1 << 63) - 10
    server.receive_data(
        b'{"t":"snap","seq":1,"ts":1,"name":"p","data":{"n":%d}}\n' % big
        + b'{"t":"cdelta","seq":2,"ts":2,"name":"p","data":{"n":100}}\n'
        + b'{"t":"cdelta","seq":3,"ts":3,"name":"p","data":{"n":9}}\n'
    )
    assert server.next_event().data == {"n": big}
    with pytest.raises(BadFrame) as info:
        server.next_event()
    assert info.value.seq == 2
    assert server.next_event().data == {"n": big + 9}


def test_extensions_are_negotiated_in_hello_and_welcome() -> None:
    server = ServerConnection(ext=("counter",))
    client = ClientConnection()
    server.receive_data(client.send(Hello(session="s", ext=("counter", "future"))))
    assert isinstance(server.next_event(), Hello)
    welcome_bytes = server.send(server.welcome(-1))
    assert orjson.loads(welcome_bytes)["ext"] == ["counter"]
    client.receive_data(welcome_bytes)
    assert client.next_event() == Welcome("s", -1, ext=("counter",))
    assert client.ext == ("counter",) and client.next_event() is NEED_DATA
    # A hello that offers none gets v1's welcome, without the field.
    plain = ServerConnection()
    plain.receive_data(b'{"t":"hello","v":1,"session":"s"}\n')
    plain.next_event()
    assert "ext" not in orjson.loads(plain.send(plain.welcome(-1)))


def test_floats_stay_bit_exact() -> None:
    enc = DeltaEncoder(counter=True)
    server = _server()
    values = [0.1, 0.30000000000000004, -0.0, 1e308, 5e-324, math.pi]
    wire = b"".join(
        orjson.dumps(enc.encode(i, 1.0, "p", {"x": v, "n": i}).wire()) + b"\n"
        for i, v in enumerate(values)
    )
    server.receive_data(wire)
    docs: list[Any] = []
    server.next_events(docs)
    assert [struct.pack("<d", d.data["x"]) for d in docs] == [struct.pack("<d", v) for v in values]


def test_an_increment_outside_int64_goes_as_a_snap() -> None:
    """A jump from near -2^63 to near 2^63 cannot be sent as an increment
    (it is no int64): the encoder sends a snap, which the collector accepts."""
    enc = DeltaEncoder(counter=True)
    pad = {"cmdline": "python -m app --serve --port 8080"}
    enc.encode(0, 1.0, "p", {"n": -(1 << 63), **pad})
    frame = enc.encode(1, 2.0, "p", {"n": (1 << 63) - 1, **pad})
    assert frame.t == "snap" and frame.data["n"] == (1 << 63) - 1
    assert to_counter_patch({"a": {"n": 1 << 62}}, {"a": {"n": -(1 << 62) - 2}}) is None
