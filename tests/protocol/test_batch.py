"""The batch extension: runs of cdelta frames in one line reassemble exactly
(ints exact, floats and timestamps bit-exact), byte by byte through the
sans-IO layer over a zstd stream, and mean exactly their cdelta frames."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.protocol import (
    BATCH,
    CODECS,
    COUNTER,
    EXTENSIONS,
    NEED_DATA,
    BadFrame,
    Batch,
    CDelta,
    ClientConnection,
    DeltaEncoder,
    Event,
    Hello,
    ProtocolError,
    ServerConnection,
    Snap,
    UnknownType,
    Welcome,
    batch_ts,
    expand_batch,
    group_batches,
)
from deltawire.protocol.frames import MAX_BATCH_SAMPLES
from tests.strategies import examples

from .test_counter import SAMPLE, _same

# Timestamps as an agent makes them (whole milliseconds), mostly, and as
# anything may: sub-millisecond, negative, integral, zero.
MS_TS = st.integers(min_value=1_700_000_000_000, max_value=1_800_000_000_000).map(
    lambda ms: ms / 1000
)
TS = st.one_of(
    MS_TS, MS_TS, MS_TS, MS_TS,
    st.floats(min_value=-1e10, max_value=1e11, allow_nan=False),
    st.integers(min_value=0, max_value=10**10),
)  # fmt: skip
# A constant member makes most patches smaller than their sample (else the
# encoder sends a snap, and there is nothing to batch).
PADDED = SAMPLE.map(lambda d: {**d, "cmdline": "python -m app --serve --port 8080"})
SAMPLES = st.lists(st.tuples(st.sampled_from(["process", "system"]), TS, PADDED),
                   min_size=1, max_size=14)  # fmt: skip


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _pair(compress: tuple[str, ...] = CODECS, ext: tuple[str, ...] = EXTENSIONS,
          accept_ext: tuple[str, ...] = EXTENSIONS) -> tuple[ClientConnection, ServerConnection]:  # fmt: skip
    """A client and a server past hello and welcome, wired through bytes only."""
    client, server = ClientConnection(), ServerConnection(ext=accept_ext)
    server.receive_data(client.send(Hello(session="s", compress=compress, ext=ext)))
    assert isinstance(server.next_event(), Hello)
    client.receive_data(server.send(server.welcome(-1)))
    assert isinstance(client.next_event(), Welcome)
    return client, server


def _events(server: ServerConnection, wire: bytes, *, step: int = 1) -> list[Any]:
    """Feed ``wire`` ``step`` bytes at a time; every event (errors included) in order."""
    out: list[Any] = []
    for i in range(0, len(wire), step):
        server.receive_data(wire[i : i + step])
        while True:
            try:
                server.next_events(out)
                break
            except ProtocolError as exc:
                out.append(exc)
    return out


@settings(max_examples=examples(150), deadline=None)
@given(samples=SAMPLES, push=st.integers(min_value=1, max_value=6),
       events=st.sets(st.integers(min_value=0, max_value=14)), gap=st.booleans())  # fmt: skip
def test_batched_pushes_reassemble_exactly_byte_by_byte(
    samples: list[tuple[str, Any, dict[str, Any]]], push: int, events: set[int], gap: bool
) -> None:
    client, server = _pair()
    enc = DeltaEncoder(counter=True)
    frames: list[Any] = []
    seq = 0
    for i, (name, ts, data) in enumerate(samples):
        if i in events:  # an event between samples ends a run
            frames.append(Event(seq, 1.0, "deploy", {"v": i}))
            seq += 1
        frames.append(enc.encode(seq, ts, name, data))
        seq += 2 if gap and i % 3 == 2 else 1  # a gap in seqs ends a run too
    wire = b"".join(
        client.send_many(group_batches(frames[i : i + push])) for i in range(0, len(frames), push)
    )
    events = _events(server, wire)
    assert not [e for e in events if isinstance(e, ProtocolError)]
    docs = [d for d in events if d.kind == "sample"]
    assert [d.seq for d in docs] == [f.seq for f in frames if type(f) is not Event]
    for doc, (name, ts, data) in zip(docs, samples, strict=True):
        assert doc.name == name
        assert type(doc.ts) is type(ts) and _bits(float(doc.ts)) == _bits(float(ts))
        assert _same(doc.data, data), (doc.data, data)


def test_a_push_of_cdeltas_goes_as_one_batch_line() -> None:
    enc = DeltaEncoder(counter=True)
    same = {"status": "running", "cmdline": "python -m app --serve"}
    frames = [enc.encode(i, (1795423441185 + i * 1003) / 1000, "p", {"n": i * 4096, **same})
              for i in range(5)]  # fmt: skip
    grouped = group_batches(frames)
    assert [type(f) for f in grouped] == [Snap, Batch]
    batch = grouped[1]
    assert isinstance(batch, Batch)
    assert batch.seq == 1 and batch.names == ("p",) and batch.data == ({"n": 4096},) * 4
    assert batch.dts == (1003, 1003, 1003)
    assert batch_ts(batch.ts, batch.dts) == [f.ts for f in frames[1:]]


def test_runs_end_at_a_seq_gap_and_at_a_timestamp_the_rule_cannot_give_back() -> None:
    frames = [CDelta(1, 10.0, "p", {}), CDelta(2, 11.0, "p", {}), CDelta(4, 12.0, "p", {}),
              CDelta(5, 12.0001, "p", {}), CDelta(6, 13.5, "p", {})]  # fmt: skip
    grouped = group_batches(frames)
    assert [(type(f).__name__, f.seq) for f in grouped] == [
        ("Batch", 1), ("CDelta", 4), ("Batch", 5)
    ]  # fmt: skip


def test_names_go_as_the_cycle_they_repeat() -> None:
    def names(seq: list[str]) -> tuple[str, ...]:
        frames = [CDelta(i, 10.0 + i, name, {}) for i, name in enumerate(seq)]
        (batch,) = group_batches(frames)
        assert isinstance(batch, Batch)
        assert [f.name for f in expand_batch(batch)] == seq
        return batch.names

    assert names(["process", "system"] * 4) == ("process", "system")
    assert names(["process", "system"] * 3 + ["process"]) == ("process", "system")
    assert names(["a", "b", "c", "a", "b"]) == ("a", "b", "c")
    assert names(["a", "b", "b"]) == ("a", "b", "b")


def test_batch_is_refused_unless_negotiated_and_needs_counter() -> None:
    line = orjson.dumps(Batch(1, 1.0, (1,), ("p", "p"), ({}, {})).wire()) + b"\n"
    _, server = _pair(compress=(), ext=(COUNTER,))
    assert server.ext == (COUNTER,)
    server.receive_data(line)
    with pytest.raises(UnknownType) as err:
        server.next_event()
    assert err.value.seq == 1
    # Offered without counter (whose patches it carries), batch is not accepted.
    _, server = _pair(compress=(), ext=(BATCH,))
    assert server.ext == ()


def test_a_rejected_sample_in_a_batch_is_rejected_alone_with_its_seq() -> None:
    client, server = _pair(compress=())
    snap = Snap(0, 1.0, "p", {"n": (1 << 63) - 2})
    batch = Batch(1, 2.0, (1000, 1000), ("p", "p", "p"), ({"n": 1}, {"n": 1}, {"m": 1}))
    events = _events(server, client.send_many([snap, batch]), step=4096)
    # seq 2 would take n past int64: rejected, chain unmoved; seqs 1 and 3 stored.
    assert [type(e).__name__ for e in events] == ["Document", "Document", "BadFrame", "Document"]
    assert events[2].seq == 2
    assert events[3].seq == 3 and events[3].data == {"n": (1 << 63) - 1, "m": 1}
    assert events[3].ts == 4.0


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"dts": [1]}, "dts"),
        ({"dts": [1, 2.5]}, "dts"),
        ({"name": []}, "name"),
        ({"name": ["p"] * (MAX_BATCH_SAMPLES + 1)}, "name"),
        ({"name": ["p", "", "p"]}, "names"),
        ({"data": [{}, {}]}, "dts"),
        ({"data": [{}] * (MAX_BATCH_SAMPLES + 1)}, "data"),
        ({"name": ["p", "q", "p", "q"]}, "name"),
        ({"data": [{}, [], {}]}, "data"),
        ({"ts": 1e300}, "ts"),
        ({"dts": [10**15, 0]}, "out of range"),
    ],
)
def test_a_malformed_batch_is_bad_frame_with_its_first_seq(
    change: dict[str, Any], msg: str
) -> None:
    _, server = _pair(compress=())
    server.receive_data(orjson.dumps(Snap(0, 1.0, "p", {"n": 1}).wire()) + b"\n")
    assert server.next_event() is not NEED_DATA
    wire = {"t": "batch", "seq": 7, "ts": 2.0, "dts": [1, 1], "name": ["p"] * 3,
            "data": [{}, {}, {}], **change}  # fmt: skip
    server.receive_data(orjson.dumps(wire) + b"\n")
    with pytest.raises(BadFrame, match=msg) as err:
        server.next_event()
    assert err.value.seq == 7
    assert server.reassembler is not None and server.reassembler.last_seq == 0
