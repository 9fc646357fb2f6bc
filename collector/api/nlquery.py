"""Natural-language-like questions -> structured store queries, for ``GET /query``.

A small keyword parser, not a language model: the prompt is split into words and
scanned left to right; at each word one of a few clause matchers must accept it
(a time window, a filter, a grouping, the main "head" of the question, a limit)
or the word must be harmless filler. Anything else is a ``PromptError`` that
names the word and lists what is understood — a wrong guess at what a user
meant would be worse than a clear "I don't understand".

Pure functions of (prompt, now): no I/O, no clock reads, so it is unit-tested
without a server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from deltawire.collector.stores.base import AggQuery, MetricQuery

__all__ = ["EXAMPLES", "MAX_LIMIT", "UNDERSTOOD", "Interpreted", "PromptError", "parse_prompt"]

#: Shown with every PromptError (and by the API's 422), so a user can copy one.
EXAMPLES: tuple[str, ...] = (
    "top 5 events today",
    "average cpu.percent of host web-1 in the last hour",
    "max mem.rss of session abc since yesterday",
    "count samples by host in the last 15 minutes",
    "latest 10 events of session abc",
    "sum value of name requests last 24h",
    "top 3 hosts by avg cpu.percent this week",
    "count events between 2026-11-20 and 2026-11-21T12:00:00Z",
)

UNDERSTOOD = (
    "I understand: aggregates (count, avg/average/mean, min, max, sum) of 'value' or a data "
    "path such as cpu.percent; 'top|bottom N names|hosts|sessions|events|samples [by <aggregate>]'; "
    "listings ('latest 10 events', 'first 5 samples'); filters ('of host X', 'for session X', "
    "'where name is X', 'with tag X', 'kind event', 'host=X'); grouping ('by host', 'per name'); "
    "a limit ('limit 20'); time windows ('today', 'yesterday', 'this week', 'last 15 minutes', "
    "'in the past 2 hours', 'last 24h', 'since 2026-11-20', 'since yesterday', "
    "'between A and B', 'before A', 'after A')."
)

MAX_LIMIT = 10_000
_DEFAULT_TOP = 10
_DEFAULT_LIMIT = 100
_MAX_SPAN_S = 100 * 366 * 86400  # longer is a typo, and far enough back datetime overflows

Func = Literal["count", "avg", "min", "max", "sum"]


class PromptError(ValueError):
    """The prompt cannot be understood; the message says why and what would be."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} {UNDERSTOOD}")
        self.reason = message
        self.examples = EXAMPLES


@dataclass(frozen=True, slots=True)
class Interpreted:
    """What a prompt was understood as: the store query and a JSON-able description."""

    query: AggQuery | MetricQuery
    interpreted: dict[str, Any]


# -- vocabulary ----------------------------------------------------------------

_FUNCS: dict[str, Func] = {
    "avg": "avg", "average": "avg", "mean": "avg",
    "min": "min", "minimum": "min", "smallest": "min", "lowest": "min",
    "max": "max", "maximum": "max", "largest": "max", "highest": "max", "peak": "max",
    "sum": "sum", "total": "sum",
    "count": "count",
}  # fmt: skip

# Filter fields; "metric" and "named" are how people say "name".
_FIELDS = {
    "host": "host", "session": "session", "name": "name", "metric": "name",
    "tag": "tag", "tagged": "tag", "kind": "kind", "type": "kind",
    "named": "name", "called": "name",
}  # fmt: skip

_GROUPS = {
    "host": "host", "hosts": "host", "name": "name", "names": "name", "metric": "name",
    "metrics": "name", "session": "session", "sessions": "session", "kind": "kind",
    "kinds": "kind",
}  # fmt: skip

# Nouns for "what is counted/listed": the kind filter they imply (None: any kind).
_SUBJECTS: dict[str, str | None] = {
    "event": "event", "events": "event", "sample": "sample", "samples": "sample",
    "document": None, "documents": None, "doc": None, "docs": None, "point": None,
    "points": None, "record": None, "records": None, "entry": None, "entries": None,
    "datapoint": None, "datapoints": None, "measurement": None, "measurements": None,
}  # fmt: skip

# Plural nouns after "top N" and the field their answers are grouped by.
_TOP_SUBJECTS: dict[str, tuple[str, str | None]] = {
    "events": ("name", "event"), "samples": ("name", "sample"),
    "names": ("name", None), "metrics": ("name", None),
    "hosts": ("host", None), "sessions": ("session", None), "kinds": ("kind", None),
}  # fmt: skip

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "wks": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "twenty": 20, "fifty": 50, "hundred": 100,
}  # fmt: skip

