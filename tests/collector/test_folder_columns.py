"""The folder's packed columns keep every value and its type (ints stay ints)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
