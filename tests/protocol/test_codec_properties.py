"""Property tests: samples -> DeltaEncoder -> bytes -> Decoder -> Reassembler -> samples."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.protocol import (
    NEED_DATA,
    Bye,
    DeltaEncoder,
    Document,
    Encoder,
    Event,
    Hello,
    ServerConnection,
    Snap,
    json_equal,
)
from tests.strategies import examples, names, samples, timestamps

_item = st.one_of(
    st.tuples(st.just("sample"), names, timestamps, samples),
    st.tuples(st.just("event"), names, timestamps, samples | st.none()),
)


def _canon(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _drain(conn: ServerConnection, out: list[Any]) -> None:
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)


def _wire(items: list[tuple[str, str, float, Any]], keyframe_every: int) -> bytes:
    enc, delta = Encoder(), DeltaEncoder(keyframe_every)
    parts = [enc.send(Hello(session="prop-1", host="h", tags=("a", "b")))]
    for seq, (kind, name, ts, data) in enumerate(items):
        frame = (
            delta.encode(seq, ts, name, data) if kind == "sample" else Event(seq, ts, name, data)
        )
        parts.append(enc.send(frame))
    parts.append(enc.send(Bye(len(items), 1.0, {"exit_code": 0})))
    return b"".join(parts)


def _check(items: list[tuple[str, str, float, Any]], events: list[Any]) -> None:
    assert isinstance(events[0], Hello)
    docs = events[1:]
    assert len(docs) == len(items) + 1
    for seq, ((kind, name, ts, data), doc) in enumerate(zip(items, docs, strict=False)):
        assert isinstance(doc, Document)
        assert (doc.seq, doc.kind, doc.name, doc.ts) == (seq, kind, name, ts)
        assert json_equal(doc.data, data), (doc.data, data)
        assert _canon(doc.data) == _canon(data)
        assert doc.session == "prop-1" and doc.host == "h" and doc.tags == ("a", "b")
    assert docs[-1].kind == "session" and docs[-1].name == "end"


@settings(max_examples=examples(150))
@given(st.lists(_item, max_size=25), st.integers(1, 5))
def test_round_trip_whole(items: list[tuple[str, str, float, Any]], keyframe_every: int) -> None:
    conn, out = ServerConnection(), []
    conn.receive_data(_wire(items, keyframe_every))
    _drain(conn, out)
    _check(items, out)


@settings(max_examples=examples(60))
@given(st.lists(_item, max_size=12), st.integers(1, 5))
def test_round_trip_byte_by_byte(
    items: list[tuple[str, str, float, Any]], keyframe_every: int
) -> None:
    wire = _wire(items, keyframe_every)
    conn, out = ServerConnection(), []
    for i in range(len(wire)):
        conn.receive_data(wire[i : i + 1])
        _drain(conn, out)
    _check(items, out)


@settings(max_examples=examples(60), deadline=None)  # a loaded 2-core machine is no deadline
@given(st.lists(_item, max_size=12), st.data())
def test_round_trip_random_chunks(
    items: list[tuple[str, str, float, Any]], data: st.DataObject
) -> None:
    wire = _wire(items, 3)
    conn, out = ServerConnection(), []
    pos = 0
    while pos < len(wire):
        n = data.draw(st.integers(1, 64))
        conn.receive_data(wire[pos : pos + n])
        pos += n
        _drain(conn, out)
    _check(items, out)


@given(st.lists(samples, min_size=1, max_size=20), st.integers(1, 4))
def test_encoder_snaps_first_and_every_k(chain: list[dict[str, Any]], k: int) -> None:
    enc = DeltaEncoder(keyframe_every=k)
    frames = [enc.encode(i, float(i), "s", sample) for i, sample in enumerate(chain)]
    assert isinstance(frames[0], Snap)
    run = 0
    for frame in frames:
        run = 0 if isinstance(frame, Snap) else run + 1
        assert run < k


def test_encoder_snaps_when_patch_not_smaller() -> None:
    enc = DeltaEncoder(keyframe_every=100)
    enc.encode(0, 0.0, "s", {f"k{i}": i for i in range(50)})
    # Deleting 50 keys costs more bytes than sending the new, tiny sample.
    assert isinstance(enc.encode(1, 1.0, "s", {"x": 1}), Snap)
    enc.encode(2, 2.0, "s", {"x": 1, "y": "a longer string value"})
    assert not isinstance(enc.encode(3, 3.0, "s", {"x": 2, "y": "a longer string value"}), Snap)


def test_encoder_reset_restarts_chains() -> None:
    enc = DeltaEncoder()
    enc.encode(0, 0.0, "s", {"a": 1, "b": "unchanged"})
    assert not isinstance(enc.encode(1, 1.0, "s", {"a": 2, "b": "unchanged"}), Snap)
    enc.reset()
    assert isinstance(enc.encode(2, 2.0, "s", {"a": 3, "b": "unchanged"}), Snap)
