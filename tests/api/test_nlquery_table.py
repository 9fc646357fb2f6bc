"""The tuning table: every natural prompt of nl_prompts.py is understood as written there."""

from __future__ import annotations

from typing import Any

import pytest

from deltawire.collector.api.nl_vocab import Vocabulary
from deltawire.testing import nl_dataset

from .nl_prompts import PROMPTS

VOCAB = Vocabulary(nl_dataset.catalog())


@pytest.mark.parametrize(("prompt", "expect"), PROMPTS, ids=[p for p, _ in PROMPTS])
def test_prompt(prompt: str, expect: dict[str, Any]) -> None:
    problem = nl_dataset.check(prompt, expect, VOCAB)
    assert problem is None, problem


def test_table_is_large() -> None:
    assert len(PROMPTS) >= 150
