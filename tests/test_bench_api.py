"""bench.api without its servers: how the DELETE runs share the seed's ids."""

from __future__ import annotations

from functools import partial

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


@given(seconds=st.floats(2, 60))
def test_seeded_points_stay_clear_of_what_the_reads_walk(seconds: float) -> None:
    """However many are seeded, API points past the first MIN_API_POINTS lie
    after the seed's samples and before the first points end (hours before
    now), in order; the first ones keep the timestamps PUT sends back."""
    count = api.api_points(seconds)
    first, last = api.MIN_API_POINTS, count - 1
    at = partial(api.point_ts, count=count)
    if last > first:
        assert api._T0 + api.SEED_DOCS < at(first) < at(first + 1) < at(last)
        assert at(last) < api._T0 + 160_000 < at(first - 1)
    assert [at(0), at(api.EDITED - 1)] == [api._T0, api._T0 + api.EDITED - 1]
