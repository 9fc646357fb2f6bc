"""The collector's inline path for ``batch`` lines (``ServerConnection.next_events``)
against the reference path (``next_event``: parse, expand, feed each ``cdelta``):
on streams of batches good and bad, fed in any chunks, both yield the same
documents and the same errors in the same order."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.protocol import ServerConnection
from deltawire.protocol.frames import (
    MAX_DATA_DEPTH,
    batch_line_within_limits,
    check_int_literals,
)
from tests.protocol.test_server_fast_path import _chunked, _fast, _reference
from tests.strategies import examples

_HELLO = (b'{"t":"hello","v":1,"session":"s-1","host":"h","tags":["a"],'
          b'"ext":["counter","batch"]}')  # fmt: skip
_INT64_MAX = (1 << 63) - 1
#: Bases for the batches' names p and q (r has none).
_SNAPS = [b'{"t":"snap","seq":0,"ts":1.7e9,"name":"p","data":{"a":1,"b":{"x":2,"y":0.5}}}',
          b'{"t":"snap","seq":1,"ts":1.7e9,"name":"q","data":{"c":{"z":%d}}}' % _INT64_MAX]  # fmt: skip

_leaf = st.one_of(
    st.integers(-5, 5000),
    st.sampled_from([7, 0.5, 1.0, None, True, "x", "}{", "{[", "}"]),
    st.sampled_from([_INT64_MAX, -(1 << 63), 1 << 63, 0.5, 1.0, None, True, "x", "}{", 'a"b', [1]]),
)
_patch = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(_leaf, st.dictionaries(st.sampled_from(["x", "y", "z"]), _leaf, max_size=3)),
    max_size=3,
)


def _deep(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = {"d": node}
    return node


@st.composite
def _line(draw: st.DrawFn, index: int) -> bytes:
    kind = draw(st.sampled_from(["batch"] * 12 + ["snap", "cdelta", "junk"]))
    seq = 10 + index * 10 if draw(st.integers(0, 5)) else draw(st.integers(-1, index * 10 + 15))
    name = draw(st.sampled_from(["p", "q", "r"]))
    if kind == "junk":
        return draw(st.sampled_from([b"{not json", b'{"t":"batch"}', b'{"t":"batch","seq":1.5}']))
    if kind == "snap":
        return orjson.dumps({"t": "snap", "seq": seq, "ts": 1.7e9, "name": name,
                             "data": draw(_patch.filter(lambda p: None not in p.values()))})  # fmt: skip
    if kind == "cdelta":
        return orjson.dumps({"t": "cdelta", "seq": seq, "ts": 1.7e9, "name": name,
                             "data": draw(_patch)})  # fmt: skip
    n = draw(st.integers(1, 4))
    data: list[Any] = draw(st.lists(_patch, min_size=n, max_size=n))
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.integers(0, n - 1))] = _deep(draw(st.sampled_from([3, 9, MAX_DATA_DEPTH + 1])))
    frame: dict[str, Any] = {
        "t": "batch", "seq": seq,
        "ts": draw(st.sampled_from([1.7e9] * 12 + [1700000000.123, 1.7e9 + 0.0004, -1.0, 7, 1e300])),
        "dts": draw(st.lists(st.sampled_from([1000] * 8 + [0, -5, 10**17]), min_size=n - 1, max_size=n - 1)),
        "name": draw(st.lists(st.sampled_from(["p"] * 5 + ["q"] * 5 + ["r", ""]), min_size=1, max_size=n)),
        "data": data,
    }  # fmt: skip
    if draw(st.integers(0, 15)) == 0:
        key = draw(st.sampled_from(sorted(frame)))
        frame[key] = draw(st.sampled_from([None, [], [1], "x", [{}] * 300]))
    return orjson.dumps(frame)


@settings(max_examples=examples(400), deadline=None)
@given(
    lines=st.integers(2, 16).flatmap(lambda n: st.tuples(*[_line(i) for i in range(n)])),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=4),
    max_errors=st.sampled_from([3, 100]),
)
def test_batch_fast_path_matches_reference(
    lines: tuple[bytes, ...], cuts: list[int], max_errors: int
) -> None:
    data = b"\n".join([_HELLO, *_SNAPS, *lines]) + b"\n"
    chunks = _chunked(data, cuts)
    assert _fast(chunks, max_errors) == _reference(chunks, max_errors)


def test_batch_line_limit_check() -> None:
    ok = orjson.dumps({"t": "batch", "data": [{"a": {"b": [1, {"c": 2}]}}], "s": "x:/"})
    assert batch_line_within_limits(ok)
    # Strings cannot hide depth: a bracket in one, or any backslash (an
    # escaped quote could shift what counts as a string), sends the line to
    # the exact checks.
    assert not batch_line_within_limits(ok.replace(b"x:/", b"}}}"))
    assert not batch_line_within_limits(ok.replace(b"x:/", b"[{"))
    deep = orjson.dumps({"t": "batch", "data": [_deep(20)]})
    assert not batch_line_within_limits(deep)
    assert not batch_line_within_limits(b'{"s":"\\"}","data":[{}]}')
    assert not batch_line_within_limits(b'{"data":[{"a":-9223372036854775809}]}')


def test_batch_fast_path_reassembles_and_rejects_one_sample() -> None:
    """A sample without a base is rejected with its own seq; the rest of its
    batch is stored, as if each had come alone."""
    lines = [_HELLO, b'{"t":"snap","seq":0,"ts":1.5e9,"name":"p","data":{"a":{"n":1,"f":0.5}}}',
             b'{"t":"batch","seq":1,"ts":1.5e9,"dts":[1,1],"name":["p","q","p"],'
             b'"data":[{"a":{"n":4095,"f":1}},{"a":{"n":1}},{"a":{"n":-6}}]}']  # fmt: skip
    conn, events, errors = ServerConnection(), [], []
    conn.receive_data(b"\n".join(lines) + b"\n")
    while True:
        try:
            conn.next_events(events)
            break
        except Exception as exc:
            errors.append((exc.code, exc.seq))  # type: ignore[attr-defined]
    docs = events[1:]
    assert [(d.seq, d.ts, d.data) for d in docs] == [
        (0, 1.5e9, {"a": {"n": 1, "f": 0.5}}),
        (1, 1.5e9, {"a": {"n": 4096, "f": 1}}),
        (3, 1500000000.002, {"a": {"n": 4090, "f": 1}}),
    ]
    assert errors == [("no_base", 2)]


_json = st.recursive(
    st.one_of(st.integers(-(1 << 63), (1 << 64) - 1), st.floats(allow_nan=False), st.booleans(),
              st.none(), st.text(alphabet='ab{}[]"\\:/', max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(alphabet='ab{}[]"', max_size=3), inner,
                                            max_size=3)),
    max_leaves=40,
)  # fmt: skip


def _depth(value: Any) -> int:
    if type(value) is dict:
        return 1 + max(map(_depth, value.values()), default=0)
    if type(value) is list:
        return 1 + max(map(_depth, value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.one_of(_json, st.builds(_deep, st.integers(1, MAX_DATA_DEPTH + 2))),
                     min_size=1, max_size=4),
       extra=_json)  # fmt: skip
def test_batch_line_check_never_passes_a_line_over_a_limit(data: list[Any], extra: Any) -> None:
    """Whatever strings and nesting a line holds, a line the quick check
    passes is one the exact checks (the reference parser, the integer
    literals) accept."""
    frame = {"t": "batch", "seq": 1, "ts": 1.7e9, "dts": [1] * (len(data) - 1), "name": ["p"],
             "data": [x if type(x) is dict else {"v": x} for x in data], "x": extra}  # fmt: skip
    line = orjson.dumps(frame)
    if batch_line_within_limits(line):
        assert _depth(frame) <= MAX_DATA_DEPTH
        check_int_literals(line, None)  # raises BadFrame for one outside int64
