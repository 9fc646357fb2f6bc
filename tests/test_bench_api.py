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


@given(seconds=st.floats(2, 30))
def test_the_delete_runs_get_ids_for_their_fastest_rates(seconds: float) -> None:
    """At the bench's seed for runs of ``seconds``, c=100 and c=10 have ids
    for the fastest deletes measured so far (29.5k and 6.9k a second,
    2026-12-01; they ran out at a fixed 180,000 ids, and before that when
    the flat-out runs split evenly)."""
    ids = [str(i) for i in range(api.api_points(seconds) - api.EDITED)]
    runs = api._runs("delete")
    c100 = api._delete_share(ids, runs, runs.index("c=100"), seconds)
    c10 = api._delete_share(ids, runs, runs.index("c=10"), seconds)
    paced = api._delete_share(ids, runs, runs.index(api.PACED), seconds)
    assert len(c100) >= 29_500 * seconds
    assert len(c10) >= 6_900 * seconds
    assert len(paced) >= 1_000 * seconds  # ~500/s, with room


def test_no_seeded_point_is_newer_than_the_first_api_points() -> None:
    """However many are seeded, API points end where a fixed seed of
    MIN_API_POINTS ended (a newest-first page of samples walks whatever is
    newer), and never two share a timestamp."""
    stamps = [api.point_ts(i) for i in range(api.api_points(30.0))]
    assert max(stamps) == api.point_ts(api.MIN_API_POINTS - 1)
    assert len(set(stamps)) == len(stamps)
    assert [api.point_ts(k - 1) for k in (1, api.EDITED)] == [api._T0, api._T0 + api.EDITED - 1]
