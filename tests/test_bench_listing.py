"""bench.listing without its servers: wrk's Lua asks for the path the Python
side checks, the two answers' parsers see the same samples (and a changed one
as different), the points carry every leaf, bad arguments are CLI errors."""

from __future__ import annotations

import functools
import random
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import listing
from bench.listing import FLAT, PAGES, TAGGED, DataSet, Page
from deltawire.formats import rfc3339

DATA = DataSet(sessions=100, per_session=50)


def _lua_path(script: str, seconds: str, millis: str) -> str:
    """The path wrk's ``request`` builds, with ``s`` and ``ms`` given."""
    expr = re.search(r'wrk\.format\("GET", (.*)\)\n', script)
    assert expr is not None
    return expr.group(1).replace('" .. s .. "', seconds).replace('" .. ms .. "', millis)[1:-1]


@pytest.mark.parametrize("page", PAGES.values(), ids=list(PAGES))
@pytest.mark.parametrize(
    "path_of", [listing.deltawire_path, functools.partial(listing.influx_path, db="x")]
)
@given(from_ms=st.integers(0, 10**13))
def test_wrk_asks_for_the_path_python_checks(
    path_of: listing.PathOf, page: Page, from_ms: int
) -> None:
    script = listing._lua(path_of, page, DATA)
    seconds, millis = str(from_ms // 1000), f"{from_ms % 1000:03d}"
    assert _lua_path(script, seconds, millis) == listing._path(path_of, page, from_ms)


def test_lua_starts_a_page_where_a_whole_page_follows() -> None:
    script = listing._lua(listing.deltawire_path, PAGES["full"], DATA)
    assert f"math.random(0, {DATA.last_second})" in script
    # 100 sessions: a sample a session each second, so one second after the last start
    assert DATA.last_second == DATA.per_session - 2


def _answers(from_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What deltawire and InfluxDB (tagged) answer for a page, built from the data set."""
    picked = sorted(
        (listing._ms(s, i, DATA.sessions), s, i)
        for s in range(DATA.sessions)
        for i in range(DATA.per_session)
        if listing._ms(s, i, DATA.sessions) >= from_ms
    )[: listing.PAGE]
    items = [{"id": "x", "session": f"s-{s}", "seq": i, "kind": "sample", "name": "process",
              "host": f"host-{s % 4}", "tags": ["bench"], "timestamp": rfc3339(ms / 1000),
              "data": listing._data(s, i)} for ms, s, i in picked]  # fmt: skip
    leaves = sorted(dict(listing._leaves(listing._data(0, 0))))
    columns = ["time", *leaves, "host", "seq", "session"]
    values = [
        [rfc3339(ms / 1000).replace(".000Z", "Z"),
         *(dict(listing._leaves(listing._data(s, i)))[k] for k in leaves), f"host-{s % 4}", i,
         f"s-{s}"]
        for ms, s, i in picked
    ]  # fmt: skip
    influx = {"results": [{"series": [{"name": "process", "columns": columns, "values": values}]}]}
    return {"items": items, "next": None}, influx


def test_the_same_page_compares_same_and_a_changed_value_does_not() -> None:
    from_ms = DATA.random_from(random.Random(3))
    ours, theirs = _answers(from_ms)
    assert listing.compare(listing.deltawire_page(ours), listing.influx_page(theirs)).startswith(
        "same 100 samples"
    )
    theirs["results"][0]["series"][0]["values"][57][3] = -1
    verdict = listing.compare(listing.deltawire_page(ours), listing.influx_page(theirs))
    assert verdict.startswith("DIFFERENT at sample 57")
    del theirs["results"][0]["series"][0]["values"][-1]
    assert "100 vs 99" in listing.compare(listing.deltawire_page(ours), listing.influx_page(theirs))


def test_a_point_carries_every_leaf_and_who_sent_it() -> None:
    tagged, flat = TAGGED.line(3, 7, 1234), FLAT.line(3, 7, 1234)
    assert tagged.startswith("process,host=host-3,session=s-3 ")
    assert flat.startswith("process ") and ',host="host-3",session="s-3"' in flat
    for line in (tagged, flat):
        fields = line.split(" ")[1]
        for path in dict(listing._leaves(listing._data(3, 7))):
            assert re.search(rf"(^|,){re.escape(path)}=", fields), path
        assert line.endswith(",seq=7i 1234")


@pytest.mark.parametrize(
    "argv", [["--pages", "nope"], ["--sessions", "0"], ["--samples", "10"], ["--rounds", "0"]]
)
def test_bad_arguments_are_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        listing.main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err
