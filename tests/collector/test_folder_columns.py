"""The folder's packed columns keep every value and its type (ints stay ints),
and what it computes from them with numpy equals what Python computes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.stores import rollup_vals
from deltawire.collector.stores.rollup import Sketch
from deltawire.collector.stores.sqlite_rollup import _joined, _packed

numbers = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**70), 2**70),  # past 64 bits: kept as a list
    st.floats(allow_nan=False, allow_infinity=False),
)
columns = st.one_of(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=30),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30),
    st.lists(numbers, min_size=1, max_size=30),
)


def _typed(values: object) -> list[tuple[type, float]]:
    return [(type(v), v) for v in values]  # type: ignore[attr-defined]


@given(columns)
def test_packed_keeps_values_and_types(vals: list[float]) -> None:
    assert _typed(_packed(vals)) == _typed(vals)


@given(st.lists(st.tuples(st.lists(st.floats(0, 100), min_size=1, max_size=10), columns),
                min_size=1, max_size=4))  # fmt: skip
def test_joined_is_the_slices_in_ts_order(slices: list[tuple[list[float], list[float]]]) -> None:
    chunks = []
    expected = []
    for tss, vals in slices:
        n = min(len(tss), len(vals))
        tss, vals = sorted(tss[:n]), vals[:n]  # a slice is in (ts, id) order
        chunks.append((_packed(tss), _packed(vals)))
        expected += zip(tss, vals, strict=True)
    expected.sort(key=lambda tv: tv[0])  # stable: id order among equal ts
    tss, vals = _joined(chunks)  # type: ignore[arg-type]
    assert list(tss) == [t for t, _ in expected]
    assert _typed(vals) == _typed(v for _, v in expected)


# The folder's numpy paths give what the Python ones give, bit for bit.
floats = st.floats(-1e12, 1e12, allow_nan=False).map(lambda f: round(f, 3)) | st.sampled_from(
    [0.0, -0.0, 1.0, 2.0**-30, 2.0**40, 5e-324]
)
ints = st.integers(-(2**63), 2**63 - 1) | st.integers(-1000, 1000)
one_kind = st.lists(floats, min_size=1, max_size=80) | st.lists(ints, min_size=1, max_size=80)


@given(one_kind, one_kind)
def test_stored_values_merged_by_numpy_as_by_python(stored: list[float], new: list[float]) -> None:
    blob = rollup_vals.pack(stored)
    if blob is not None:
        more = _packed(new)
        assert rollup_vals._pack_more(blob, more) == rollup_vals.pack(
            [*rollup_vals.values(blob), *new]
        )


@given(one_kind)
def test_a_sketch_of_an_array_as_of_a_list(values: list[float]) -> None:
    by_list, by_array = Sketch(), Sketch()
    by_list.add_values(values)
    by_array.add_values(_packed(values))
    assert by_array.to_bytes() == by_list.to_bytes()