# Words that carry no meaning here; accepting them lets people write sentences.
_FILLER = frozenset(
    [
        "the",
        "a",
        "an",
        "me",
        "us",
        "please",
        "show",
        "give",
        "tell",
        "list",
        "get",
        "find",
        "fetch",
        "what",
        "what's",
        "whats",
        "which",
        "is",
        "are",
        "was",
        "were",
        "of",
        "for",
        "in",
        "on",
        "at",
        "over",
        "during",
        "and",
        "with",
        "all",
        "to",
        "do",
        "does",
        "did",
        "there",
        "been",
        "have",
        "has",
        "value's",
        "data",
        "recorded",
        "stored",
        "seen",
        "?",
    ]
)

_DESC_LIST = frozenset({"latest", "last", "newest", "recent"})
_ASC_LIST = frozenset({"first", "earliest", "oldest"})
_VERB_LIST = frozenset({"list", "show", "get", "find", "fetch"})

_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*$")
_COMPACT_SPAN_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|sec|m|min|mins|h|hr|hrs|d|w|wk)$")
_NUMBER_RE = re.compile(r"^\d+$")
_DECIMAL_RE = re.compile(r"^\d+\.\d+$")
_EPOCH_RE = re.compile(r"^\d{9,11}(?:\.\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CLOCK_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?$")
_FIELD_EQ_RE = re.compile(r"^(host|session|name|tag|kind|metric)(==|=|:)(.*)$", re.IGNORECASE)
_TOKEN_RE = re.compile(r'"([^"]*)"|\'([^\']*)\'|(\S+)')


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str  # as written (values are case-sensitive)
    low: str  # for keyword matching; a quoted token's low never equals a keyword
    quoted: bool = False


def _tokenize(prompt: str) -> list[_Tok]:
    toks: list[_Tok] = []
    for m in _TOKEN_RE.finditer(prompt):
        if m.group(3) is None:
            text = m.group(1) if m.group(1) is not None else m.group(2)
            toks.append(_Tok(text, "\0" + text, quoted=True))
            continue
        word = m.group(3).rstrip("?,;:!").rstrip(".")
        if not word:
            continue
        eq = _FIELD_EQ_RE.match(word)
        if eq:
            # "host=web-1" / "tag:env=prod" -> the field and its value.
            toks.append(_Tok(eq.group(1), eq.group(1).lower()))
            if eq.group(3):
                toks.append(_Tok(eq.group(3), eq.group(3).lower()))
            continue
        toks.append(_Tok(word, word.lower()))
    return toks


def _as_utc(dt: datetime) -> datetime:
    # Naive times in prompts are taken as UTC, like every time in the API.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _State:
    head: str | None = None  # "aggregate" | "list"
    func: Func = "count"
    path: str | None = None
    group_by: str | None = None
    limit: int | None = None
    ascending: bool | None = None
    descending_list: bool = True
    filters: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    ts_from: float | None = None
    ts_to: float | None = None
    windows: list[str] = field(default_factory=list)


