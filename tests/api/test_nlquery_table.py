"""The tuning table: every natural prompt of nl_prompts.py is understood as written there."""

from __future__ import annotations

from typing import Any

import pytest

from deltawire.collector.api.nl_vocab import Vocabulary
from deltawire.collector.api.nlquery import Plan, PromptError, parse_prompt
from deltawire.testing import nl_dataset

from .nl_prompts import ANY, PROMPTS

VOCAB = Vocabulary(nl_dataset.catalog())


def check(prompt: str, expect: dict[str, Any]) -> str | None:
    """None if ``prompt`` is understood as ``expect``, else what differs."""
    try:
        plan = parse_prompt(prompt, nl_dataset.NOW, VOCAB)
    except PromptError as e:
        if expect.get("status") == 422:
            want = expect.get("suggest")
            return None if want is None or want in e.suggestions else f"suggested {e.suggestions}"
        return f"422: {e.reason}"
    if expect.get("status") == 422:
        return f"200: {plan.interpreted()}"
    return compare(plan, expect)


def compare(plan: Plan, expect: dict[str, Any]) -> str | None:
    got = dict(plan.params, endpoint=plan.endpoint, answer=plan.answer)
    if plan.project is not None:
        got.setdefault("field", plan.project)
    if plan.names and "name" not in got:
        got["name"] = list(plan.names)
    for key, want in expect.items():
        if key == "status":
            continue
        have = got.get(key)
        if want == ANY and have is not None:
            continue
        if have != want:
            return f"{key}: {have!r} != {want!r} in {plan.interpreted()}"
    return None


@pytest.mark.parametrize(("prompt", "expect"), PROMPTS, ids=[p for p, _ in PROMPTS])
def test_prompt(prompt: str, expect: dict[str, Any]) -> None:
    problem = check(prompt, expect)
    assert problem is None, problem


def test_table_is_large() -> None:
    assert len(PROMPTS) >= 150
