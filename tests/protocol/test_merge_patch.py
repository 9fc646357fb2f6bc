"""JSON Merge Patch: RFC 7396 Appendix A, and the diff/patch round trip."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltawire.protocol import apply_patch, json_equal, make_patch
from tests.strategies import samples

# (original, patch, result), verbatim from RFC 7396 Appendix A.
RFC7396_APPENDIX_A = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7396_APPENDIX_A)
def test_rfc7396_appendix_a(original: str, patch: str, result: str) -> None:
    target = orjson.loads(original)
    before = copy.deepcopy(target)
    assert apply_patch(target, orjson.loads(patch)) == orjson.loads(result)
    assert target == before, "apply_patch must not mutate its target"


def test_json_equal_distinguishes_number_kinds() -> None:
    assert not json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal([1], [1.0])
    assert not json_equal({"a": [True]}, {"a": [1]})
    assert json_equal({"a": [1, {"b": 2.5}]}, {"a": [1, {"b": 2.5}]})


def test_make_patch_keeps_type_changes() -> None:
    assert make_patch({"a": 1}, {"a": 1.0}) == {"a": 1.0}
    assert make_patch({"a": 1}, {"a": True}) == {"a": True}
    assert make_patch({"a": {"x": 1}}, {"a": {"x": 1}}) == {}


def test_make_patch_refuses_null_members() -> None:
    with pytest.raises(ValueError, match="null"):
        make_patch({"a": 1}, {"a": None})
    with pytest.raises(ValueError, match="null"):
        make_patch({"a": 1}, {"b": {"c": None}})


@given(samples, samples)
def test_patch_of_diff_is_target(a: dict[str, Any], b: dict[str, Any]) -> None:
    a_before, b_before = copy.deepcopy(a), copy.deepcopy(b)
    patched = apply_patch(a, make_patch(a, b))
    assert json_equal(patched, b)
    assert orjson.dumps(patched, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )
    assert a == a_before and b == b_before


@given(samples)
def test_diff_of_identical_is_empty(a: dict[str, Any]) -> None:
    assert make_patch(a, copy.deepcopy(a)) == {}


@given(st.lists(samples, min_size=1, max_size=8))
def test_chain_of_patches(chain: list[dict[str, Any]]) -> None:
    current: dict[str, Any] = {}
    for sample in chain:
        current = apply_patch(current, make_patch(current, sample))
        assert json_equal(current, sample)
