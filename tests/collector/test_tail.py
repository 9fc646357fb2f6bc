"""``collector tail``: the server-sent-event reader and the line format (no
sockets); following a real collector's /stream is in tests/api/test_stream_tail.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.tail import SseEvent, StreamFilters, format_doc, read_events, stream_path

SAMPLE = {"id": "1", "session": "web-1-x", "seq": 4, "kind": "sample", "name": "process",
          "host": "web-1", "tags": [], "timestamp": "2026-11-29T12:00:01.250Z",
          "data": {"cpu": {"percent": 12.5}, "mem": {"rss": 15_000_000}, "threads": 3}}  # fmt: skip


def test_a_sample_line_has_time_session_kind_name_and_a_summary() -> None:
    line = format_doc(SAMPLE, color=False)
    assert "\x1b[" not in line
    _, session, kind, name, *rest = line.split()
    assert (session, kind, name) == ("web-1-x", "sample", "process")
    assert " ".join(rest) == "cpu 12.5%  rss 14.3 MiB  threads 3".replace("  ", " ")


def test_an_event_shows_its_data_and_the_end_its_exit_code() -> None:
    event = {**SAMPLE, "kind": "event", "name": "deploy", "data": {"version": "1.2"}}
    assert format_doc(event, color=False).endswith('event   deploy {"version":"1.2"}')
    end = {**SAMPLE, "kind": "session", "name": "end", "data": {"exit_code": 3}}
    assert format_doc(end, color=False).endswith("ended (exit_code 3)")


def test_colour_only_when_asked() -> None:
    end = {**SAMPLE, "kind": "session", "name": "end", "data": {"exit_code": 3}}
    coloured = format_doc(end, color=True)
    assert "\x1b[31m" in coloured  # a failed end is red
    ok = format_doc({**end, "data": {"exit_code": 0}}, color=True)
    assert "\x1b[32m" in ok


def test_times_are_local_with_milliseconds() -> None:
    stamp = format_doc(SAMPLE, color=False).split()[0]
    assert len(stamp) == 12 and stamp[8] == "." and stamp.endswith("250")


def test_sse_reader_joins_data_lines_and_skips_comments() -> None:
    lines = [b": keep-alive\n", b"data: {\"a\": 1}\r\n", b"\r\n", b"event: dropped\n",
             b"data:[1,\n", b"data: 2]\n", b"\n", b"data: unterminated\n"]  # fmt: skip
    assert list(read_events(iter(lines))) == [
        SseEvent("message", '{"a": 1}'),
        SseEvent("dropped", "[1,\n2]"),
    ]


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20),
                min_size=1, max_size=5))  # fmt: skip
def test_sse_reader_round_trips_any_event(parts: list[str]) -> None:
    raw = [f"data: {p}\n".encode() for p in parts] + [b"\n"]
    assert list(read_events(iter(raw))) == [SseEvent("message", "\n".join(parts))]


def test_filters_become_the_query_of_get_metrics() -> None:
    assert stream_path(StreamFilters()) == "/stream"
    path = stream_path(StreamFilters(session="a b", kind="event", tags=("x", "y")))
    assert path == "/stream?session=a+b&kind=event&tag=x&tag=y"
