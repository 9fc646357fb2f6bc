"""bench.compare reads the figures back from what the benches print: a
bench.report.Table and bench.api's table, every numeric cell, nothing else."""

from __future__ import annotations

import pathlib

import pytest

from bench.api import _slow_writes
from bench.api import render as render_api
from bench.compare import Figures, Key, parse_tables, render
from bench.report import Table


def test_figures_of_a_table_are_every_numeric_cell() -> None:
    t = Table("codec — 360 samples", ["delta", "full JSON (baseline)"])
    t.row("wire bytes / sample", 237, 429, goal="delta >= 5x smaller", lower_is_better=True)
    t.row("encode samples/s", 11898.4, None)
    t.row("p95 ms", 0.123, 12.5)
    got = list(parse_tables("noise before\n" + t.render() + "\n(codec: 3 s)\n"))
    assert got == [
        ("codec — 360 samples", "wire bytes / sample", "delta", 237.0),
        ("codec — 360 samples", "wire bytes / sample", "full JSON (baseline)", 429.0),
        ("codec — 360 samples", "encode samples/s", "delta", 11898.0),
        ("codec — 360 samples", "p95 ms", "delta", 0.12),
        ("codec — 360 samples", "p95 ms", "full JSON (baseline)", 12.5),
    ]


def test_figures_of_the_api_table_split_at_the_bars() -> None:
    result = {"rps": 1234.0, "p50": 1.0, "p95": 2.5, "p99": 7.25, "non2xx": 0, "errors": 0, "n": 9}
    other = dict(result, rps=1300.0)
    text = "== API: wrk\n" + render_api(
        [("off", {("get_raw", "c=100"): result}, 0.5, "1.0/1.0"),
         ("off", {("get_raw", "c=100"): other}, 0.5, "1.0/1.0")]
    )  # fmt: skip
    got = {(row, col): v for _t, row, col, v in parse_tables(text)}
    assert got[("get_raw c=100", "off: req/s")] == (1234 + 1300) / 2  # a lo-hi range: its middle
    assert got[("get_raw c=100", "off: p95")] == 2.5
    assert got[("get_raw c=100", "off: p99 ms")] == 7.2  # printed with one digit
    assert got[("cache hit rate, dashboard mix c=100", "off")] == 50.0
    assert not [row for row, _col in got if row.startswith("load")]  # the note under the table


def test_the_api_table_names_the_slow_writes_each_run_logged(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "collector.log"
    log.write_bytes(b'{"level":"info","msg":"collector ready"}\n')
    earlier, offset = _slow_writes(log, 0)
    assert earlier == []
    with open(log, "ab") as f:  # what the collector logs during the next run
        f.write(b'{"level":"warning","msg":"slow write transaction","action":"apply_edits",'
                b'"ms":1735,"lock_wait_ms":1700,"held_ms":35}\nnot json "slow write transaction"\n'
                b'{"level":"warning","msg":"slow fsync of the write-ahead log","ms":600}\n')  # fmt: skip
    slow, offset = _slow_writes(log, offset)
    assert [w["ms"] for w in slow] == [1735, 600]
    assert _slow_writes(log, offset) == ([], offset)  # read once
    result = {"rps": 10.0, "p50": 1.0, "p95": 2.0, "p99": 3.0, "non2xx": 0, "errors": 0, "n": 9}
    text = render_api([("off", {("put", "c=100"): dict(result, slow_writes=slow)}, None, "1/1"),
                       ("off", {("put", "c=100"): result}, None, "1/1")])  # fmt: skip
    assert ("(2 slow writes logged, the longest 1735 ms: apply_edits, 1700 ms of it waiting "
            "for the lock)") in text  # fmt: skip
    quiet = render_api([("off", {("put", "c=100"): result}, None, "1/1")])
    assert "slow" not in quiet


def test_render_puts_ref_and_this_tree_side_by_side() -> None:
    ref, this = Figures(), Figures()
    ref.add("codec", "codec — 360 samples", "wire bytes / sample", "delta", 240.0)
    this.add("codec", "codec — 720 samples", "wire bytes / sample", "delta", 120.0)
    assert Key("codec", "codec — # samples", "wire bytes / sample", "delta") in this.values
    ref.add("ingest", "ingest", "p99 ms", "paced at 18,000/s", 1.0)
    this.add("ingest", "ingest", "p99 ms", "paced at 10,000/s", 2.0)
    assert (
        Key("ingest", "ingest", "p99 ms", "paced at #/s") in ref.values.keys() & this.values.keys()
    )
    out = render("main", ref, this, rounds=1)
    assert "wire bytes / sample / delta" in out
    row = next(line for line in out.splitlines() if line.startswith("wire bytes"))
    assert row.split()[-3:] == ["240", "120", "0.50"]
    # Paced at different rates (each build derived its own): no ratio, both
    # rates named, so a faster build offered more load is not read as slower.
    paced = next(line for line in out.splitlines() if line.startswith("p99 ms"))
    assert paced.endswith("not alike")
    assert "paced at 18,000/s" in paced and "paced at 10,000/s" in paced


def test_render_compares_rows_offered_the_same_rate() -> None:
    ref, this = Figures(), Figures()
    ref.add("ingest", "ingest", "p99 ms", "paced at 20,000/s", 40.0)
    this.add("ingest", "ingest", "p99 ms", "paced at 20,000/s", 44.0)
    row = next(line for line in render("main", ref, this, 1).splitlines() if "p99" in line)
    assert row.split()[-3:] == ["40.0", "44.0", "1.10"]


def test_a_pinned_paced_rate_overrides_the_derived_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.ingest import PACED_RATE_ENV, _offered

    monkeypatch.delenv(PACED_RATE_ENV, raising=False)
    assert _offered(27_000) == 27_000
    monkeypatch.setenv(PACED_RATE_ENV, "20000")
    assert _offered(27_000) == 20_000  # bench.compare --paced-rate sets it for both sides
