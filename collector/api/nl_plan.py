"""What a /query prompt is understood as: a ``Plan``, one request to one
endpoint, built from the parser's state by ``build_plan``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any, Final, Literal
from urllib.parse import urlencode

from deltawire.collector.aggregate import Threshold
from deltawire.formats import rfc3339

from .nl_lexicon import (
    BAD_EXIT_WORDS,
    ENDED_WORDS,
    GONE_WORDS,
    GOOD_EXIT_WORDS,
    HEALTH_WORDS,
    LIST_WORDS,
    LIVE_WORDS,
    SIZE_UNITS,
    START_WORDS,
    TIME_UNITS_MS,
)
from .nl_vocab import PREFERRED_STREAM, Vocabulary

__all__ = [
    "DEFAULT_TOP",
    "EXAMPLES",
    "MAX_LIMIT",
    "MAX_PROMPT",
    "MAX_SPAN_S",
    "ParseState",
    "Plan",
    "PromptError",
    "Threshold",
    "build_plan",
]

#: Shown with every refusal, so a user can copy one.
EXAMPLES: Final[tuple[str, ...]] = (
    "top 5 events today",
    "average cpu of host web-1 in the last hour",
    "p95 of http_latency_ms per hour",
    "which host had the most request_failed events yesterday",
    "how many sessions ended with a non-zero exit code",
    "current memory of session abc",
    "count request_failed longer than 100 ms by host",
)

MAX_PROMPT: Final = 1000  # characters; a question is a sentence, not a document
MAX_LIMIT: Final = 10_000
DEFAULT_TOP: Final = 10
_DEFAULT_LIST: Final = 20
#: Data paths that hold a size in bytes: "300m" of one is megabytes, not minutes.
_MEMORY_RE: Final = re.compile(r"mem|rss|vms|bytes|size")
#: Plural nouns after "the last <name>": a page of them, not one.
_PLURAL_DOCS: Final = frozenset({"events", "samples", "documents", "points", "records", "entries"})
MAX_SPAN_S: Final = 100 * 366 * 86400  # longer is a typo, and datetime overflows

#: "/aggregate", "/metrics", "/sessions" or "/sessions/{session}"
Endpoint = str


class PromptError(ValueError):
    """The prompt cannot be answered; ``suggestions`` are the closest known names."""

    def __init__(self, message: str, suggestions: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reason = message
        self.suggestions = list(suggestions)
        self.examples = EXAMPLES


@dataclass(frozen=True, slots=True)
class Plan:
    """What a prompt was understood as: one request to one endpoint.

    ``params`` are that endpoint's query parameters, as strings a user can
    copy (``tag`` is a list: it repeats). ``names``: several names asked at
    once ("errors" = every event whose name says so): the request runs once
    per name and the rows are merged. ``answer`` says how /metrics and
    /sessions rows become the answer (``count``, ``count_by_host``,
    ``latest``: the field ``project`` of the newest document, per ``group``).
    """

    endpoint: Endpoint
    params: dict[str, Any]
    names: tuple[str, ...] = ()
    threshold: Threshold | None = None
    answer: Literal["rows", "count", "count_by_host", "latest", "one"] = "rows"
    project: str | None = None
    group: str | None = None
    notes: tuple[str, ...] = ()
    #: /aggregate by host, rows kept for these hosts only ("web-1 and web-2")
    only: tuple[str, ...] = ()

    def interpreted(self) -> dict[str, Any]:
        """The JSON ``interpreted`` of a /query answer: the request, copyable.

        ``url`` answers the same rows. Two cases have no one URL: several
        names (``names``; ``urls`` are one request per name, whose rows were
        merged), and a sessions question about non-zero exit codes
        (``where``: /sessions takes one exit code, so its rows were filtered
        after; ``url`` is the request before that)."""
        params = dict(self.params)
        where = params.pop("where", None) if self.endpoint == "/sessions" else None
        out: dict[str, Any] = {"endpoint": self.endpoint, "params": params}
        if self.names:
            out["names"] = list(self.names)
            out["url"] = None
            out["urls"] = [_url(self.endpoint, dict(params, name=n)) for n in self.names]
        else:
            out["url"] = _url(self.endpoint, params)
        if where is not None:
            out["where"] = where
        if self.answer not in ("rows",):
            out["answer"] = self.answer
        if self.project is not None:
            out["field"] = self.project
        if self.group is not None:
            out["by"] = self.group
        if self.only:
            out["only"] = list(self.only)  # the rows of ``url`` kept
        return out


def _size_note(n: float, unit: str) -> str:
    """How a size was read, with the other convention's bytes to check it by."""
    size = SIZE_UNITS[unit]
    binary = size & (size - 1) == 0
    power = (size.bit_length() - 1) // 10 if binary else len(str(size)) // 3
    other = (1 << (10 * power)) if not binary else 10 ** (3 * power)
    kind = f"binary, 2^{10 * power}" if binary else f"decimal, 10^{3 * power}"
    return (
        f"{n:g} {unit} read as {n * size:,.0f} bytes ({kind}; MB/GB are decimal, MiB/GiB"
        f" and a bare M/G binary: the other reading is {n * other:,.0f})"
    )


