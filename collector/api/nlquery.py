"""Questions as support engineers type them -> the ``/aggregate``, ``/metrics`` or
``/sessions`` request that answers them, for ``GET /query``.

No language model and no grammar library: the prompt is a bag of short
phrases in any order ("avg cpu of web-1 per hour today" = "today, hourly avg
cpu on web-1"), so a grammar would spend its rules on word order that carries
no meaning. Instead each kind of phrase (a time window, a bucket, a threshold,
a function, a ranking, a filter, the thing measured) is found by its own
small matcher, which marks the words it used; the words left over must be
filler, or a name from the store's vocabulary (``nl_vocab``), or the prompt is
refused with the closest known names. Measured: well under 1 ms per prompt
(``make bench``), where a lark grammar of the same phrases was slower and
could not look names up.

Pure functions of (prompt, now, vocabulary): no I/O, no clock reads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as _field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlencode

from .nl_vocab import PREFERRED_STREAM, DeleteIndex, Term, TermKind, Vocabulary

__all__ = ["EXAMPLES", "MAX_PROMPT", "Plan", "PromptError", "Threshold", "parse_prompt"]

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
_DEFAULT_TOP: Final = 10
_DEFAULT_LIST: Final = 20
_MAX_SPAN_S: Final = 100 * 366 * 86400  # longer is a typo, and datetime overflows

Endpoint = Literal["/aggregate", "/metrics", "/sessions"]


class PromptError(ValueError):
    """The prompt cannot be answered; ``suggestions`` are the closest known names."""

    def __init__(self, message: str, suggestions: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reason = message
        self.suggestions = list(suggestions)
        self.examples = EXAMPLES


@dataclass(frozen=True, slots=True)
class Threshold:
    """Only documents whose ``field`` compares so with ``number``."""

    field: str  # "value" or a data path
    op: Literal[">", ">=", "<", "<="]
    number: float

    def text(self) -> str:
        n = int(self.number) if self.number == int(self.number) else self.number
        return f"{self.field} {self.op} {n}"


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

    def interpreted(self) -> dict[str, Any]:
        """The JSON ``interpreted`` of a /query answer: the request, copyable."""
        flat = [
            (k, v) for k, vs in self.params.items() for v in (vs if isinstance(vs, list) else [vs])
        ]
        out: dict[str, Any] = {
            "endpoint": self.endpoint,
            "params": self.params,
            "url": f"{self.endpoint}?{urlencode(flat)}" if flat else self.endpoint,
        }
        if self.names:
            out["names"] = list(self.names)
        if self.answer not in ("rows",):
            out["answer"] = self.answer
        if self.project is not None:
            out["field"] = self.project
        if self.group is not None:
            out["by"] = self.group
        return out


# -- lexicon ---------------------------------------------------------------------------

_UNITS: Final = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "wks": 604800, "week": 604800, "weeks": 604800,
    "month": 2592000, "months": 2592000,
}  # fmt: skip
_BUCKET_WORDS: Final = {"minutely": 60, "hourly": 3600, "daily": 86400, "weekly": 604800}

_NUMBER_WORDS: Final = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "fifty": 50, "hundred": 100, "a": 1, "an": 1,
}  # fmt: skip

_FUNCS: Final = {
    "avg": "avg", "average": "avg", "averages": "avg", "mean": "avg", "typical": "avg",
    "max": "max", "maximum": "max", "peak": "max", "highest": "max", "largest": "max",
    "biggest": "max", "worst": "max",
    "min": "min", "minimum": "min", "lowest": "min", "smallest": "min",
    "sum": "sum", "total": "sum", "totals": "sum",
    "count": "count", "counts": "count", "number": "count", "tally": "count",
    "median": "p50", "rate": "rate", "throughput": "rate",
}  # fmt: skip
_PERCENTILES: Final = {"50": "p50", "90": "p90", "95": "p95", "99": "p99"}

# Ranking words, and whether they rank high first.
_SUPERLATIVES: Final = {
    "top": True, "highest": True, "most": True, "largest": True, "biggest": True,
    "max": True, "maximum": True, "peak": True, "heaviest": True, "busiest": True,
    "worst": True, "slowest": True, "greatest": True, "more": True,
    "bottom": False, "lowest": False, "least": False, "smallest": False, "fewest": False,
    "min": False, "minimum": False, "fastest": False, "quietest": False,
}  # fmt: skip

_GROUP_NOUNS: Final = {
    "host": "host", "hosts": "host", "machine": "host", "machines": "host",
    "server": "host", "servers": "host", "box": "host", "boxes": "host", "node": "host",
    "nodes": "host",
    "session": "session", "sessions": "session",
    "name": "name", "names": "name", "metric": "name", "metrics": "name",
    "event": "name", "events": "name", "type": "name", "types": "name",
}  # fmt: skip

# "op" words of thresholds; some take a second word ("more than").
_THRESHOLD_OPS: Final = {
    ">": ">", "gt": ">", "over": ">", "above": ">", "exceeding": ">", "exceeds": ">",
    "exceeded": ">", "beyond": ">", ">=": ">=", "<": "<", "lt": "<", "under": "<",
    "below": "<", "<=": "<=",
}  # fmt: skip
_THAN_OPS: Final = {
    "more": ">", "greater": ">", "higher": ">", "longer": ">", "slower": ">", "bigger": ">",
    "larger": ">", "less": "<", "lower": "<", "shorter": "<", "faster": "<", "smaller": "<",
    "fewer": "<",
}  # fmt: skip
_TIME_UNITS_MS: Final = {
    "ms": 1, "msec": 1, "millisecond": 1, "milliseconds": 1, "s": 1000, "sec": 1000,
    "secs": 1000, "second": 1000, "seconds": 1000, "min": 60000, "mins": 60000,
    "minute": 60000, "minutes": 60000,
}  # fmt: skip
_SIZE_UNITS: Final = {
    "b": 1, "bytes": 1, "kb": 1 << 10, "k": 1000, "mb": 1 << 20, "mib": 1 << 20,
    "gb": 1 << 30, "gib": 1 << 30,
}  # fmt: skip

_LIVE_WORDS: Final = frozenset(
    {"live", "connected", "active", "running", "online", "alive", "open", "current", "ongoing"}
)
_ENDED_WORDS: Final = frozenset(
    {"ended", "end", "ends", "finished", "finish", "exited", "exit", "stopped", "stop",
     "closed", "done", "terminated", "completed", "over", "died", "quit"}
)  # fmt: skip
_BAD_EXIT_WORDS: Final = frozenset(
    {"crashed", "crash", "crashes", "failed", "failing", "nonzero", "non-zero", "bad", "abnormal",
     "abnormally", "unsuccessful", "unsuccessfully", "error", "errors"}
)  # fmt: skip
_GOOD_EXIT_WORDS: Final = frozenset(
    {"ok", "okay", "cleanly", "clean", "successfully", "success", "successful", "normally", "fine"}
)
_START_WORDS: Final = frozenset({"start", "started", "starts", "begin", "began", "launched"})
_LATEST_WORDS: Final = frozenset({"current", "currently", "latest", "now", "newest", "recent"})
_LIST_WORDS: Final = frozenset({"show", "list", "display", "print", "see", "find", "get"})
_ORDER_WORDS: Final = frozenset(
    {"last", "latest", "recent", "newest", "first", "earliest", "oldest"}
)
_ERROR_WORDS: Final = frozenset(
    {"error", "errors", "failure", "failures", "failed", "fail", "fails", "crash", "crashes",
     "exception", "exceptions", "problem", "problems", "incident", "incidents"}
)  # fmt: skip

# Words that carry no meaning here: a sentence around the question.
_FILLER: Final = frozenset(
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
        "be",
        "been",
        "being",
        "of",
        "for",
        "in",
        "on",
        "at",
        "to",
        "and",
        "or",
        "with",
        "all",
        "any",
        "do",
        "does",
        "did",
        "there",
        "has",
        "have",
        "had",
        "how",
        "much",
        "many",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "from",
        "by",
        "per",
        "each",
        "every",
        "my",
        "our",
        "i",
        "we",
        "you",
        "can",
        "could",
        "would",
        "should",
        "will",
        "just",
        "only",
        "also",
        "about",
        "across",
        "within",
        "during",
        "into",
        "value",
        "values",
        "data",
        "recorded",
        "stored",
        "seen",
        "reported",
        "measured",
        "so",
        "far",
        "hey",
        "hi",
        "pls",
        "thanks",
        "did",
        "does",
        "used",
        "using",
        "use",
        "usage",
        "utilization",
        "utilisation",
        "level",
        "levels",
        "amount",
        "when",
        "where",
        "who",
        "whose",
        "status",
        "state",
        "doing",
        "happened",
        "happen",
        "happening",
        "took",
        "take",
        "takes",
        "taking",
        "were",
        "went",
        "go",
        "going",
        "had",
        "has",
        "got",
        "see",
        "look",
        "looking",
        "check",
        "give",
        "giving",
        "shown",
        "display",
        "print",
        "than",
        "then",
        "ago",
        "since",
        "some",
        "same",
        "overall",
        "whole",
        "entire",
        "right",
        "now",
        "currently",
        "currently",
        "across",
        "one",
        "ones",
        "number",
        "numbers",
        "metric",
        "metrics",
        "stats",
        "statistics",
        "statistic",
        "figure",
        "by",
        "graph",
        "chart",
        "plot",
        "trend",
        "trends",
        "over",
        "time",
        "breakdown",
        "broken",
        "down",
        "split",
        "grouped",
        "group",
        "x",
        "vs",
        "versus",
        "compared",
        "everything",
        "anything",
        "something",
        "anywhere",
        "everywhere",
        "common",
        "frequent",
        "often",
        "usual",
        "happened",
    ]
)

_IDENT_RE: Final = re.compile(r"[A-Za-z0-9][\w.\-:/@]*[\w]|[A-Za-z0-9]")
_NUM_RE: Final = re.compile(r"^-?\d+(?:\.\d+)?$")
_NUM_UNIT_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)([a-z%]+)$")
_ORDINAL_RE: Final = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
_PCT_RE: Final = re.compile(r"^(?:p|pct|perc)(\d{2,3})$")
_DATE_RE: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[t ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:z|[+-]\d{2}:?\d{2})?$"
)
_OP_SPLIT_RE: Final = re.compile(r"^(>=|<=|>|<)(.+)$")
_FIELD_EQ_RE: Final = re.compile(
    r"^(host|session|name|tag|metric|event)(?:=|:)(.+)$", re.IGNORECASE
)


@dataclass(slots=True)
class _Tok:
    text: str  # as written, for names (the store's names are case-sensitive)
    low: str
    used: bool = False
    quoted: bool = False


def _tokenize(prompt: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in re.finditer(r'"([^"]*)"|\'([^\']*)\'|(\S+)', prompt):
        if m.group(3) is None:
            text = m.group(1) if m.group(1) is not None else m.group(2)
            if text:
                out.append(_Tok(text, text.lower(), quoted=True))
            continue
        word = m.group(3).strip("?,;!()[]{}`").rstrip(".:")
        if word.lower().endswith("'s"):
            word = word[:-2]
        if not word:
            continue
        if (eq := _FIELD_EQ_RE.match(word)) is not None:
            out.append(_Tok(eq.group(1), eq.group(1).lower()))
            out.append(_Tok(eq.group(2), eq.group(2).lower()))
            continue
        if (op := _OP_SPLIT_RE.match(word)) is not None:
            out.append(_Tok(op.group(1), op.group(1)))
            word = op.group(2)
        low = word.lower()
        if (nu := _NUM_UNIT_RE.match(low)) is not None and not _ORDINAL_RE.match(low):
            unit = nu.group(2)
            if unit in _UNITS or unit in _TIME_UNITS_MS or unit in _SIZE_UNITS or unit == "%":
                out.append(_Tok(nu.group(1), nu.group(1)))
                out.append(_Tok(unit, unit))
                continue
        out.append(_Tok(word, low))
    return out


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bucket_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _number(low: str) -> float | None:
    if _NUM_RE.match(low):
        return float(low)
    return None


@dataclass
class _State:
    fn: str | None = None
    fn_word: str | None = None
    field: str | None = None  # "value" or a data path
    stream: str | None = None  # the sample stream or event the field belongs to
    names: list[str] = _field(default_factory=list)  # name filter(s)
    kind: str | None = None
    host: str | None = None
    session: str | None = None
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


class _Parser:
    def __init__(self, prompt: str, now: datetime, vocab: Vocabulary) -> None:
        self.toks = _tokenize(prompt)
        self.now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        self.v = vocab
        self.s = _State()

    # -- helpers -----------------------------------------------------------------

    def low(self, i: int) -> str:
        return self.toks[i].low if 0 <= i < len(self.toks) and not self.toks[i].used else ""

    def use(self, *idx: int) -> None:
        for i in idx:
            self.toks[i].used = True

    def num(self, i: int) -> float | None:
        w = self.low(i)
        n = _number(w)
        if n is None and w in _NUMBER_WORDS and w not in ("a", "an"):
            return float(_NUMBER_WORDS[w])
        return n

    def set_once(self, attr: str, value: Any, what: str) -> None:
        old = getattr(self.s, attr)
        if old is not None and old != value:
            raise PromptError(f"Two different {what}s ({old!r} and {value!r}); give one.")
        setattr(self.s, attr, value)

    # -- 1. merge multi-word names: "queue depth" -> queue_depth ----------------------

    def join_names(self) -> None:
        toks = self.toks
        i = 0
        while i < len(toks):
            for n in (3, 2):
                if i + n > len(toks):
                    continue
                parts = [t.text for t in toks[i : i + n]]
                if any(t.quoted for t in toks[i : i + n]):
                    continue
                for sep in ("_", ".", "-", ""):
                    joined = sep.join(parts)
                    if self.v.lookup(joined):
                        toks[i : i + n] = [_Tok(joined, joined.lower())]
                        break
                else:
                    continue
                break
            i += 1

    # -- 2. keyword typos: "avrage" -> "average" ------------------------------------------

    def fix_typos(self) -> None:
        for t in self.toks:
            w = t.low
            if t.quoted or not w.isalpha() or len(w) < 4 or w in _KEYWORDS or w in _FILLER:
                continue
            if self.v.lookup(w) or (
                w.endswith("s") and (w[:-1] in _KEYWORDS or self.v.lookup(w[:-1]))
            ):
                continue
            best = _keyword_typo(w)
            if best is not None:
                self.s.notes.append(f"read {t.text!r} as {best!r}")
                t.low = best
                t.text = best

    # -- 3. time windows ------------------------------------------------------------------

    def _span(self, i: int) -> tuple[float, int] | None:
        """A duration at i: "15 minutes", "hour" (= 1 hour) -> (seconds, words)."""
        w = self.low(i)
        if w in _UNITS and len(w) > 1:
            return float(_UNITS[w]), 1
        n = self.num(i)
        if n is not None and self.low(i + 1) in _UNITS:
            return n * _UNITS[self.low(i + 1)], 2
        if w in ("a", "an") and self.low(i + 1) in _UNITS:
            return float(_UNITS[self.low(i + 1)]), 2
        if w == "few" and self.low(i + 1) in _UNITS:
            return 3.0 * _UNITS[self.low(i + 1)], 2
        return None

    def _instant(self, i: int) -> float | None:
        w = self.low(i)
        if not _DATE_RE.match(w):
            return None
        try:
            dt = datetime.fromisoformat(self.toks[i].text.upper().replace(" ", "T"))
        except ValueError:
            raise PromptError(
                f"{self.toks[i].text!r} is not a date I can read (use 2026-11-20 or RFC 3339)."
            ) from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()

    def _from(self, ts: float, to: float | None = None) -> None:
        if self.s.ts_from is not None:
            raise PromptError("Two time windows; give one.")
        self.s.ts_from = ts
        self.s.ts_to = to

    def times(self) -> None:
        now = self.now
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        i = 0
        while i < len(self.toks):
            w = self.low(i)
            if w in ("last", "past", "previous", "recent", "trailing"):
                span = self._span(i + 1)
                if span is not None:
                    seconds, n = span
                    if not 0 < seconds <= _MAX_SPAN_S:
                        raise PromptError("The time window must be between 1 second and 100 years.")
                    self._from((now - timedelta(seconds=seconds)).timestamp())
                    self.use(*range(i, i + 1 + n))
                    if self.low(i - 1) == "the":
                        self.use(i - 1)
                    i += 1 + n
                    continue
            if w in ("today", "tonight") or (w == "this" and self.low(i + 1) in ("morning", "day")):
                self._from(today.timestamp())
                self.use(i, *(() if w != "this" else (i + 1,)))
            elif w == "yesterday":
                self._from((today - timedelta(days=1)).timestamp(), today.timestamp())
                self.use(i)
            elif w == "this" and self.low(i + 1) in ("hour", "week", "month", "year"):
                unit = self.low(i + 1)
                begin = {
                    "hour": now.replace(minute=0, second=0, microsecond=0),
                    "week": today - timedelta(days=today.weekday()),
                    "month": today.replace(day=1),
                    "year": today.replace(month=1, day=1),
                }[unit]
                self._from(begin.timestamp())
                self.use(i, i + 1)
            elif w == "since":
                nxt = self.low(i + 1)
                if nxt in ("today", "yesterday", "midnight"):
                    self._from((today - timedelta(days=1 if nxt == "yesterday" else 0)).timestamp())
                    self.use(i, i + 1)
                elif (span := self._span(i + 1)) is not None and self.low(i + 1 + span[1]) == "ago":
                    self._from((now - timedelta(seconds=span[0])).timestamp())
                    self.use(*range(i, i + 2 + span[1]))
                elif (ts := self._instant(i + 1)) is not None:
                    self._from(ts)
                    self.use(i, i + 1)
            elif w in ("between", "from") and (a := self._instant(i + 1)) is not None:
                if (
                    self.low(i + 2) in ("and", "to", "until", "till")
                    and (b := self._instant(i + 3)) is not None
                ):
                    if b <= a:
                        raise PromptError("The time window ends before it starts.")
                    self._from(a, b)
                    self.use(i, i + 1, i + 2, i + 3)
                else:
                    self._from(a)
                    self.use(i, i + 1)
            elif w in ("before", "until", "till") and (b := self._instant(i + 1)) is not None:
                self.s.ts_to = b
                self.use(i, i + 1)
            elif w in ("after",) and (a := self._instant(i + 1)) is not None:
                self._from(a)
                self.use(i, i + 1)
            elif w == "on" and (a := self._instant(i + 1)) is not None:
                day = datetime.fromtimestamp(a, UTC).replace(hour=0, minute=0, second=0)
                self._from(day.timestamp(), (day + timedelta(days=1)).timestamp())
                self.use(i, i + 1)
            elif (span := self._span(i)) is not None and self.low(i + span[1]) == "ago":
                self._from((now - timedelta(seconds=span[0])).timestamp())
                self.use(*range(i, i + 1 + span[1]))
            i += 1

    # -- 4. buckets and rate ------------------------------------------------------------

    def buckets(self) -> None:
        for i in range(len(self.toks)):
            w = self.low(i)
            if w in _BUCKET_WORDS:
                self.set_once("bucket", _BUCKET_WORDS[w], "bucket")
                self.use(i)
            elif w in ("per", "every", "each", "by", "a", "/", "in") or w.startswith("per-"):
                j = i + 1
                if w.startswith("per-"):
                    j, unit_word = i, w[4:]
                else:
                    unit_word = self.low(j)
                n = 1.0
                if (k := self.num(j)) is not None and self.low(j + 1) in _UNITS:
                    n, j = k, j + 1
                    unit_word = self.low(j)
                if unit_word not in _UNITS or (
                    w == "in"
                    and self.low(j + 1)
                    not in (
                        "buckets",
                        "bucket",
                        "intervals",
                        "interval",
                        "steps",
                        "chunks",
                        "slices",
                    )
                ):
                    continue
                if w == "a" and n == 1.0 and self.low(i - 1) not in ("once", "twice"):
                    # "count per a hour" is rare; "3 times a day" rarer: "a hour" reads as per hour
                    pass
                seconds = int(n * _UNITS[unit_word])
                if seconds == 1 and w in ("per", "/", "a"):
                    self.s.fn = self.s.fn or "rate"  # "errors per second" is a rate
                    self.s.fn_word = self.s.fn_word or "per second"
                else:
                    self.set_once("bucket", seconds, "bucket")
                self.use(*range(i, j + 1))
                if w == "in":
                    self.use(j + 1)
            elif w in ("bucket", "buckets", "interval", "intervals") and self.low(i + 1) in (
                "of",
                "=",
            ):
                if (k := self.num(i + 2)) is not None and self.low(i + 3) in _UNITS:
                    self.set_once("bucket", int(k * _UNITS[self.low(i + 3)]), "bucket")
                    self.use(i, i + 1, i + 2, i + 3)
            elif w.endswith("-minute") or w.endswith("-hour") or w.endswith("-second"):
                head, _, unit = w.rpartition("-")
                if _number(head) is not None and self.low(i + 1) in (
                    "buckets",
                    "bucket",
                    "intervals",
                    "interval",
                    "windows",
                    "steps",
                ):
                    self.set_once("bucket", int(float(head) * _UNITS[unit]), "bucket")
                    self.use(i, i + 1)

    # -- 5. thresholds -----------------------------------------------------------------

    def thresholds(self) -> None:
        for i in range(len(self.toks)):
            w = self.low(i)
            op, j = None, i + 1
            if w in _THRESHOLD_OPS:
                op = _THRESHOLD_OPS[w]
            elif w in _THAN_OPS and self.low(i + 1) == "than":
                op, j = _THAN_OPS[w], i + 2
            elif w == "at" and self.low(i + 1) in ("least", "most"):
                op, j = (">=" if self.low(i + 1) == "least" else "<="), i + 2
            elif (
                w in ("greater", "more", "less", "fewer")
                and self.low(i + 1) == "or"
                and self.low(i + 2) == "equal"
            ):
                op = ">=" if w in ("greater", "more") else "<="
                j = i + 3 + (self.low(i + 3) == "to")
            if op is None:
                continue
            n = self.num(j)
            if n is None:
                continue
            unit = self.low(j + 1)
            used = [i, *range(i + 1, j + 1)]
            if unit in _TIME_UNITS_MS or unit in _SIZE_UNITS or unit in ("%", "percent"):
                used.append(j + 1)
            else:
                unit = None  # type: ignore[assignment]
            if self.s.threshold is not None:
                raise PromptError("Two thresholds; give one ('over 500').")
            self.s.threshold = (op, n, unit)
            self.use(*used)
            if self.low(i - 1) in (
                "took",
                "takes",
                "taking",
                "lasting",
                "lasted",
                "is",
                "was",
                "were",
                "are",
                "with",
            ):
                self.use(i - 1)

    # -- 6. functions, percentiles, ranking, grouping -----------------------------------

    def functions(self) -> None:
        for i in range(len(self.toks)):
            w = self.low(i)
            if not w:
                continue
            if (m := _PCT_RE.match(w)) is not None:
                self._pct(m.group(1), i, i)
            elif (m := _ORDINAL_RE.match(w)) is not None and self.low(i + 1) in (
                "percentile",
                "pct",
                "perc",
            ):
                self._pct(m.group(1), i, i + 1)
            elif w in ("percentile", "pct") and self.num(i + 1) is not None:
                self._pct(str(int(self.num(i + 1) or 0)), i, i + 1)
            elif _number(w) is not None and self.low(i + 1) in ("percentile", "pctl"):
                self._pct(str(int(float(w))), i, i + 1)
            elif w == "how" and self.low(i + 1) in ("many", "often"):
                self._fn("count", "how many", i, i + 1)
            elif w in ("number", "amount", "count") and self.low(i + 1) == "of":
                self._fn("count", w, i, i + 1)
            elif w in ("#",):
                self._fn("count", w, i)
            elif w == "rate" or (w == "per" and self.low(i + 1) in ("sec", "second", "s")):
                self._fn("rate", w, i)
            elif w in _FUNCS and w not in _SUPERLATIVES and w != "number":
                self._fn(_FUNCS[w], w, i)

    def _pct(self, digits: str, *idx: int) -> None:
        fn = _PERCENTILES.get(digits)
        if fn is None:
            raise PromptError(
                f"I can give the 50th, 90th, 95th and 99th percentiles (p50, p90, p95, p99), not the {digits}th."
            )
        self._fn(fn, f"p{digits}", *idx)

    def _fn(self, fn: str, word: str, *idx: int) -> None:
        if self.s.fn is not None and self.s.fn != fn:
            if {self.s.fn, fn} == {"count", "rate"}:
                fn = "rate"
            elif self.s.fn == "count":
                pass  # "count ... average": the explicit aggregate wins
            elif fn == "count":
                self.use(*idx)
                return
            else:
                raise PromptError(
                    f"Two aggregates ({self.s.fn_word!r} and {word!r}); ask one at a time."
                )
        self.s.fn, self.s.fn_word = fn, word
        self.use(*idx)

    def rankings(self) -> None:
        toks = self.toks
        grouped = self.s.group is not None  # "max cpu by host" is no ranking
        for i in range(len(toks)):
            w = self.low(i)
            if (
                w in ("which", "what", "whats", "what's")
                and self.low(i + 1) in _GROUP_NOUNS
                and not self._is_value(i + 2)
            ):
                if self.low(i + 1) in ("metric", "metrics"):
                    continue
                self.set_once("group", _GROUP_NOUNS[self.low(i + 1)], "grouping")
                self.s.singular_rank = not self.low(i + 1).endswith("s")
                self.use(i, i + 1)
        for i in range(len(toks)):
            w = self.low(i)
            if self.s.rank_desc is None and (
                w in ("top", "bottom")
                or (
                    w in _SUPERLATIVES
                    and not grouped
                    and self._group_noun_near(i)
                    and self.low(i + 1) not in ("recent", "recently", "latest")  # a listing
                )
            ):
                n = self.num(i + 1)
                self.s.rank_desc = _SUPERLATIVES[w]
                self.s.rank_word = w
                self.use(i)
                if n is not None and w in ("top", "bottom"):
                    self.s.limit = int(n)
                    self.use(i + 1)
            elif w in _SUPERLATIVES and w in _FUNCS:
                self._fn(_FUNCS[w], w, i)  # "max cpu by host", "highest cpu on web-1"
        if self.s.rank_desc is None:
            return
        # The grouped noun: "top 5 hosts", "host with the highest cpu", "busiest host".
        if self.s.group is None:
            for i in range(len(toks)):
                w = self.low(i)
                if (
                    w in _GROUP_NOUNS
                    and not self._is_value(i + 1)
                    and w not in ("metric", "metrics")
                ):
                    self.s.group = _GROUP_NOUNS[w]
                    self.s.singular_rank = not w.endswith("s")
                    self.use(i)
                    break
            else:
                # "highest cpu" with nothing to rank: the function max/min.
                if self.s.rank_word in _FUNCS and self.s.fn is None:
                    self._fn(_FUNCS[self.s.rank_word], self.s.rank_word)
                self.s.rank_desc = None
                return
        if self.s.limit is None:
            self.s.limit = 1 if self.s.singular_rank and self.s.rank_word != "top" else _DEFAULT_TOP

    def _group_noun_near(self, i: int) -> bool:
        if self.s.group is not None:
            return True
        window = [self.low(j) for j in range(max(0, i - 5), min(len(self.toks), i + 5)) if j != i]
        return any(w in _GROUP_NOUNS and w not in ("metric", "metrics") for w in window) or any(
            w in ("which", "what") for w in window
        )

    def _is_value(self, i: int) -> bool:
        """Is the word at i a name (so the noun before it is a filter: "host web-1")?"""
        w = self.low(i)
        if not w:
            return False
        if self.v.lookup(self.toks[i].text):
            return True
        return (
            bool(_IDENT_RE.fullmatch(self.toks[i].text))
            and any(c in w for c in "-_.0123456789:")
            and not w.isdigit()
        )

    def groupings(self) -> None:
        for i in range(len(self.toks)):
            w = self.low(i)
            j = None
            if w in ("by", "per", "each", "across") and self.low(i + 1) in _GROUP_NOUNS:
                j = i + 1
            elif (
                w in ("for", "of")
                and self.low(i + 1) in ("each", "every", "all")
                and self.low(i + 2) in _GROUP_NOUNS
            ):
                j = i + 2
            elif w in ("grouped", "broken", "split", "breakdown") and self.low(i + 1) in (
                "by",
                "down",
            ):
                k = i + 2 + (self.low(i + 2) == "by")
                if self.low(k) in _GROUP_NOUNS:
                    j = k
            if j is None or self._is_value(j + 1):
                continue
            group = _GROUP_NOUNS[self.low(j)]
            if self.s.group is not None and self.s.group != group:
                raise PromptError(f"Grouped both by {self.s.group} and by {group}; pick one.")
            self.s.group = group
            self.use(*range(i, j + 1))

    # -- 7. sessions questions ------------------------------------------------------------

    def session_words(self) -> set[str]:
        return {t.low for t in self.toks if not t.used}

    # -- 8. names: filters and the thing measured ---------------------------------------

    _FILTER_KEYS: Final = {
        "host": "host", "machine": "host", "server": "host", "node": "host", "box": "host",
        "session": "session", "sess": "session", "tag": "tag", "tagged": "tag", "tags": "tag",
        "label": "tag", "labelled": "tag", "labeled": "tag", "event": "event", "events": "event",
        "metric": "metric", "name": "name", "named": "name", "called": "name",
        "stream": "stream",
    }  # fmt: skip

    def names(self) -> None:
        toks = self.toks
        for i in range(len(toks)):
            t = toks[i]
            if t.used:
                continue
            key = self._FILTER_KEYS.get(t.low)
            # "host web-1", "session=abc", "with tag prod", "event request_failed"
            if key is not None and i + 1 < len(toks) and not toks[i + 1].used:
                nxt = toks[i + 1]
                if self.low(i + 1) in ("is", "=", ":", "equals", "was") and i + 2 < len(toks):
                    j = i + 2
                else:
                    j = i + 1
                val = toks[j]
                if (
                    val.used
                    or (val.low in _KEYWORDS and not self.v.lookup(val.text))
                    or (val.low in _FILLER and not self.v.lookup(val.text))
                ):
                    continue
                kinds = _KEY_KINDS[key]
                hits = [term for term in self.v.lookup(val.text) if term.kind in kinds]
                if not hits:
                    if (
                        key in ("event", "metric", "name")
                        and not self._is_value(j)
                        and not val.quoted
                    ):
                        continue  # "event counts", "metric name": nouns, not filters
                    raise self._unknown(val.text, kinds, f"{key} {val.text!r}")
                self._assign(hits[0], val.text)
                self.use(i, j)
                del nxt
        for i, t in enumerate(toks):
            if t.used:
                continue
            hits = self.v.lookup(t.text)
            if not hits and t.low.endswith("s") and len(t.low) > 3:
                hits = self.v.lookup(t.text[:-1])  # "user_logins"
            if hits:
                self._assign(self._pick(hits), t.text)
                self.use(i)

    def _pick(self, hits: list[Term]) -> Term:
        order: tuple[TermKind, ...] = (
            "session",
            "host",
            "metric",
            "event",
            "path",
            "stream",
            "tag",
        )
        return min(hits, key=lambda term: order.index(term.kind))

    def _assign(self, term: Term, text: str) -> None:
        s = self.s
        if term.kind == "host":
            self.set_once("host", term.value, "host")
        elif term.kind == "session":
            self.set_once("session", term.value, "session")
        elif term.kind == "tag":
            if term.value not in s.tags:
                s.tags.append(term.value)
        elif term.kind in ("metric", "event"):
            if term.value not in s.names:
                s.names.append(term.value)
            if term.kind == "metric":
                self._set_field("value", term.value)
            else:
                s.kind = "event"
                s.stream = s.stream or term.value
        elif term.kind == "stream":
            if s.stream is not None and s.stream != term.value and s.stream in self.v.streams:
                raise PromptError(
                    f"Two sample streams ({s.stream!r} and {term.value!r}); give one."
                )
            s.stream = term.value
        elif term.kind == "path":
            self._set_field(term.value, None)

    def _set_field(self, fld: str, metric: str | None) -> None:
        s = self.s
        if s.field is not None and s.field != fld:
            if s.field == "value" or fld == "value":
                # "avg value of http_latency_ms": the same thing said twice
                s.field = "value" if metric else s.field
                return
            raise PromptError(
                f"Two things to measure ({s.field!r} and {fld!r}); ask one at a time."
            )
        s.field = fld

    # -- 9. synonyms for what is measured -------------------------------------------------

    def synonyms(self) -> None:
        s = self.s
        v = self.v
        for i, t in enumerate(self.toks):
            w = t.low
            if t.used:
                continue
            if (w in ("cpu", "cpus", "processor", "load") and w != "load") or (
                w == "load" and not v.lookup("load")
            ):
                path = "cpu.percent" if "cpu.percent" in v.path_owners else None
                if path is None:
                    raise self._unknown(t.text, ("path",), "cpu (no sample has cpu.percent)")
                self._set_field(path, None)
                s.synonym = w
                self.use(i)
            elif w in ("memory", "mem", "ram", "rss", "footprint"):
                self._memory_field()
                s.synonym = w
                self.use(i)
            elif w in (
                "latency",
                "latencies",
                "response",
                "duration",
                "durations",
                "slow",
                "slowest",
            ):
                if w == "response" and self.low(i + 1) in ("time", "times"):
                    self.use(i + 1)
                metrics = v.names_containing("metric", "latency", "duration", "response")
                paths = v.paths_containing("latency", "duration", "_ms", "elapsed")
                if s.field is not None and s.field != "value":
                    pass  # "request_failed duration_ms": the path is named already
                elif metrics and (not s.names or s.kind != "event"):
                    self._assign(Term("metric", metrics[0]), metrics[0])
                    if len(metrics) > 1:
                        s.notes.append(f"{w} read as {metrics[0]}; also: {', '.join(metrics[1:])}")
                elif paths:
                    self._set_field(self._preferred_path(paths), None)
                else:
                    raise PromptError(
                        f"Nothing stored measures {w}; metrics: {v.sample_of('metric')}."
                    )
                s.synonym = s.synonym or w
                self.use(i)
            elif w in _ERROR_WORDS and not s.sessions_q:
                events = v.names_containing("event", "err", "fail", "exception", "crash")
                if events:
                    for e in events:
                        if e not in s.names:
                            s.names.append(e)
                    s.kind = "event"
                    s.synonym = w
                    self.use(i)
                elif metrics := v.names_containing("metric", "err", "fail"):
                    self._assign(Term("metric", metrics[0]), metrics[0])
                    s.synonym = w
                    self.use(i)

    def _memory_field(self) -> None:
        v = self.v
        stream = self.s.stream
        if stream is not None and stream != PREFERRED_STREAM:
            for p in ("mem.rss", "mem.used", "mem.percent"):
                if stream in v.path_owners.get(p, ()):
                    self._set_field(p, None)
                    return
        if "mem.rss" in v.path_owners:
            self._set_field("mem.rss", None)
            return
        paths = v.paths_containing("mem", "rss")
        if not paths:
            raise PromptError(f"No sample has a memory figure; data paths: {v.sample_of('path')}.")
        self._set_field(paths[0], None)

    def _preferred_path(self, paths: list[str]) -> str:
        return min(paths, key=lambda p: (not p.endswith("_ms"), len(p)))

    # -- 10. what is left ----------------------------------------------------------------

    def leftovers(self) -> None:
        for i, t in enumerate(self.toks):
            if t.used:
                continue
            w = t.low
            if w in _FILLER or w in _KEYWORDS or _number(w) is not None:
                continue
            if self._part_of_chosen(w):
                continue  # "http" of "http latency", once http_latency_ms was chosen
            prev = self.low(i - 1) if i else ""
            looks_like_name = t.quoted or bool(re.search(r"[\d_.\-:/@]", w))
            if looks_like_name or prev in ("of", "for", "on", "from", "at", "in"):
                raise self._unknown(t.text, None, repr(t.text))
            near = self.v.closest(t.text, None, 3)
            if near:
                raise self._unknown(t.text, None, repr(t.text))
            part = self._name_part(w) if self.s.field is None and not self.s.names else None
            if part is not None:
                self._assign(part, t.text)
                self.s.notes.append(f"read {t.text!r} as {part.kind} {part.value}")
                continue
            self.s.ignored.append(t.text)
        s = self.s
        subject_words = {"events", "event", "samples", "sample", "documents", "points"}
        if (
            s.ignored
            and s.field is None
            and not s.names
            and s.kind is None
            and not s.sessions_q
            and not subject_words & {t.low for t in self.toks}
        ):
            # Nothing else says what to measure: the ignored word probably did.
            raise self._unknown(s.ignored[0], None, repr(s.ignored[0]))

    def _part_of_chosen(self, word: str) -> bool:
        chosen = [*self.s.names, self.s.field or ""]
        return len(word) >= 2 and any(word in re.split(r"[_.\-]", name.lower()) for name in chosen)

    def _name_part(self, word: str) -> Term | None:
        """The one event or metric whose name has ``word`` as a part ("logins" -> user_login)."""
        stems = {
            word,
            word[:-1] if word.endswith("s") else word,
            word[:-2] if word.endswith("es") else word,
        }
        stems = {x for x in stems if len(x) >= 3}
        hits = [
            Term(kind, name)
            for kind, pool in _NAMED_POOLS(self.v)
            for name in pool
            if stems & set(re.split(r"[_.\-]", name.lower()))
        ]
        if len(hits) > 1:
            raise PromptError(
                f"{word!r} could be any of " + ", ".join(h.value for h in hits) + "; name one.",
                [h.value for h in hits],
            )
        return hits[0] if hits else None

    def _unknown(self, word: str, kinds: Iterable[TermKind] | None, what: str) -> PromptError:
        near = self.v.closest(word, kinds, 3)
        kind_list = list(kinds) if kinds is not None else None
        if near:
            hint = "; did you mean " + " or ".join(f"{n!r} ({k})" for n, k in near) + "?"
        elif kind_list and len(kind_list) == 1:
            hint = f"; known {kind_list[0]}s: {self.v.sample_of(kind_list[0])}"
        else:
            hint = (
                f"; known metrics: {self.v.sample_of('metric')}; events: {self.v.sample_of('event')};"
                f" hosts: {self.v.sample_of('host')}; data paths: {self.v.sample_of('path')}"
            )
        return PromptError(f"I don't know {what}{hint}", [n for n, _k in near])

    # -- driver ------------------------------------------------------------------------

    def parse(self) -> Plan:
        if not self.toks:
            raise PromptError("The prompt is empty; ask e.g. 'average cpu of web-1 today'.")
        self.join_names()
        self.fix_typos()
        self.times()
        self.buckets()
        self.thresholds()
        self.functions()
        self.groupings()
        self.rankings()
        words = self.session_words()
        self.names()
        self.s.sessions_q = self._is_sessions_question(words)
        if not self.s.sessions_q:
            self.synonyms()
            self._latest_or_list(words)
        self.leftovers()
        return _Builder(self.s, self.v, words, self.toks).build()

    def _is_sessions_question(self, words: set[str]) -> bool:
        s = self.s
        measured = (
            s.field is not None
            or s.names
            or s.fn not in (None, "count")
            or s.threshold is not None
            or bool(words & _MEASURE_WORDS)
        )
        if measured:
            return False
        mentions = bool(words & {"session", "sessions", "sess"}) or s.group == "session"
        about = bool(
            words
            & (
                _LIVE_WORDS
                | _ENDED_WORDS
                | _BAD_EXIT_WORDS
                | _START_WORDS
                | {"code", "when", "exit", "long", "duration"}
            )
        )
        if s.session is not None and about:
            return True
        if not mentions:
            return False
        # "count samples per session" is about documents; "events per session" too.
        if words & {"samples", "sample", "events", "event", "documents", "points"}:
            return False
        # "cpu per session" is about samples, "sessions per host" about sessions.
        measures = bool(
            words & {"cpu", "memory", "mem", "ram", "latency", "errors", "error", "failures"}
        )
        return not (measures and s.group == "session" and not about)

    def _latest_or_list(self, words: set[str]) -> None:
        s = self.s
        if s.fn is None and (words & _LATEST_WORDS or ("last" in words and not self._has_last_n())):
            s.latest = True
        if (
            s.fn is None
            and (words & _LIST_WORDS or words & _ORDER_WORDS)
            and (
                s.kind == "event"
                or words & {"events", "samples", "documents", "points", "records", "entries"}
            )
        ):
            s.listing = True
            for i, t in enumerate(self.toks):
                if (
                    t.low in ("last", "latest", "first", "recent", "newest", "show", "list")
                    and (n := self.num(i + 1)) is not None
                ):
                    s.limit = int(n)
                    self.use(i + 1)
                    break
                if (
                    _number(t.low) is not None
                    and not t.used
                    and self.low(i + 1) in ("most", "latest", "last", "recent", "newest")
                ):
                    s.limit = int(float(t.low))
                    self.use(i)
                    break
            if words & {"first", "earliest", "oldest"}:
                s.rank_desc = False

    def _has_last_n(self) -> bool:
        return any(
            t.low == "last" and i + 1 < len(self.toks) and _number(self.toks[i + 1].low) is not None
            for i, t in enumerate(self.toks)
        )


# Words that name something measured: a question with one is not about sessions.
_MEASURE_WORDS: Final = frozenset(
    {
        "cpu",
        "memory",
        "mem",
        "ram",
        "rss",
        "latency",
        "duration",
        "samples",
        "sample",
        "events",
        "event",
        "documents",
        "points",
    }
)


def _NAMED_POOLS(v: Vocabulary) -> tuple[tuple[TermKind, frozenset[str]], ...]:
    return (("event", v.events), ("metric", v.metrics))


_KEY_KINDS: Final[dict[str, tuple[TermKind, ...]]] = {
    "host": ("host",), "session": ("session",), "tag": ("tag",), "event": ("event",),
    "metric": ("metric", "stream"), "name": ("metric", "event", "stream"), "stream": ("stream",),
}  # fmt: skip

# Every word some matcher understands (not filler): never "ignored", never
# a misspelling of a name.
_KEYWORDS: Final = frozenset(
    [*_UNITS, *_FUNCS, *_SUPERLATIVES, *_GROUP_NOUNS, *_THRESHOLD_OPS, *_THAN_OPS,
     *_LIVE_WORDS, *_ENDED_WORDS, *_BAD_EXIT_WORDS, *_GOOD_EXIT_WORDS, *_START_WORDS,
     *_LATEST_WORDS, *_LIST_WORDS, *_ERROR_WORDS, *_BUCKET_WORDS, *_TIME_UNITS_MS, *_SIZE_UNITS,
     "today", "yesterday", "this", "last", "past", "since", "between", "ago", "percentile",
     "median", "cpu", "memory", "mem", "ram", "rss", "latency", "code", "exit", "first",
     "earliest", "oldest", "limit", "samples", "sample", "documents", "points", "than", "least",
     "which", "when", "tag", "tagged", "host", "session", "zero", "with", "without", "not",
     "no", "still", "long", "duration", "response", "time", "times", "week", "month", "hour",
     "day", "minute", "hours", "days", "minutes", "records", "entries", "many", "how", "count"]
)  # fmt: skip
# Words a typo is corrected to: the ones people mistype in questions.
_TYPO_TARGETS: Final = tuple(
    sorted({w for w in _KEYWORDS if len(w) >= 4 and w.isalpha()} - {"fewer", "over"})
)


_TYPO_INDEX: Final = DeleteIndex(_TYPO_TARGETS)


@functools.lru_cache(maxsize=4096)
def _keyword_typo(word: str) -> str | None:
    """The keyword ``word`` misspells: one edit, two from seven letters on."""
    near = _TYPO_INDEX.near(word, 1 if len(word) < 7 else 2)
    return near[0][1] if near else None


class _Builder:
    """Turns the parsed state into one ``Plan``."""

    def __init__(self, s: _State, v: Vocabulary, words: set[str], toks: list[_Tok]) -> None:
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
            return self.sessions_plan()
        self.resolve_stream()
        if (
            s.latest
            and s.fn is None
            and s.threshold is None
            and not s.listing
            and (s.field or s.names)
        ):
            return self.latest_plan()
        if s.listing or (
            s.fn is None
            and s.field is None
            and not s.names
            and s.group is None
            and s.threshold is None
            and (self.words & _LIST_WORDS or s.kind)
        ):
            return self.list_plan()
        return self.aggregate_plan()

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
        if s.rank_desc is not None or s.limit is not None:
            params["order"] = "-value" if s.rank_desc is not False else "value"
            params["limit"] = str(s.limit or _DEFAULT_TOP)
        return Plan("/aggregate", params, names, threshold, notes=tuple(self.notes))

    def threshold(self, fld: str | None) -> Threshold | None:
        s = self.s
        if s.threshold is None:
            return None
        op, n, unit = s.threshold
        target = fld
        if target is None or (target == "value" and s.kind == "event"):
            # "request_failed longer than 100 ms": the event's duration
            owned = sorted(self.v.catalog.paths.get(s.names[0], ())) if len(s.names) == 1 else []
            timed = [
                p
                for p in owned
                if any(x in p for x in ("_ms", "duration", "latency", "elapsed", "time"))
            ]
            if unit in _TIME_UNITS_MS and timed:
                target = self._preferred(timed)
            elif len(owned) == 1:
                target = owned[0]
            elif target is None:
                raise PromptError(f"Over {n:g} of what? Name a metric or a data path.")
        assert target is not None
        if unit in _TIME_UNITS_MS:
            scale = _TIME_UNITS_MS[unit]
            base_ms = (
                1
                if re.search(r"(_ms|millis)", target)
                else 1000
                if re.search(r"(_s|seconds)$", target)
                else 1
            )
            n = n * scale / base_ms
        elif unit in _SIZE_UNITS:
            n = n * _SIZE_UNITS[unit]
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
        params["limit"] = str(min(s.limit or _DEFAULT_LIST, MAX_LIMIT))
        return Plan("/metrics", params, names, notes=tuple(self.notes))

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
        negated = bool(w & {"not", "never", "haven't", "hasn't", "still", "yet"})
        if w & _LIVE_WORDS - {"current"} or (w & {"still"} and w & _START_WORDS):
            params["connected"] = "true"
        elif w & {"disconnected", "offline", "dead", "gone", "lost"}:
            params["connected"] = "false"
        exit_word = w & (_BAD_EXIT_WORDS | _GOOD_EXIT_WORDS) or (
            "exit" in w and "code" in w and s.session is None
        )
        if s.session is None and (w & (_ENDED_WORDS - {"end", "exit"}) or exit_word):
            params["ended"] = "false" if negated and not exit_word else "true"
        if w & _BAD_EXIT_WORDS or (w & {"zero"} and w & {"non", "not"}):
            params["exit_code"] = "!0"
            params["ended"] = "true"
        elif w & _GOOD_EXIT_WORDS or ("zero" in w and "exit" in w):
            params["exit_code"] = "0"
            params["ended"] = "true"
        code = self._exit_code()
        if code is not None:
            params["exit_code"] = str(code)
            params["ended"] = "true"
        if s.session is None and s.group == "host":
            params["by"] = "host"
            return Plan(
                "/sessions", params, answer="count_by_host", group="host", notes=tuple(self.notes)
            )
        if s.session is not None:
            return Plan("/sessions", params, answer="one", notes=tuple(self.notes))
        if s.fn == "count":
            return Plan("/sessions", params, answer="count", notes=tuple(self.notes))
        params["limit"] = str(s.limit or 100)
        return Plan("/sessions", params, notes=tuple(self.notes))

    def _exit_code(self) -> int | None:
        toks = [t.low for t in self.toks]
        for i, w in enumerate(toks):
            if w in ("code", "exit", "exited", "status") and i + 1 < len(toks):
                j = i + 1 + (toks[i + 1] in ("of", "with", "=", "code", "is"))
                if j < len(toks) and toks[j].lstrip("-").isdigit():
                    return int(toks[j])
        return None


def parse_prompt(prompt: str, now: datetime, vocab: Vocabulary) -> Plan:
    """The request ``prompt`` asks for, relative to ``now``, in the words of ``vocab``.

    Raises ``PromptError`` naming what was not understood, with the closest
    known names.
    """
    if len(prompt) > MAX_PROMPT:
        raise PromptError(f"The prompt is too long ({MAX_PROMPT} characters at most).")
    return _Parser(" ".join(prompt.split()), now, vocab).parse()
