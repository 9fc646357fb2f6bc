"""bench.api without its servers: how the DELETE runs share the seed's ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench import api


@given(count=st.integers(0, 300_000), seconds=st.floats(0.5, 30))
def test_delete_runs_get_disjoint_even_shares(count: int, seconds: float) -> None:
    ids = [str(i) for i in range(count)]
    runs = api._runs("delete")
    shares = [api._delete_share(ids, runs, n, seconds) for n in range(len(runs))]
    taken = [i for share in shares for i in share]
    assert len(taken) == len(set(taken))  # no id deleted twice
    assert all(len(share) % 2 == 0 for share in shares)  # wrk's threads alternate
    assert len(taken) > count - 2 * len(runs) - 2  # at most a few left over
    paced = shares[runs.index(api.PACED)]
    assert len(paced) <= max(0, count // 4)


def test_the_c100_run_gets_the_bench_ids_for_8_seconds() -> None:
    """At the bench's seed (170,000 ids to delete) c=100 deletes at up to
    ~13k a second here: 8 s of it must not run out (they did when the
    flat-out runs split evenly)."""
    ids = [str(i) for i in range(api.API_POINTS - 10_000)]
    runs = api._runs("delete")
    c100 = api._delete_share(ids, runs, runs.index("c=100"), 8.0)
    c10 = api._delete_share(ids, runs, runs.index("c=10"), 8.0)
    assert len(c100) >= 13_000 * 8
    assert len(c10) >= 3_000 * 8
