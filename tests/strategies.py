"""Hypothesis strategies for samples: every JSON kind but null members."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import strategies as st

__all__ = ["MAX_EXAMPLES", "PROFILE", "examples", "json_values", "names", "samples", "timestamps"]

#: The hypothesis profile tests/conftest.py loads: "deltawire" in `make test`;
#: `make fuzz` and `make soak` set "thorough".
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "deltawire")
#: `make test` runs each property with at most this many examples: the rule is
#: checked on every run, the long search is `make fuzz`'s, and a failure found
#: there stays in the example database.
MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "50"))


def examples(count: int, at_most: int = MAX_EXAMPLES) -> int:
    """What a test asking for ``count`` examples runs: ``count`` under the
    thorough profile, at most ``MAX_EXAMPLES`` (or a test's own lower
    ``at_most``: a slow backend) otherwise. Pass it to
    ``settings(max_examples=...)``: an explicit setting wins over any profile."""
    return count if PROFILE != "deltawire" else min(count, MAX_EXAMPLES, at_most)


_keys = st.text(min_size=0, max_size=8)  # unicode, including the empty key
_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Arrays are replaced whole by a merge patch, so they may hold anything,
    # null included; objects may not hold null members.
    return st.lists(children | st.none(), max_size=4) | st.dictionaries(_keys, children, max_size=4)


json_values: st.SearchStrategy[Any] = st.recursive(_scalars, _extend, max_leaves=12)
samples: st.SearchStrategy[dict[str, Any]] = st.dictionaries(_keys, json_values, max_size=6)
names = st.sampled_from(["process", "system", "cpu", "ünïcode", "a.b"])
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(0, 4_000_000_000)
