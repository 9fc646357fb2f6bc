"""Negotiated zstd stream compression, both sans-IO sides, without sockets.

The client and server connections are wired back to back; bytes cross in
pieces of every size down to one byte, as TCP may deliver them.
"""

from __future__ import annotations

import functools
import tracemalloc
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.protocol import (
    EXTENSIONS,
    MAX_INFLATE_PER_READ,
    MAX_SLICE_INFLATE,
    NEED_DATA,
    Ack,
    BadStream,
    Batch,
    Bye,
    ClientConnection,
    Deflater,
    DeltaEncoder,
    Document,
    FrameTooLarge,
    Hello,
    LocalProtocolError,
    ProtocolError,
    ServerConnection,
    Snap,
    Welcome,
    group_batches,
)
from deltawire.protocol.codec import MIN_INFLATE_PER_READ
from deltawire.protocol.stream import Inflater
from tests.strategies import examples

SAMPLES = [{"cpu": {"user": 1.25 + i / 8}, "io": {"read": 4096 * i}, "n": i} for i in range(60)]


def _pieces(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)] or [b""]


def _events(conn: ServerConnection | ClientConnection, data: bytes, step: int) -> list[Any]:
    """Feed ``data`` in pieces of ``step`` bytes; every event taken after each."""
    out: list[Any] = []
    for piece in _pieces(data, step):
        conn.receive_data(piece)
        while (event := conn.next_event()) is not NEED_DATA:
            out.append(event)
    return out