def _url(endpoint: str, params: dict[str, Any]) -> str:
    flat = [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
    return f"{endpoint}?{urlencode(flat)}" if flat else endpoint


def _rfc3339(ts: float) -> str:
    return rfc3339(ts, ms=False)


def _bucket_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass
class ParseState:
    fn: str | None = None
    fn_word: str | None = None
    field: str | None = None  # "value" or a data path
    stream: str | None = None  # the sample stream or event the field belongs to
    names: list[str] = _field(default_factory=list)  # name filter(s)
    kind: str | None = None
    host: str | None = None
    more_hosts: list[str] = _field(default_factory=list)  # "web-1 and web-2": after the first
    session: str | None = None
    more_sessions: list[str] = _field(default_factory=list)  # "sess-a and sess-d": likewise
    tags: list[str] = _field(default_factory=list)
    ts_from: float | None = None
    ts_to: float | None = None
    bucket: int | None = None
    group: str | None = None
    rank_desc: bool | None = None
    rank_word: str | None = None
    limit: int | None = None
    singular_rank: bool = False
    threshold: tuple[str, float, str | None] | None = None  # op, number, unit
    latest: bool = False
    listing: bool = False
    sessions_q: bool = False
    notes: list[str] = _field(default_factory=list)
    ignored: list[str] = _field(default_factory=list)
    synonym: str | None = None  # the word a field came from ("cpu")


class _Builder:
    """Turns the parsed state into one ``Plan``."""

    def __init__(self, s: ParseState, v: Vocabulary, words: set[str], toks: list[Any]) -> None:
        self.s, self.v, self.words, self.toks = s, v, words, toks
        self.all_words = {t.low for t in toks}
        self.notes = s.notes

    def filters(self) -> dict[str, Any]:
        s = self.s
        pairs = (
            ("host", s.host),
            ("session", s.session),
            ("tag", list(s.tags) or None),
            ("from", None if s.ts_from is None else _rfc3339(s.ts_from)),
            ("to", None if s.ts_to is None else _rfc3339(s.ts_to)),
        )
        return {k: v for k, v in pairs if v is not None}

    def build(self) -> Plan:
        s = self.s
        if s.ignored:
            self.notes.append("ignored: " + ", ".join(repr(w) for w in s.ignored))
        if s.sessions_q:
            self.several_hosts(aggregate=False)  # refuses: one host
            return self.sessions_plan()
        self.resolve_stream()
        if (
            s.latest
            and s.fn is None
            and s.threshold is None
            and not s.listing
            and (s.field or s.names)
        ):
            self.several_hosts(aggregate=False)
            return self.latest_plan()
        if s.listing or (
            s.fn is None
            and s.field is None
            and not s.names
            and s.group is None
            and s.threshold is None
            and s.bucket is None  # "events per minute": counted per bucket
            and (self.words & LIST_WORDS or s.kind or self.all_words & {"events", "samples"})
        ):
            self.several_hosts(aggregate=False)
            return self.list_plan()
        return self.aggregate_plan()

    def several_hosts(self, aggregate: bool = True) -> tuple[str, ...]:
        """ "avg cpu of web-1 and web-2", "memory of sess-a vs sess-d": asked by
        host (or session), those rows kept. Only an aggregate not grouped
        otherwise can be; anything else needs one of each."""
        s = self.s
        several = [
            (kind, (first, *more))
            for kind, first, more in (
                ("host", s.host, s.more_hosts),
                ("session", s.session, s.more_sessions),
            )
            if more
        ]
        if not several:
            return ()
        kind, names = several[0]
        if not aggregate or len(several) > 1 or s.group not in (None, kind):
            shown = " and ".join(repr(n) for n in names)
            raise PromptError(f"Two different {kind}s ({shown}); give one.")
        s.group = kind
        setattr(s, kind, None)
        self.notes.append(f"asked by {kind}; the rows of {', '.join(map(str, names))} kept")
        return tuple(n for n in names if n is not None)

    def resolve_stream(self) -> None:
        """Which sample stream a data path is read from; say so when it was a guess."""
        s, v = self.s, self.v
        if s.field is None or s.field == "value":
            return
        owners = v.path_owners.get(s.field, set())
        if s.stream is not None:
            if owners and s.stream not in owners:
                raise PromptError(
                    f"{s.stream!r} has no {s.field!r}; it is in: {', '.join(sorted(owners))}."
                )
            if s.stream not in s.names:
                s.names.append(s.stream)
            return
        if len(owners) > 1:
            pick = PREFERRED_STREAM if PREFERRED_STREAM in owners else sorted(owners)[0]
            others = sorted(owners - {pick})
            s.stream = pick
            s.names.append(pick)
            self.notes.append(
                f"{s.synonym or s.field} means {s.field} of {pick} samples; "
                f"say '{others[0]} {s.synonym or s.field}' for the {others[0]} samples"
            )
        elif len(owners) == 1:
            (only,) = owners
            if only not in s.names:
                s.names.append(only)
        if s.synonym is not None and len(owners) <= 1:
            self.notes.append(f"{s.synonym} read as {s.field}")

    def name_params(self, p: dict[str, Any]) -> tuple[str, ...]:
        s = self.s
        if s.kind is None and not s.names:
            if self.all_words & {"events", "event"}:
                s.kind = "event"
            elif self.all_words & {"samples", "sample"}:
                s.kind = "sample"
        if s.kind is not None:
            p["kind"] = s.kind
        if not s.names and s.stream is not None and s.stream in self.v.streams:
            s.names.append(s.stream)  # "count samples from the system stream"
        if len(s.names) == 1:
            p["name"] = s.names[0]
            return ()
        if s.names:
            self.notes.append("asked of each of " + ", ".join(s.names) + ", answers merged")
        return tuple(s.names)

    def aggregate_plan(self) -> Plan:
        s = self.s
        fn = s.fn
        fld = s.field
        if fn is None:
            if s.threshold is not None or (fld is None and (s.names or s.group or s.bucket)):
                fn = "count"
            elif fld is not None and s.rank_desc is not None:
                fn = "max" if fld.startswith("mem") else "avg"
                self.notes.append(f"ranked by {fn} {fld}")
            elif fld is not None:
                fn = "avg"
                self.notes.append(f"no aggregate named: the average {fld}")
            else:
                raise PromptError(
                    "I understood no question; name what to measure (a metric, an event,"
                    f" cpu, memory or a data path). Metrics: {self.v.sample_of('metric')};"
                    f" events: {self.v.sample_of('event')}; data paths: {self.v.sample_of('path')}."
                )
        if fn == "sum" and fld is None and s.kind == "event" and s.fn_word in ("total", "totals"):
            fn = "count"  # "total deploys": how many, not a sum of some field of theirs
        if fn == "rate" and fld is None and s.kind == "event" and s.names:
            # "error rate on web-1": events have no counter to take a rate of;
            # how often they happen is their count per interval.
            fn = "count"
            if s.bucket is None:
                s.bucket = 60
            self.notes.append(
                f"rate of events read as their count per {_bucket_text(s.bucket)} interval"
            )
        if fn != "count" and fld is None:
            if len(s.names) == 1 and s.names[0] in self.v.events:
                owned = sorted(self.v.catalog.paths.get(s.names[0], ()))
                if len(owned) == 1:
                    fld = owned[0]
                else:
                    raise PromptError(
                        f"{fn} of what in {s.names[0]!r} events? Data paths: {', '.join(owned) or 'none'}."
                    )
            else:
                raise PromptError(
                    f"{s.fn_word or fn} of what? Name a metric, cpu, memory or a data path."
                )
        params: dict[str, Any] = {"fn": fn}
        if fld is not None:  # with count: the documents that have it
            params["field"] = fld
        only = self.several_hosts()
        if s.group is None and s.threshold is not None:
            # "hosts with cpu over 80": which hosts, so grouped by them
            for noun, group in (("hosts", "host"), ("sessions", "session")):
                if noun in self.words:
                    s.group = group
        if s.group is not None:
            params["by"] = s.group
        if s.bucket is not None:
            params["bucket"] = _bucket_text(s.bucket)
        names = self.name_params(params)
        params.update(self.filters())
        threshold = self.threshold(fld)
        if threshold is not None:
            params["where"] = threshold.text()
            if params.get("field") not in (None, threshold.field) and fn == "count":
                del params["field"]  # the documents passing it, counted
        if s.rank_desc is not None or s.limit is not None:
            params["order"] = "-value" if s.rank_desc is not False else "value"
            params["limit"] = str(s.limit or DEFAULT_TOP)
        return Plan("/aggregate", params, names, threshold, notes=tuple(self.notes), only=only)

    def threshold(self, fld: str | None) -> Threshold | None:
        s = self.s
        if s.threshold is None:
            return None
        op, n, unit = s.threshold
        target = fld
        if unit == "m":  # "over 300m": megabytes of a memory figure, else minutes
            unit = "mib" if target is not None and _MEMORY_RE.search(target) else "min"
        if target is None or (target == "value" and s.kind == "event"):
            # "request_failed longer than 100 ms": the event's duration
            owned = sorted(self.v.catalog.paths.get(s.names[0], ())) if len(s.names) == 1 else []
            timed = [
                p
                for p in owned
                if any(x in p for x in ("_ms", "duration", "latency", "elapsed", "time"))
            ]
            if unit in TIME_UNITS_MS and timed:
                target = self._preferred(timed)
            elif len(owned) == 1:
                target = owned[0]
            elif target is None:
                raise PromptError(f"Over {n:g} of what? Name a metric or a data path.")
        assert target is not None
        if unit in TIME_UNITS_MS:
            scale = TIME_UNITS_MS[unit]
            base_ms = (
                1
                if re.search(r"(_ms|millis)", target)
                else 1000
                if re.search(r"(_s|seconds)$", target)
                else 1
            )
            n = n * scale / base_ms
        elif unit in SIZE_UNITS and SIZE_UNITS[unit] > 1:
            self.notes.append(_size_note(n, unit))
            n = n * SIZE_UNITS[unit]
        return Threshold(target, op, n)  # type: ignore[arg-type]

    @staticmethod
    def _preferred(paths: list[str]) -> str:
        return min(paths, key=lambda p: (not p.endswith("_ms"), len(p)))

    def list_plan(self) -> Plan:
        s = self.s
        params: dict[str, Any] = {}
        names = self.name_params(params)
        if "kind" not in params:
            if self.words & {"events", "event"}:
                params["kind"] = "event"
            elif self.words & {"samples", "sample"}:
                params["kind"] = "sample"
        params.update(self.filters())
        params["sort"] = "timestamp" if s.rank_desc is False else "-timestamp"
        singular = bool(self.all_words & {"event", "sample"}) and not self.all_words & {
            "events",
            "samples",
        }  # "the most recent event": one
        singular = singular or self._one_named()  # "the last job_error"
        params["limit"] = str(min(s.limit or (1 if singular else _DEFAULT_LIST), MAX_LIMIT))
        return Plan("/metrics", params, names, notes=tuple(self.notes))

    def _one_named(self) -> bool:
        """ "last job_error", "when was the last deploy": an ordering word right
        before one name (or a singular word of one), no number, and not
        "the last job_error events"."""
        toks = self.toks
        for i in range(len(toks) - 1):
            if toks[i].low in ("last", "latest", "newest", "first", "earliest", "oldest"):
                t, after = toks[i + 1], toks[i + 2].low if i + 2 < len(toks) else ""
                if after in _PLURAL_DOCS:
                    return False
                part = not t.low.endswith("s") and any(
                    t.low in re.split(r"[_.\-]", n.lower()) for n in self.s.names
                )
                return t.text in self.s.names or part
        return False

    def latest_plan(self) -> Plan:
        s = self.s
        params: dict[str, Any] = {}
        names = self.name_params(params)
        params.update(self.filters())
        params["sort"] = "-timestamp"
        params["limit"] = "1"
        return Plan(
            "/metrics",
            params,
            names,
            answer="latest",
            project=s.field or "value",
            group=s.group,
            notes=tuple(self.notes),
        )

    def sessions_plan(self) -> Plan:
        s, w = self.s, self.words
        params = self.filters()
        negated = bool(w & {"not", "never", "no", "isn't", "aren't", "anymore", "longer"})
        if (w & LIVE_WORDS - {"current"} or (w & {"still"} and w & START_WORDS)) and not negated:
            params["connected"] = "true"
        elif w & LIVE_WORDS - {"current"}:
            params["connected"] = "false"  # "not running anymore"
        elif w & GONE_WORDS:
            params["connected"] = "false"
        exit_word = (
            w & BAD_EXIT_WORDS
            or self._good_exit()
            or ("exit" in w and "code" in w and s.session is None)
        )
        if s.session is None and (w & (ENDED_WORDS - {"end", "exit"}) or exit_word):
            params["ended"] = "false" if negated and not exit_word else "true"
        if w & BAD_EXIT_WORDS or (w & {"zero"} and w & {"non", "not"}):
            params["where"] = "exit_code != 0"  # /sessions takes one exit code: checked here
            params["ended"] = "true"
        elif self._good_exit() or ("zero" in w and "exit" in w):
            params["exit_code"] = "0"
            params["ended"] = "true"
        code = self._exit_code()
        if code is not None:
            params["exit_code"] = str(code)
            params["ended"] = "true"
        if s.session is None and s.group == "host":
            return Plan(
                "/sessions", params, answer="count_by_host", group="host", notes=tuple(self.notes)
            )
        if s.session is not None:
            # The session itself answers "when did it end", "is it still connected".
            return Plan(f"/sessions/{s.session}", {}, answer="one", notes=tuple(self.notes))
        if s.fn == "count":
            return Plan("/sessions", params, answer="count", notes=tuple(self.notes))
        params["limit"] = str(s.limit or 100)
        return Plan("/sessions", params, notes=tuple(self.notes))

    def _good_exit(self) -> bool:
        """ "exited cleanly", "sessions that ended ok"; but "is db-1 ok" asks how
        it is doing (a word of health alone is no exit code)."""
        w = self.words
        good = w & GOOD_EXIT_WORDS
        return bool(good - HEALTH_WORDS or (good and w & (ENDED_WORDS | {"exit", "code"})))

    def _exit_code(self) -> int | None:
        toks = [t.low for t in self.toks]
        for i, w in enumerate(toks):
            if w in ("code", "exit", "exited", "status") and i + 1 < len(toks):
                j = i + 1 + (toks[i + 1] in ("of", "with", "=", "code", "is"))
                if j < len(toks) and toks[j].lstrip("-").isdigit():
                    return int(toks[j])
        return None


def build_plan(s: ParseState, v: Vocabulary, words: set[str], toks: list[Any]) -> Plan:
    """The plan of a parsed prompt (``words``: its words no matcher used)."""
    return _Builder(s, v, words, toks).build()
