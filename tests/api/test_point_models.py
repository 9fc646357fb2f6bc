"""The point models' store form passes ``check_fields`` untouched: a store
takes ``CheckedFields`` (what ``store_fields`` returns) without checking them
again, which is sound only if every body a model accepts gives fields the
store's rules accept and leave as they are."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from deltawire.collector.api.body import validate
from deltawire.collector.api.errors import ApiError
from deltawire.collector.point import CheckedFields, check_fields
from deltawire.collector.point_models import PointBody, PointCreate
from tests.strategies import examples, json_values

# Mostly valid fields (so that most bodies pass and reach the store rules),
# with the edges and wrong types each rule has to answer.
_texts = st.text(min_size=1, max_size=3) | st.sampled_from(["", "x" * 256, "x" * 257])
_odd = st.booleans() | st.none() | st.text(max_size=3) | st.integers(-(2**64), 2**64) | st.floats()
_numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
_bodies = st.fixed_dictionaries(
    {"name": _texts},
    optional={
        "value": _numbers | _odd,
        "tags": st.lists(_texts, max_size=4) | st.lists(_odd, max_size=2),
        "timestamp": st.floats(0, 4e9) | st.sampled_from(["2026-01-02T03:04:05Z", "1e3"]) | _odd,
        "host": _texts | st.none(),
        "data": st.dictionaries(st.text(max_size=3), json_values, max_size=4) | json_values,
    },
)


@settings(max_examples=examples(300), deadline=None)
@given(
    body=_bodies,
    model=st.sampled_from([PointBody, PointCreate]),
    now=st.floats(0, 4e9) | st.integers(0, 4_000_000_000),
)
def test_what_a_model_accepts_the_store_rules_accept_unchanged(
    body: dict[str, Any], model: type[PointBody], now: float
) -> None:
    try:
        fields = validate(model, body).store_fields(now)
    except ApiError:
        return
    assert type(fields) is CheckedFields
    plain = dict(fields)  # a plain dict goes through every rule
    checked = check_fields(plain)
    assert checked == plain
    assert [type(v) for v in checked.values()] == [type(v) for v in plain.values()]
    assert check_fields(fields) is fields