class _Parser:
    def __init__(self, prompt: str, now: datetime) -> None:
        self.toks = _tokenize(prompt)
        self.now = _as_utc(now)
        self.i = 0
        self.s = _State()

    # -- small helpers ----------------------------------------------------------

    def _low(self, k: int = 0) -> str:
        j = self.i + k
        return self.toks[j].low if j < len(self.toks) else ""

    def _number(self, k: int = 0) -> int | None:
        low = self._low(k)
        if _NUMBER_RE.match(low):
            return int(low)
        return _NUMBER_WORDS.get(low)

    def _set_limit(self, n: int, where: str) -> None:
        if not 1 <= n <= MAX_LIMIT:
            raise PromptError(f"{where}: the number must be between 1 and {MAX_LIMIT}, not {n}.")
        if self.s.limit is not None and self.s.limit != n:
            raise PromptError(f"Two different limits ({self.s.limit} and {n}).")
        self.s.limit = n

    def _set_head(self, head: str, word: str) -> None:
        if self.s.head is not None:
            raise PromptError(f"{word!r}: the prompt asks two questions; ask one at a time.")
        self.s.head = head

    def _set_group(self, group: str) -> None:
        if self.s.group_by is not None and self.s.group_by != group:
            raise PromptError(f"Grouped both by {self.s.group_by} and by {group}; pick one.")
        self.s.group_by = group

    def _set_filter(self, name: str, value: str) -> None:
        if name == "tag":
            if value not in self.s.tags:
                self.s.tags.append(value)
            return
        old = self.s.filters.get(name)
        if old is not None and old != value:
            raise PromptError(f"Two different {name}s ({old!r} and {value!r}); give one.")
        self.s.filters[name] = value

    def _set_from(self, ts: float, label: str) -> None:
        if self.s.ts_from is not None:
            raise PromptError(f"Two starts of the time window ({label!r}); give one.")
        self.s.ts_from = ts
        self.s.windows.append(label)

    def _set_to(self, ts: float, label: str) -> None:
        if self.s.ts_to is not None:
            raise PromptError(f"Two ends of the time window ({label!r}); give one.")
        self.s.ts_to = ts
        self.s.windows.append(label)

    def _instant(self, k: int) -> tuple[float, int] | None:
        """An absolute time at offset k: RFC 3339, a date (+ clock), or epoch seconds."""
        j = self.i + k
        if j >= len(self.toks):
            return None
        text = self.toks[j].text
        if _EPOCH_RE.match(text):
            return float(text), 1
        used = 1
        if (
            _DATE_RE.match(text)
            and j + 1 < len(self.toks)
            and _CLOCK_RE.match(self.toks[j + 1].text)
        ):
            text = f"{text}T{self.toks[j + 1].text}"
            used = 2
        if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
            return None
        try:
            dt = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise PromptError(
                f"{text!r} is not a date or time I can read (use RFC 3339)."
            ) from None
        return _as_utc(dt).timestamp(), used

    def _span(self, k: int) -> tuple[float, int, str] | None:
        """A duration at offset k: "15 minutes", "24h", "hour" (= 1 hour)."""
        low = self._low(k)
        m = _COMPACT_SPAN_RE.match(low)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)], 1, low
        if low in _UNITS and len(low) > 1:
            return float(_UNITS[low]), 1, f"1 {low}"
        n = self._number(k)
        if n is not None:
            n_f = float(n)
        elif _DECIMAL_RE.match(low):
            n_f = float(low)
        else:
            return None
        unit = self._low(k + 1)
        if unit in _UNITS:
            return n_f * _UNITS[unit], 2, f"{low} {unit}"
        return None

    # -- clause matchers: each returns True after consuming its words -----------

    def match_time(self) -> bool:
        start = self.i
        # "in"/"over"/... may only introduce the relative windows ("in the last hour").
        k = 1 if self._low(0) in ("in", "over", "during", "within", "for") else 0
        if self._low(k) == "the":
            k += 1
        low = self._low(k)
        today = self.now.replace(hour=0, minute=0, second=0, microsecond=0)
        if low in ("last", "past", "previous"):
            span = self._span(k + 1)
            if span is None:
                return False
            seconds, used, label = span
            if not 0 < seconds <= _MAX_SPAN_S:
                raise PromptError(
                    f"'{low} {label}': the window must be between 1 second and 100 years."
                )
            self._set_from((self.now - timedelta(seconds=seconds)).timestamp(), f"last {label}")
            self.i = start + k + 1 + used
            return True
        if low == "today":
            self._set_from(today.timestamp(), "today")
            self.i = start + k + 1
            return True
        if low == "yesterday":
            self._set_from((today - timedelta(days=1)).timestamp(), "yesterday")
            self._set_to(today.timestamp(), "yesterday")
            self.i = start + k + 1
            return True
        if low == "this" and self._low(k + 1) in ("hour", "week", "month", "year"):
            unit = self._low(k + 1)
            if unit == "hour":
                begin = self.now.replace(minute=0, second=0, microsecond=0)
            elif unit == "week":
                begin = today - timedelta(days=today.weekday())
            elif unit == "month":
                begin = today.replace(day=1)
            else:
                begin = today.replace(month=1, day=1)
            self._set_from(begin.timestamp(), f"this {unit}")
            self.i = start + k + 2
            return True
        if k:
            return False
        if low == "since":
            if self._low(1) in ("today", "yesterday"):
                delta = 0 if self._low(1) == "today" else 1
                self._set_from((today - timedelta(days=delta)).timestamp(), f"since {self._low(1)}")
                self.i += 2
                return True
            span = self._span(1)
            if span is not None and self._low(1 + span[1]) == "ago":
                if not 0 < span[0] <= _MAX_SPAN_S:
                    raise PromptError(f"'since {span[2]} ago': at most 100 years ago.")
                self._set_from(
                    (self.now - timedelta(seconds=span[0])).timestamp(), f"last {span[2]}"
                )
                self.i += 2 + span[1]
                return True
            inst = self._instant(1)
            if inst is None:
                raise PromptError(
                    "'since' needs a date (RFC 3339), 'today', 'yesterday' or 'N hours ago'."
                )
            self._set_from(inst[0], f"since {_rfc3339(inst[0])}")
            self.i += 1 + inst[1]
            return True
        if low in ("between", "from"):
            a = self._instant(1)
            if a is None:
                if low == "between":
                    raise PromptError(
                        "'between' needs two dates: 'between 2026-11-20 and 2026-11-21'."
                    )
                return False  # "from host X" is a filter
            sep = self._low(1 + a[1])
            if sep not in ("and", "to", "until", "till"):
                if low == "from":
                    self._set_from(a[0], f"from {_rfc3339(a[0])}")
                    self.i += 1 + a[1]
                    return True
                raise PromptError("'between' needs two dates: 'between 2026-11-20 and 2026-11-21'.")
            b = self._instant(2 + a[1])
            if b is None:
                raise PromptError(f"'{low} A {sep} B' needs a date (RFC 3339) after {sep!r}.")
            if b[0] <= a[0]:
                raise PromptError("The time window ends before it starts.")
            self._set_from(a[0], f"from {_rfc3339(a[0])}")
            self._set_to(b[0], f"to {_rfc3339(b[0])}")
            self.i += 2 + a[1] + b[1]
            return True
        if low in ("before", "until", "till", "after", "on"):
            inst = self._instant(1)
            if inst is None:
                return False
            if low == "on":
                # "on 2026-11-20": that whole (UTC) day.
                day = datetime.fromtimestamp(inst[0], UTC).replace(
                    hour=0, minute=0, second=0, microsecond=0
                )
                self._set_from(day.timestamp(), f"on {day.date().isoformat()}")
                self._set_to((day + timedelta(days=1)).timestamp(), f"on {day.date().isoformat()}")
            elif low == "after":
                self._set_from(inst[0], f"after {_rfc3339(inst[0])}")
            else:
                self._set_to(inst[0], f"before {_rfc3339(inst[0])}")
            self.i += 1 + inst[1]
            return True
        return False

    def match_filter(self) -> bool:
        k = 0
        if self._low(0) in ("for", "of", "where", "in", "on", "from", "with", "and", "at", "whose"):
            k = 1
        low = self._low(k)
        fld = _FIELDS.get(low)
        if fld is None:
            return False
        if low == "metric" and self._low(k + 1) in _FUNCS:
            return False  # "metric" as a noun, not "metric <name>"
        k += 1
        if self._low(k) in ("is", "=", "==", ":", "equals", "equal", "was"):
            k += 1
            if self._low(k) == "to":
                k += 1
        j = self.i + k
        if j >= len(self.toks):
            raise PromptError(f"{low!r} needs a value, e.g. '{low} web-1'.")
        value = self.toks[j].text
        if not value:
            raise PromptError(f"{low!r} needs a non-empty value.")
        if fld == "kind" and value not in ("sample", "event", "session", "metric"):
            value = {"samples": "sample", "events": "event", "metrics": "metric"}.get(value, value)
        self._set_filter(fld, value)
        self.i = j + 1
        return True

    def match_group(self) -> bool:
        k = 0
        if self._low(0) in ("grouped", "group", "broken", "split") and self._low(1) in (
            "by",
            "down",
        ):
            k = 2 if self._low(1) == "by" else 3
        elif self._low(0) == "for" and self._low(1) == "each":
            k = 2
        elif self._low(0) in ("by", "per", "each"):
            k = 1
        else:
            return False
        grp = _GROUPS.get(self._low(k))
        if grp is None:
            if self._low(0) == "by":
                raise PromptError(
                    f"'by {self._low(1)}': I can group by host, name, session or kind."
                )
            return False
        self._set_group(grp)
        self.i += k + 1
        return True

    def match_limit(self) -> bool:
        if self._low(0) not in ("limit", "limited") or (n := self._number(1)) is None:
            if self._low(0) == "limit":
                raise PromptError("'limit' needs a number, e.g. 'limit 20'.")
            return False
        self._set_limit(n, "limit")
        self.i += 2
        return True

    def _aggregate_spec(self, k: int) -> tuple[Func, str | None, str | None, int] | None:
        """``<func> [of] <path>`` | ``count`` | ``events`` at offset k -> (func, path, kind, used)."""
        low = self._low(k)
        if low in _SUBJECTS:
            return "count", None, _SUBJECTS[low], 1
        if low == "count":
            return "count", None, None, 1
        func = _FUNCS.get(low)
        if func is not None:
            used = 1
            while self._low(k + used) in ("of", "the"):
                used += 1
            path = self._path(k + used)
            if path is None:
                raise PromptError(
                    f"'{low}' of what? Name 'value' or a data path such as cpu.percent."
                )
            return func, path, None, used + 1
        path = self._path(k)
        if path is not None:
            # "top 5 hosts by cpu.percent": averaging is the least surprising reading.
            return "avg", path, None, 1
        return None

    _RESERVED = frozenset(
        [*_FUNCS, *_FIELDS, *_GROUPS, *_SUBJECTS, *_UNITS, *_FILLER, "by", "per", "top", "bottom",
         "since", "between", "today", "yesterday", "latest", "first", "limit", "last", "past",
         "how", "many", "number"]
    )  # fmt: skip

    def _path(self, k: int) -> str | None:
        j = self.i + k
        if j >= len(self.toks):
            return None
        tok = self.toks[j]
        if tok.low in self._RESERVED and tok.low != "value":
            return None
        if not _PATH_RE.match(tok.text):
            return None
        path = tok.text
        if path.startswith("data."):
            path = path[len("data.") :]  # "data.cpu.percent" names the same thing
        return path

    def match_head(self) -> bool:
        low = self._low(0)
        s = self.s
        # top / bottom N <subject> [by <aggregate>]
        is_rank_word = low in ("top", "bottom") or (
            low in ("highest", "lowest")
            and (self._number(1) is not None or self._low(1) in _TOP_SUBJECTS)
        )
        if is_rank_word:
            k = 1
            n = self._number(1)
            if n is not None:
                k = 2
            subj = self._low(k)
            if subj not in _TOP_SUBJECTS:
                raise PromptError(
                    f"'{low}' needs what to rank: names, hosts, sessions, events or samples "
                    f"(e.g. 'top 5 hosts by avg cpu.percent')."
                )
            self._set_head("aggregate", low)
            group, kind = _TOP_SUBJECTS[subj]
            self._set_group(group)
            if kind:
                self._set_filter("kind", kind)
            self._set_limit(n if n is not None else _DEFAULT_TOP, low)
            s.ascending = low in ("bottom", "lowest")
            k += 1
            s.func, s.path = "count", None
            if self._low(k) in ("by", "with"):
                k += 1
                while self._low(k) in ("the", "most"):
                    k += 1  # "with the most events"
                spec = self._aggregate_spec(k)
                if spec is None:
                    raise PromptError(
                        f"'{low} ... by {self._low(k)}': rank by count, "
                        "events, or an aggregate such as 'avg cpu.percent'."
                    )
                s.func, s.path, kind2, used = spec
                if kind2:
                    self._set_filter("kind", kind2)
                k += used
            self.i += k
            return True
        # latest / first N <subject>
        if (
            low in _DESC_LIST
            or low in _ASC_LIST
            or (low == "most" and self._low(1) == "recent")
            or low in _VERB_LIST
        ):
            k = 2 if low == "most" else 1
            while self._low(k) in ("all", "the"):
                k += 1
            n = self._number(k)
            if n is not None:
                k += 1
            subj = self._low(k)
            if subj not in _SUBJECTS and subj not in ("metrics", "metric"):
                if low in _VERB_LIST:
                    return False  # "show me the average ..." : a filler verb
                raise PromptError(
                    f"'{low}' needs what to list: events, samples or documents "
                    f"(e.g. 'latest 10 events')."
                )
            self._set_head("list", low)
            kind = _SUBJECTS.get(subj)
            if kind:
                self._set_filter("kind", kind)
            if n is not None:
                self._set_limit(n, low)
            elif subj in (
                "event",
                "sample",
                "document",
                "doc",
                "point",
                "record",
                "entry",
                "metric",
            ):
                self._set_limit(1, low)  # "latest event": one
            s.descending_list = low not in _ASC_LIST
            self.i += k + 1
            return True
        # count / how many / number of [subject]
        if (
            low == "count"
            or (low == "how" and self._low(1) == "many")
            or (low == "number" and self._low(1) == "of")
        ):
            k = 1 if low == "count" else 2
            while self._low(k) in ("of", "the", "all"):
                k += 1
            self._set_head("aggregate", low)
            s.func, s.path = "count", None
            subj = self._low(k)
            if subj in _SUBJECTS:
                kind = _SUBJECTS[subj]
                if kind:
                    self._set_filter("kind", kind)
                k += 1
            self.i += k
            return True
        func = _FUNCS.get(low)
        if func is not None:
            spec = self._aggregate_spec(0)
            assert spec is not None  # a func word always yields a spec or raises
            self._set_head("aggregate", low)
            s.func, s.path, _kind, used = spec
            self.i += used
            return True
        return False

    def match_subject(self) -> bool:
        """A bare "events"/"samples" (e.g. "avg value of samples") restricts the kind."""
        kind = _SUBJECTS.get(self._low(0), "")
        if kind == "":
            return False
        if kind:
            self._set_filter("kind", kind)
        self.i += 1
        return True

    # -- driver -------------------------------------------------------------------

    def parse(self) -> Interpreted:
        if not self.toks:
            raise PromptError("The prompt is empty.")
        matchers: tuple[Callable[[], bool], ...] = (
            self.match_time,
            self.match_filter,
            self.match_group,
            self.match_limit,
            self.match_head,
            self.match_subject,
        )
        understood = 0
        while self.i < len(self.toks):
            if any(m() for m in matchers):
                understood += 1
                continue
            tok = self.toks[self.i]
            if tok.low in _FILLER:
                self.i += 1
                continue
            raise PromptError(f"I don't understand {tok.text!r} (word {self.i + 1}).")
        if not understood:
            raise PromptError("The prompt asks nothing I can answer.")
        return self._build()

    def _build(self) -> Interpreted:
        s = self.s
        if s.ts_from is not None and s.ts_to is not None and s.ts_to <= s.ts_from:
            raise PromptError("The time window ends before it starts.")
        where = MetricQuery(
            session=s.filters.get("session"),
            name=s.filters.get("name"),
            kind=s.filters.get("kind"),
            host=s.filters.get("host"),
            tags=tuple(sorted(s.tags)),
            ts_from=s.ts_from,
            ts_to=s.ts_to,
        )
        where_doc: dict[str, Any] = {
            k: v
            for k, v in (
                ("session", where.session),
                ("name", where.name),
                ("kind", where.kind),
                ("host", where.host),
                ("tags", list(where.tags) or None),
                ("from", _rfc3339(where.ts_from)),
                ("to", _rfc3339(where.ts_to)),
            )
            if v is not None
        }
        window = " ".join(dict.fromkeys(s.windows)) or None
        if s.head == "aggregate" or (s.head is None and s.group_by is not None):
            limit = s.limit if s.limit is not None else (_DEFAULT_LIMIT if s.group_by else 1)
            agg = AggQuery(
                func=s.func,
                path=s.path,
                where=where,
                group_by=s.group_by,
                limit=limit,
                ascending=bool(s.ascending),
            )
            return Interpreted(
                agg,
                {
                    "type": "aggregate",
                    "func": agg.func,
                    "path": agg.path,
                    "group_by": agg.group_by,
                    "order": "ascending" if agg.ascending else "descending",
                    "limit": agg.limit,
                    "where": where_doc,
                    "window": window,
                },
            )
        # A listing: explicit ("latest 10 events") or implied by filters alone
        # ("events of host web-1 today").
        if s.group_by is not None:
            raise PromptError(
                "Grouping needs an aggregate such as 'count' or 'avg value', not a listing."
            )
        limit = s.limit if s.limit is not None else _DEFAULT_LIMIT
        q = MetricQuery(
            session=where.session,
            name=where.name,
            kind=where.kind,
            host=where.host,
            tags=where.tags,
            ts_from=where.ts_from,
            ts_to=where.ts_to,
            limit=limit,
            descending=s.descending_list,
        )
        return Interpreted(
            q,
            {
                "type": "list",
                "sort": "-timestamp" if q.descending else "timestamp",
                "limit": q.limit,
                "where": where_doc,
                "window": window,
            },
        )


def parse_prompt(prompt: str, now: datetime) -> Interpreted:
    """Interpret ``prompt`` relative to ``now`` (UTC; naive is taken as UTC).

    Raises ``PromptError`` (a ``ValueError``) with a message naming the word
    that was not understood and summarising what is.
    """
    if len(prompt) > 1000:
        raise PromptError("The prompt is too long (1000 characters at most).")
    return _Parser(prompt, now).parse()
