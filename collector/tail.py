"""``collector tail``: follow ``GET /stream`` in a terminal.

One line per stored document, newest last: local time, session, kind, name and
a short summary (a sample's CPU and memory, an event's data, a session's end
and exit code); coloured at a terminal. ``--json`` prints the documents as they
come, one per line, for scripts. The stream is plain HTTP (server-sent events),
read with the standard library; a dropped connection is retried with a growing
delay until Ctrl-C.
"""

from __future__ import annotations

import datetime
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from .stores.base import DocFilter

__all__ = [
    "SseEvent",
    "StreamFilters",
    "TailError",
    "follow",
    "format_doc",
    "read_events",
    "stream_path",
]

#: The server sends a comment line at least every 15 s: silence for longer
#: than this means the connection is dead even if TCP has not noticed.
_SILENCE_S = 45.0
_BACKOFF = (0.5, 5.0)  # first and longest wait between reconnects
#: Sample fields worth a glance, in order; the first few that exist are shown.
_SUMMARY = (("cpu.percent", "cpu", "%"), ("mem.rss", "rss", "B"), ("mem.percent", "mem", "%"),
            ("load.0", "load", ""), ("threads", "threads", ""), ("fds", "fds", ""))  # fmt: skip
_KIND_COLOUR = {"sample": "blue", "event": "yellow", "session": "magenta", "metric": "cyan"}


class TailError(Exception):
    """The collector refused the request (bad filter, key): retrying cannot help."""


#: What ``collector tail`` follows: the filters ``/stream`` takes.
StreamFilters = DocFilter


def stream_path(f: StreamFilters) -> str:
    pairs = (("session", f.session), ("name", f.name), ("kind", f.kind), ("host", f.host))
    params = [(k, v) for k, v in pairs if v]
    params += [("tag", t) for t in f.tags]
    return "/stream" + (f"?{urllib.parse.urlencode(params)}" if params else "")


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "message" unless the server named it (e.g. "dropped")
    data: str


def read_events(lines: Iterator[bytes]) -> Iterator[SseEvent]:
    """The server-sent events in ``lines`` (comments skipped)."""
    data: list[str] = []
    event = "message"
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data))
            data, event = [], "message"
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            event = line[6:].strip()


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, Sequence) and not isinstance(data, str) and part.isdigit():
            data = data[int(part)] if int(part) < len(data) else None
        else:
            return None
    return data


def _summary(doc: Mapping[str, Any]) -> str:
    kind, data = doc.get("kind"), doc.get("data")
    if kind == "session":
        d = data if isinstance(data, Mapping) else {}
        how = ", ".join(f"{k} {v}" for k, v in d.items()) or "no exit status"
        return f"ended ({how})"
    if kind == "sample" and isinstance(data, Mapping):
        parts = []
        for path, label, unit in _SUMMARY:
            v = _at(data, path)
            if isinstance(v, int | float) and not isinstance(v, bool):
                text = _human_bytes(v) if unit == "B" else f"{v:g}{unit}"
                parts.append(f"{label} {text}")
        return "  ".join(parts) or json.dumps(data, separators=(",", ":"))[:120]
    out = []
    if doc.get("value") is not None:
        out.append(f"value {doc['value']}")
    if data is not None:
        out.append(json.dumps(data, separators=(",", ":")))
    return "  ".join(out)


def format_doc(doc: Mapping[str, Any], color: bool) -> str:
    """One readable line; ANSI colours only if ``color``."""

    def st(text: str, **kw: Any) -> str:
        return click.style(text, **kw) if color else text

    ts = doc.get("timestamp")
    try:
        when = datetime.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).astimezone()
        stamp = when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    except ValueError:
        stamp = str(ts)
    kind = str(doc.get("kind") or "?")
    summary = _summary(doc)
    if kind == "session":
        ok = isinstance(doc.get("data"), Mapping) and doc["data"].get("exit_code") == 0
        summary = st(summary, fg="green" if ok else "red", bold=True)
    return " ".join([
        st(stamp, dim=True), st(str(doc.get("session") or "-"), fg="bright_black"),
        st(f"{kind:7}", fg=_KIND_COLOUR.get(kind)), st(str(doc.get("name") or ""), bold=True),
        summary,
    ])  # fmt: skip


def follow(base: str, filters: StreamFilters, on_doc: Callable[[dict[str, Any]], None],
           on_state: Callable[[str], None], key: str | None = None) -> None:  # fmt: skip
    """Read the stream forever, reconnecting; returns only by an exception
    (``TailError`` for a refused request, ``KeyboardInterrupt``)."""
    url = urllib.parse.urlsplit(base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise TailError(f"--api: {base!r} is not an http:// or https:// URL")
    conn_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    headers = {"Accept": "text/event-stream"}
    if key:
        headers["X-API-Key"] = key
    delay = _BACKOFF[0]
    down_since: float | None = None
    while True:
        conn = conn_type(url.hostname, url.port, timeout=_SILENCE_S)
        try:
            conn.request("GET", url.path.rstrip("/") + stream_path(filters), headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                body = resp.read(4096).decode("utf-8", "replace")
                try:
                    detail = json.loads(body).get("detail", body)
                except (ValueError, AttributeError):
                    detail = body
                if 400 <= resp.status < 500 and resp.status not in (408, 429):
                    raise TailError(f"the collector answered {resp.status}: {detail}")
                raise OSError(f"HTTP {resp.status}: {detail}")
            on_state("connected")
            down_since, delay = None, _BACKOFF[0]
            for ev in read_events(iter(resp.readline, b"")):
                try:
                    doc = json.loads(ev.data)
                except ValueError:
                    continue
                if ev.event == "dropped":  # we fell behind; the server closes the stream
                    detail = doc.get("detail", "") if isinstance(doc, dict) else ""
                    raise OSError(f"the collector dropped this stream, documents were skipped "
                                  f"({detail})")  # fmt: skip
                if ev.event == "message" and isinstance(doc, dict):
                    on_doc(doc)
            raise OSError("the collector closed the stream")
        except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
            if down_since is None:
                down_since = time.monotonic()
                on_state(f"cannot read {base}: {exc}; retrying")
        finally:
            conn.close()
        time.sleep(delay)  # a pause between reconnects: this is a blocking CLI
        delay = min(delay * 2, _BACKOFF[1])