def _session(step: int, offer: tuple[str, ...], accept: tuple[str, ...]) -> dict[str, Any]:
    """One whole conversation; returns what each side saw and the bytes."""
    tapped = bytearray()
    server = ServerConnection(compress=accept, tap=tapped.extend)
    client = ClientConnection()
    hello_bytes = client.send(Hello(session="s1", compress=offer))
    with pytest.raises(LocalProtocolError) if offer else _null():
        client.send(Snap(0, 1.0, "p", {}))  # nothing before the welcome when offering
    (hello,) = _events(server, hello_bytes, step)
    assert isinstance(hello, Hello)
    to_client = server.send(server.welcome(-1))
    welcome, = _events(client, to_client, step)  # fmt: skip
    enc = DeltaEncoder(keyframe_every=25)
    frames = [enc.encode(i, 1000.0 + i, "p", s) for i, s in enumerate(SAMPLES)]
    up = client.send_many(frames[:30]) + client.send_many(frames[30:]) + client.send(Bye(60, 2e3))
    docs = _events(server, up, step)
    down = server.send(Ack(29)) + server.send(Ack(60))
    acks = _events(client, down, step)
    return {"welcome": welcome, "docs": docs, "acks": acks, "up": up, "down": down,
            "hello": hello_bytes, "to_client": to_client, "client": client, "server": server,
            "tapped": bytes(tapped)}  # fmt: skip


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("step", [1, 5, 1 << 20])
def test_compressed_session_reassembles_exactly(step: int) -> None:
    s = _session(step, ("zstd",), ("zstd",))
    plain = _session(1 << 20, (), ("zstd",))
    assert s["server"].codec == s["client"].codec == "zstd"
    assert s["welcome"] == Welcome("s1", -1, compress="zstd", negotiated=True)
    docs: list[Document] = s["docs"]
    assert [d.data for d in docs[:-1]] == SAMPLES
    assert docs == plain["docs"]
    assert s["acks"] == [Ack(29), Ack(60)] == plain["acks"]
    # Both directions really are zstd after the welcome line, and smaller.
    assert s["up"][:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic
    assert s["down"][:4] == b"\x28\xb5\x2f\xfd"
    assert len(s["up"]) * 3 < len(plain["up"])
    # A capture gets the decompressed lines, exactly what a plain client sends.
    assert s["tapped"] == s["hello"] + plain["up"]


def test_welcome_line_is_plain_and_answers_the_offer() -> None:
    s = _session(1 << 20, ("zstd",), ("zstd",))
    line, rest = s["to_client"].split(b"\n", 1)
    assert orjson.loads(line) == {"t": "welcome", "v": 1, "session": "s1", "acked": -1,
                                  "compress": "zstd"}  # fmt: skip
    assert rest == b""


def test_a_client_that_offers_nothing_is_unaffected() -> None:
    s = _session(3, (), ("zstd",))
    # Exactly v1's welcome: no compress field at all.
    assert orjson.loads(s["to_client"]) == {"t": "welcome", "v": 1, "session": "s1", "acked": -1}
    assert s["client"].codec is None and s["server"].codec is None
    assert all(orjson.loads(x) for x in s["up"].splitlines())  # plain NDJSON


def test_a_collector_that_declines_says_null_and_stays_plain() -> None:
    s = _session(7, ("zstd",), ())
    assert orjson.loads(s["to_client"]) == {"t": "welcome", "v": 1, "session": "s1", "acked": -1,
                                            "compress": None}  # fmt: skip
    assert s["client"].codec is None
    assert [d.data for d in s["docs"][:-1]] == SAMPLES
    assert all(orjson.loads(x) for x in s["up"].splitlines())


def test_unknown_codecs_are_skipped_in_order_of_preference() -> None:
    server = ServerConnection()
    server.receive_data(b'{"t":"hello","v":1,"session":"s","compress":["brotli","zstd"]}\n')
    assert isinstance(server.next_event(), Hello)
    assert server.codec == "zstd"


def _open_zstd_server(**kw: Any) -> ServerConnection:
    server = ServerConnection(**kw)
    server.receive_data(b'{"t":"hello","v":1,"session":"s","compress":["zstd"]}\n')
    assert isinstance(server.next_event(), Hello)
    return server


def _zstd(data: bytes, window_log: int = 16) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return obj.compress(data) + obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


def test_a_window_over_the_cap_is_refused() -> None:
    server = _open_zstd_server()
    server.receive_data(_zstd(b'{"t":"event","seq":1,"ts":1,"name":"e"}\n', window_log=20))
    with pytest.raises(BadStream) as info:
        server.next_event()
    assert info.value.fatal and info.value.code == "bad_stream"


def test_garbage_after_a_negotiated_hello_is_a_bad_stream() -> None:
    server = _open_zstd_server()
    server.receive_data(b'{"t":"event","seq":1,"ts":1,"name":"e"}\n')
    with pytest.raises(BadStream):
        server.next_events([])


def test_a_zstd_bomb_is_refused_with_bounded_memory() -> None:
    bomb = _zstd(b"\n" * (256 << 20))  # 256 MiB of blank lines in a few KiB
    assert len(bomb) < 64 << 10
    server = _open_zstd_server()
    server.receive_data(bomb)
    assert server.buffered <= MAX_INFLATE_PER_READ
    with pytest.raises(BadStream):
        server.next_events([])
    with pytest.raises(BadStream):  # and it stays refused
        server.next_events([])


@pytest.mark.parametrize("unit", [b"\n", b" \r\n", b"{}\n", b"x\n"])
def test_a_bomb_of_short_lines_is_refused_without_a_line_object_each(unit: bytes) -> None:
    """256 MiB of 1-3 byte lines in 16 KiB: refused once one read inflates
    past its cap; blank lines are dropped in C, the rest split in bounded
    pieces (each bad line is an error, 100 end it), so what is allocated
    stays bounded, never a line object for each of millions of lines."""
    bomb = _zstd(unit * ((256 << 20) // len(unit)))
    server = _open_zstd_server()
    tracemalloc.start()
    try:
        server.receive_data(bomb)
        errors = []
        for _ in range(200):
            try:
                server.next_events([])
                break
            except ProtocolError as exc:
                errors.append(exc.code)
                if exc.fatal:
                    break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert errors and errors[-1] in ("bad_stream", "too_many_errors"), errors[-3:]
    # Split whole, the ~1-3 MiB inflated before the refusal would be 0.3-1M
    # line objects of ~100 bytes; in 64 KiB pieces, one piece's worth.
    assert peak < 16 << 20, peak


def test_a_read_of_many_lines_is_split_in_pieces_and_all_taken() -> None:
    """More than one piece of complete lines (and more than the frame limit
    in total) behind a read: every line is taken in one call."""
    server = ServerConnection(max_frame_bytes=4096)
    server.receive_data(orjson.dumps(Hello(session="s").wire()) + b"\n")
    assert isinstance(server.next_event(), Hello)
    lines = [orjson.dumps({"t": "event", "seq": i, "ts": 1.0, "name": "e", "data": {"i": i}})
             for i in range(30_000)]  # fmt: skip
    server.receive_data(b"\n".join(lines) + b"\n\n\n" + b"\n" * 100_000)
    docs: list[Any] = []
    server.next_events(docs)
    assert [d.seq for d in docs] == list(range(30_000))


def test_a_line_past_the_limit_without_newline_is_refused_early() -> None:
    server = _open_zstd_server(max_frame_bytes=1000)
    good = b'{"t":"event","seq":1,"ts":1,"name":"e"}\n'
    server.receive_data(_zstd(good + b"x" * (4 << 20)))
    assert server.buffered <= 1000 + 1 + MAX_SLICE_INFLATE  # the limit + one slice's output
    events: list[Any] = []
    with pytest.raises(FrameTooLarge):
        server.next_events(events)
    assert [e.seq for e in events] == [1]  # the complete line before it got through


@settings(max_examples=examples(30), deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40))
def test_any_split_of_the_stream_gives_the_same_documents(cuts: list[int]) -> None:
    client = ClientConnection()
    server = ServerConnection()
    server.receive_data(client.send(Hello(session="s", compress=("zstd",))))
    assert isinstance(server.next_event(), Hello)
    _events(client, server.send(server.welcome(-1)), 1 << 20)
    enc = DeltaEncoder()
    up = b"".join(client.send(enc.encode(i, 1.0 + i, "p", s)) for i, s in enumerate(SAMPLES[:20]))
    docs: list[Any] = []
    pos = 0
    for cut in [*cuts, len(up)]:
        server.receive_data(up[pos : pos + cut])
        pos += cut
        try:
            server.next_events(docs)
        except ProtocolError as exc:  # pragma: no cover - would be a bug
            raise AssertionError(exc) from None
    assert [d.data for d in docs] == SAMPLES[:20]


def test_a_big_read_is_inflated_to_the_last_byte() -> None:
    """Many flushed pushes in one read inflate past the decompressor's output
    buffer: the end of the last block must come out now, not at the next read
    (which, for a client waiting for its ack, never comes)."""
    client = ClientConnection()
    server = ServerConnection()
    server.receive_data(client.send(Hello(session="s", compress=("zstd",))))
    assert isinstance(server.next_event(), Hello)
    _events(client, server.send(server.welcome(-1)), 1 << 20)
    enc = DeltaEncoder()
    n = 3000
    up = b"".join(
        client.send_many([enc.encode(i + k, 1.0, "p", SAMPLES[(i + k) % 60]) for k in range(50)])
        for i in range(0, n, 50)
    )
    server.receive_data(up)
    docs: list[Any] = []
    server.next_events(docs)
    assert len(docs) == n and docs[-1].seq == n - 1


class _Refuse(Exception):
    pass


@functools.cache
def _bomb_after(lead: int, unit: bytes) -> bytes:
    """``lead`` real lines, then 16 MiB of ``unit`` (past any budget drawn below)."""
    real = b"".join(orjson.dumps({"n": i, "s": str(i) * (i % 7)}) + b"\n" for i in range(lead))
    return _zstd(real + unit * ((16 << 20) // len(unit)))


@settings(max_examples=examples(40), deadline=None)
@given(
    budget=st.integers(0, 8 << 20),
    lead=st.sampled_from([0, 3000]),
    unit=st.sampled_from([b"\n", b"x", b"ab\n"]),
)
def test_wide_slices_never_let_a_bomb_past_its_budget(budget: int, lead: int, unit: bytes) -> None:
    """However much the caller still accepts, and whatever real data comes
    first, a bomb's output stops within one narrow slice's worst case of the
    budget: slices are only wide while the budget covers their worst case."""
    _assert_stops_within(_bomb_after(lead, unit), budget)


def _assert_stops_within(bomb: bytes, budget: int) -> None:
    """A sink that refuses past ``budget`` stops ``bomb`` within one narrow slice of it."""
    seen = 0

    def sink(out: bytes) -> None:
        nonlocal seen
        seen += len(out)
        if seen > budget:
            raise _Refuse

    with pytest.raises(_Refuse):
        Inflater().feed(bomb, sink, budget)
    assert seen <= budget + MAX_SLICE_INFLATE


def test_a_full_read_inflates_exactly_with_its_budget() -> None:
    """Wide slices cut the stream anywhere: the output is the input, exactly."""
    lines = b"".join(
        orjson.dumps({"t": "event", "seq": i, "ts": 1.0, "name": "e", "data": SAMPLES[i % 60]})
        + b"\n"
        for i in range(20_000)
    )
    wire = _zstd(lines)
    calls: list[int] = []
    Inflater().feed(wire, lambda out: calls.append(len(out)), 64 * len(wire))
    assert sum(calls) == len(lines)


BATCH_OF = 50  # samples a batch line carries here (the bench's pushes)


@pytest.mark.parametrize("batched", [False, True], ids=["deltas", "batches"])
def test_a_big_read_can_be_taken_in_runs(batched: bool) -> None:
    """``next_events(out, limit)`` stops after the piece (or the batch line)
    that reached the limit and carries on at the next call: the same
    documents, in order, as one call, in runs a caller can hand on between
    checkpoints. Runs of batches stop at the line that reached the limit,
    not at the end of a 64 KiB piece (~770 samples of batches: 3x a piece
    of deltas)."""
    client = ClientConnection()
    hello_bytes = client.send(
        Hello(session="s1", compress=("zstd",), ext=EXTENSIONS if batched else ())
    )
    enc = DeltaEncoder(keyframe_every=25, counter=batched)
    # A process's steady part (the patches are deltas, not snaps) beside its counters.
    steady = {"cmdline": "x" * 200, "name": "worker"}
    frames = [enc.encode(i, 1000.0 + i, "p", {**SAMPLES[i % 60], **steady}) for i in range(6000)]

    def server() -> ServerConnection:
        conn = ServerConnection()
        conn.receive_data(hello_bytes)
        assert isinstance(conn.next_event(), Hello)
        return conn

    whole, runs = server(), server()
    client.receive_data(whole.send(whole.welcome(-1)))
    while client.next_event() is not NEED_DATA:
        pass
    up = b"".join(
        client.send_many(
            group_batches(frames[i : i + BATCH_OF]) if batched else frames[i : i + 3000]
        )
        for i in range(0, 6000, BATCH_OF if batched else 3000)
    )
    for i in range(0, len(up), 2048):  # reads a collector may get (batches inflate ~100x)
        whole.receive_data(up[i : i + 2048])
        runs.receive_data(up[i : i + 2048])
    everything: list[Any] = []
    whole.next_events(everything)
    taken: list[list[Any]] = []
    while True:
        run: list[Any] = []
        runs.next_events(run, 500)
        if not run:
            break
        taken.append(run)
    assert [d.seq for d in everything] == list(range(6000))
    assert [d for r in taken for d in r] == everything
    assert len(taken) > 2 and all(len(r) >= 500 for r in taken[:-1])
    if batched:
        assert sum(type(f) is Batch for f in group_batches(frames)) > 100
        assert all(len(r) < 500 + BATCH_OF for r in taken), [len(r) for r in taken]


class _Calls:
    """The inflater's decompressor, counting its calls (the real one does the work)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.count = 0

    def decompress(self, data: memoryview) -> bytes:
        self.count += 1
        return self.obj.decompress(data)  # type: ignore[no-any-return]


def _counted() -> tuple[Inflater, _Calls]:
    inflater = Inflater()
    calls = _Calls(inflater._obj)
    inflater._obj = calls  # type: ignore[assignment]
    return inflater, calls


def _pushes(count: int, per_push: int = 50) -> tuple[bytes, bytes]:
    """An agent's stream: ``count`` block-flushed pushes (the plain lines, the wire)."""
    deflater = Deflater()
    lines, wire = [], []
    for p in range(count):
        chunk = b"".join(
            orjson.dumps({"t": "event", "seq": i, "ts": 1.0, "name": "e", "data": SAMPLES[i % 60]})
            + b"\n"
            for i in range(p * per_push, (p + 1) * per_push)
        )
        lines.append(chunk)
        wire.append(deflater.compress(chunk))
    return b"".join(lines), b"".join(wire)


def test_a_small_read_of_whole_blocks_is_one_decompress_call() -> None:
    """A read of a few pushes (what each of 1,000 sessions sends) goes to
    zstd whole: its blocks' headers bound what it inflates to. Sliced
    narrowly it took one call per 16 bytes (~1.5-2 us a sample)."""
    lines, wire = _pushes(4)
    inflater, calls = _counted()
    out = bytearray()
    inflater.feed(wire, out.extend, MIN_INFLATE_PER_READ)
    assert out == lines
    assert calls.count == 1, (calls.count, len(wire))


@settings(max_examples=examples(40), deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=30),
    budget=st.sampled_from([0, 1000, 200_000, MIN_INFLATE_PER_READ, 4 << 20]),
    big=st.booleans(),
)
def test_runs_of_whole_blocks_stay_within_the_budget(
    cuts: list[int], budget: int, big: bool
) -> None:
    """Cut anywhere (mid-header, mid-block), a sink that refuses past its
    budget sees at most one narrow slice more, and a stream the budget
    covers comes out exactly; pushes past the window make multi-block pushes."""
    lines, wire = _pushes(12, 600 if big else 20)
    inflater = Inflater()
    out = bytearray()
    pos = 0
    for cut in [*cuts, len(wire)]:
        fed = bytearray()

        def sink(piece: bytes, fed: bytearray = fed) -> None:
            fed.extend(piece)
            if len(fed) > budget:
                raise _Refuse

        try:
            inflater.feed(wire[pos : pos + cut], sink, budget)
        except _Refuse:
            assert len(fed) <= budget + MAX_SLICE_INFLATE
            return  # refused: the stream ends here, as a collector's would
        out += fed
        pos += cut
        if pos >= len(wire):
            break
    assert out == lines


def _rle_bomb(blocks: int, size: int = 1 << 16) -> bytes:
    """A frame (window 2^16) of RLE blocks: 4 bytes of input each, ``size`` out."""
    header = b"\x28\xb5\x2f\xfd\x00" + bytes([(16 - 10) << 3])
    block = ((size << 3) | (1 << 1)).to_bytes(3, "little") + b"\n"
    return header + block * blocks


@settings(max_examples=examples(30), deadline=None)
@given(budget=st.integers(0, 8 << 20), raw_lead=st.integers(0, 40))
def test_an_rle_bomb_stops_within_its_budget(budget: int, raw_lead: int) -> None:
    """RLE blocks inflate most per input byte: read whole by their headers,
    the bomb still stops within one narrow slice of the budget."""
    lead = b"".join((1000 << 3).to_bytes(3, "little") + b"x" * 999 + b"\n" for _ in range(raw_lead))
    bomb = _rle_bomb(4096)
    _assert_stops_within(bomb[:6] + lead + bomb[6:], budget)


def test_an_rle_block_past_the_block_maximum_is_a_bad_stream() -> None:
    """A header may declare 2 MiB for one RLE block: zstd refuses it (the
    block maximum), so the bound read from headers is never exceeded."""
    seen: list[int] = []
    with pytest.raises(BadStream):
        Inflater().feed(_rle_bomb(8, (1 << 21) - 1), lambda out: seen.append(len(out)), 64 << 20)
    assert sum(seen) <= 1 << 17
