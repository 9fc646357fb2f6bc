"""Bounded fuzzing of the collector's decoder and reassembler (issue 11).

Hostile byte streams (random bytes, frames with wrong, huge, deep or
non-finite fields, truncated and bit-flipped lines, cut at random points)
go into ``ServerConnection``. For every input:

- only ``ProtocolError`` ever comes out, never another exception;
- a fatal error sticks; after a non-fatal one the connection goes on;
- what comes out honours the protocol's limits: documents in strictly
  increasing seq, data at most 64 levels deep, integers within int64, and
  data the stores can serialise (orjson writes it back);
- ``next_event`` and ``next_events`` (the bulk path) agree exactly.

``make test`` runs a few hundred examples per property (seconds);
``make fuzz`` sets ``FUZZ_EXAMPLES`` far higher and adds a coverage-guided
run (``python -m bench.fuzz``).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltawire.protocol import ProtocolError
from deltawire.protocol.frames import INT64_MAX, INT64_MIN, MAX_DATA_DEPTH
from deltawire.testing.fuzzing import check_documents, outcomes
from tests.strategies import examples

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=examples(EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_ints = (
    st.integers()
    | st.integers(INT64_MIN - 2, INT64_MIN + 2)
    | st.integers(INT64_MAX - 2, 2**64 + 2)
)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_scalars = st.none() | st.booleans() | _ints | _floats | st.text(max_size=8)


def _deep(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


_values = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=10,
) | st.integers(MAX_DATA_DEPTH - 2, MAX_DATA_DEPTH + 3).map(_deep) | st.sampled_from([
    _deep(250), _deep(900),
])  # fmt: skip

_names = st.sampled_from(["p", "q", "", "x" * 300]) | st.text(max_size=5)


@st.composite
def _frame(draw: st.DrawFn) -> dict[str, Any]:
    t = draw(
        st.sampled_from(["snap", "delta", "delta", "event", "bye", "hello", "nope"]) | _scalars
    )
    frame: dict[str, Any] = {"t": t}
    if draw(st.booleans()) or t != "hello":
        frame["seq"] = draw(st.integers(-1, 40) | _ints | _scalars)
    frame["ts"] = draw(st.floats(0, 2e9) | _scalars)
    frame["name"] = draw(_names | _scalars)
    frame["data"] = draw(st.dictionaries(st.text(max_size=3), _values, max_size=4) | _values)
    if t == "hello":
        frame.update(
            v=draw(st.sampled_from([1, 2, "1"])), session=draw(st.sampled_from(["s", "", "a b"]))
        )
        frame["tags"] = draw(st.lists(st.text(max_size=200), max_size=70) | _scalars)
        frame["host"] = draw(st.text(max_size=300) | _scalars)
    return frame


def _line(frame: dict[str, Any]) -> bytes:
    # The standard library writes any int and NaN/Infinity, as a hostile peer may.
    return json.dumps(frame, allow_nan=True).encode()


@st.composite
def _stream(draw: st.DrawFn) -> bytes:
    hello = b'{"t":"hello","v":1,"session":"fz"}' if draw(st.booleans()) else b""
    parts = [hello]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            parts.append(draw(st.binary(max_size=64)))
        else:
            line = _line(draw(_frame()))
            if kind == 1 and line:  # truncate or flip a byte
                cut = draw(st.integers(0, len(line) - 1))
                line = line[:cut] + bytes([draw(st.integers(0, 255))]) + line[cut + 1 :]
            parts.append(line)
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    return sep.join(parts) + sep


def _run(wire: bytes, cuts: list[int], *, bulk: bool) -> list[Any]:
    """The outcomes of ``wire`` fed in pieces; errors as (code, fatal, seq)."""
    bounds = [0, *sorted(cuts), len(wire)]
    pieces = [wire[a:b] for a, b in itertools.pairwise(bounds)]
    out = outcomes(pieces, bulk=bulk)
    return [(e.code, e.fatal, e.seq) if isinstance(e, ProtocolError) else e for e in out]


@FUZZ
@given(_stream(), st.lists(st.integers(0, 4000), max_size=6))
def test_connection_survives_hostile_streams(wire: bytes, cuts: list[int]) -> None:
    one = _run(wire, cuts, bulk=False)
    check_documents(one)
    assert _run(wire, cuts, bulk=True) == one


@FUZZ
@given(st.binary(max_size=512), st.lists(st.integers(0, 512), max_size=4))
def test_connection_survives_random_bytes(wire: bytes, cuts: list[int]) -> None:
    for prefix in (b"", b'{"t":"hello","v":1,"session":"r"}\n'):
        one = _run(prefix + wire, cuts, bulk=False)
        check_documents(one)
        assert _run(prefix + wire, cuts, bulk=True) == one
