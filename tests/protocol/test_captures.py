"""Golden captures: each tests/captures/*.ndjson gives its *.expected.json, fed
whole, byte by byte, and in odd-sized chunks."""

from __future__ import annotations

import pathlib

import orjson
import pytest

from tests.captures.regen import outcomes

CAPTURES = sorted((pathlib.Path(__file__).parents[1] / "captures").glob("*.ndjson"))


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.stem)
@pytest.mark.parametrize("step", [None, 1, 7, 4096])
def test_capture_matches_golden(capture: pathlib.Path, step: int | None) -> None:
    expected = orjson.loads(capture.with_suffix(".expected.json").read_bytes())
    assert outcomes(capture.read_bytes(), step=step) == expected


def test_there_are_captures() -> None:
    assert len(CAPTURES) >= 4
