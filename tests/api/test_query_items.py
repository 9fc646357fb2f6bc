"""``params.query_items``: a query string's pairs exactly as Starlette's
``QueryParams`` (``parse_qsl`` of the latin-1 text, blanks kept) gives them,
for every string: the fast split is only taken where nothing is escaped."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from deltawire.collector.api.params import query_items

# The characters that matter to the split and the unquoting, and some others.
_ALPHABET = b"a=&%+2=b1&\xe9 x"
_QUERY = st.binary(max_size=60).map(
    lambda raw: bytes(_ALPHABET[byte % len(_ALPHABET)] for byte in raw)
) | st.binary(max_size=60)


@given(_QUERY)
def test_the_same_pairs_as_starlette_and_parse_qsl(query: bytes) -> None:
    text = query.decode("latin-1")
    assert query_items(query) == parse_qsl(text, keep_blank_values=True)
    assert query_items(query) == QueryParams(query).multi_items()


def test_the_edges_of_the_split() -> None:
    assert query_items(b"") == []
    assert query_items(b"a=1&&b=2") == [("a", "1"), ("b", "2")]  # empty pieces skipped
    assert query_items(b"=") == [("", "")]
    assert query_items(b"=x&y&z=") == [("", "x"), ("y", ""), ("z", "")]
    assert query_items(b"a=1=2") == [("a", "1=2")]
    assert query_items(b"from=2026-01-01T00%3A00%3A00Z&tag=a+b") == [
        ("from", "2026-01-01T00:00:00Z"),
        ("tag", "a b"),
    ]
