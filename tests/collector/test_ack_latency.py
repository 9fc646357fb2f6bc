"""The ack-latency histogram of ``GET /stats``: seconds from a frame's receipt
to the ack that covers it, one observation per frame."""

from __future__ import annotations

import pathlib
import re
from functools import partial

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.acks import AckTimes
from deltawire.collector.stats import ACK_LATENCY_BUCKETS, Histogram, Stats
from deltawire.testing.harness import collector_process, make_samples, stream_session, wait_until


@given(
    runs=st.lists(st.integers(1, 50), max_size=30),
    acks=st.lists(st.integers(-1, 1500), max_size=10),
)
def test_each_frame_is_observed_once_by_the_first_ack_covering_its_run(
    runs: list[int], acks: list[int]
) -> None:
    times, last, ends = AckTimes(), -1, []
    for i, frames in enumerate(runs):
        last += frames
        times.received(last, at=float(i), frames=frames)
        ends.append((last, float(i), frames))
    seen: list[tuple[float, int]] = []
    acked = -1
    for ack in sorted(acks):  # acks only grow
        seen += times.covered(ack, now=100.0)
        acked = ack
    assert seen == [(100.0 - at, frames) for end, at, frames in ends if end <= acked]


def test_the_histogram_is_prometheus_cumulative_with_inclusive_bounds() -> None:
    h = Histogram((0.01, 0.1))
    h.observe(0.01, 3)  # on a bound: counted under it (le is "less or equal")
    h.observe(0.05)
    h.observe(7.0, 2)
    assert h.count == 6 and h.total == pytest.approx(0.03 + 0.05 + 14.0)
    text = Stats().render()
    assert "# TYPE deltawire_ack_latency_seconds histogram" in text
    samples = {
        s.labels.get("le"): s.value for s in h.family("x", "x").samples if s.name == "x_bucket"
    }
    assert samples == {"0.01": 3, "0.1": 4, "+Inf": 6}


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else float("nan")


@pytest.mark.slow
def test_stats_counts_every_acked_frame(tmp_path: pathlib.Path) -> None:
    n = 300
    with collector_process(tmp_path, http=True) as cp:
        trio.run(partial(stream_session, cp.port, "ack-latency", make_samples(n), chunk=40))
        with httpx.Client(base_url=f"http://127.0.0.1:{cp.http_port}", timeout=10) as http:
            # The ingest process sends its counters to the API process about once a second.
            text = wait_until(
                lambda: (
                    (t := http.get("/stats").text)
                    and _metric(t, "deltawire_ack_latency_seconds_count") == n
                    and t
                ),
                what=f"{n} frames in the ack-latency histogram",
            )
    counts = [_metric(text, "deltawire_ack_latency_seconds_bucket", le=str(b))
              for b in ACK_LATENCY_BUCKETS]  # fmt: skip
    assert counts == sorted(counts)  # cumulative
    assert _metric(text, "deltawire_ack_latency_seconds_bucket", le="+Inf") == n
    assert _metric(text, "deltawire_ack_latency_seconds_sum") > 0
