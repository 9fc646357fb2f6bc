"""Questions as support engineers type them -> the ``/aggregate``, ``/metrics`` or
``/sessions`` request that answers them, for ``GET /query``.

No language model and no grammar library: the prompt is a bag of short
phrases in any order ("avg cpu of web-1 per hour today" = "today, hourly avg
cpu on web-1"), so a grammar would spend its rules on word order that carries
no meaning. Instead each kind of phrase (a time window, a bucket, a threshold,
a function, a ranking, a filter, the thing measured) is found by its own
small matcher, which marks the words it used; the words left over must be
filler, or a name from the store's vocabulary (``nl_vocab``), or the prompt is
refused with the closest known names.

Chosen by measurement (42 prompts, this machine): this parser takes a median
of ~70 us per prompt, names looked up and the plan built (``make bench``). A
lark grammar of the same phrases (``phrase+``, names as a NAME terminal since
lark cannot look them up) took ~370 us just to parse with LALR, and refused 1
prompt in 10 on terminal collisions ("over" is a window and a threshold);
Earley parsed them all but took ~11 ms. Modules: ``nl_lexicon`` (the words),
``nl_vocab`` (the store's names), ``nl_plan`` (the request built), ``nl_run``
(running it).

Pure functions of (prompt, now, vocabulary): no I/O, no clock reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .nl_lexicon import (
    ACTIVITY_WORDS,
    BAD_EXIT_WORDS,
    BUCKET_NOUNS,
    BUCKET_WORDS,
    CLOCK_NUMBER_RE,
    CLOCK_RE,
    DATE_RE,
    DAY_PARTS,
    ENDED_WORDS,
    ENGLISH,
    ERROR_WORDS,
    EXCLUDE_WORDS,
    FIELD_EQ_RE,
    FILLER,
    FUNCS,
    GONE_WORDS,
    GROUP_NOUNS,
    HEALTH_WORDS,
    HOST_NOUNS,
    IDENT_RE,
    KEY_KINDS,
    KEYWORDS,
    LATEST_WORDS,
    LIST_WORDS,
    LIVE_WORDS,
    MEASURE_WORDS,
    NUM_RE,
    NUM_UNIT_RE,
    NUMBER_WORDS,
    OP_SPLIT_RE,
    ORDER_WORDS,
    ORDINAL_RE,
    PARTICLES,
    PCT_RE,
    PERCENTILES,
    SESSION_LIFE_WORDS,
    SIZE_UNITS,
    SORT_WORDS,
    START_WORDS,
    SUPERLATIVES,
    THAN_OPS,
    THRESHOLD_OPS,
    TIME_UNITS_MS,
    UNITS,
    USER_VERBS,
    VAGUE_COUNTS,
    WEEKDAYS,
    WINDOW_WORDS,
    keyword_typo,
)
from .nl_plan import (
    DEFAULT_TOP,
    EXAMPLES,
    MAX_PROMPT,
    MAX_SPAN_S,
    ParseState,
    Plan,
    PromptError,
    Threshold,
    build_plan,
)
from .nl_vocab import PREFERRED_STREAM, Term, TermKind, Vocabulary

#: How much a relative window ("the last 3 hours") may grow when its start is
#: rounded down to a minute or hour edge: a ragged start costs a raw read of
#: every series over up to a minute (most of a /query's time at a million
#: samples), and 1/30 of the window is below what such a question means.
_ROUNDING: Final = 1 / 30

#: Words that can start a named day or part of one (``_named_day``).
_DAY_WORDS: Final = frozenset({*WEEKDAYS, *DAY_PARTS, "weekend", "weekends", "overnight"})
#: Tokens without a letter or digit that mean something (operators, "per");
#: any other run of punctuation ("-", "...", "--") only separates clauses.
_SYMBOLS: Final = frozenset({">", ">=", "<", "<=", "=", "==", "/", "#", "%"})
#: Words before a duration that make it a window when it is hours or more
#: ("avg cpu over 2 hours", "errors for 3 days").
_SPAN_WORDS: Final = frozenset({"over", "for", "during", "within", "throughout"})
#: Phrases that ask for the last value: "at the moment", "as of now", "at the end".
_LATEST_PHRASES: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "at": (
        ("at", "the", "end"),
        ("at", "the", "moment"),
        ("at", "this", "moment"),
        ("at", "present"),
        ("at", "this", "point"),
        ("at", "this", "time"),
    ),
    "in": (("in", "the", "end"),),
    "by": (("by", "the", "end"),),
    "as": (("as", "of", "now"), ("as", "of", "right", "now"), ("as", "we", "speak")),
    "this": (("this", "instant"),),
}  # fmt: skip  (by first word: a prompt's words are looked up, not every phrase tried)
#: Error words that are verbs of what failed: of a session, a bad exit.
_FAIL_VERBS: Final = frozenset({"fail", "fails", "failed", "failing"})
#: "slowest X" with nothing ranked: its longest duration ("fastest": shortest).
_TIMED_RANKS: Final = {"slowest": "max", "fastest": "min"}

__all__ = ["EXAMPLES", "MAX_PROMPT", "Plan", "PromptError", "Threshold", "parse_prompt"]


@dataclass(slots=True)
class _Tok:
    text: str  # as written, for names (the store's names are case-sensitive)
    low: str
    used: bool = False
    quoted: bool = False
    at: float | None = None  # a time of day on a named day ("yesterday 3pm"), merged
    sentence: int = 0  # which sentence (split at . ; ! ?) it is in: a ticket's story vs its ask


def _tokenize(prompt: str) -> list[_Tok]:
    out: list[_Tok] = []
    sentence, ended = 0, False
    for m in re.finditer(r'"([^"]*)"|\'([^\']*)\'|(\S+)', prompt):
        sentence += ended
        ended = (m.group(3) or "").rstrip(")]}`\"'")[-1:] in (".", ";", "!", "?")
        if m.group(3) is None:
            text = m.group(1) if m.group(1) is not None else m.group(2)
            if text:
                out.append(_Tok(text, text.lower(), quoted=True, sentence=sentence))
            continue
        word = m.group(3).strip("?,;!()[]{}`").rstrip(".:")
        if word.lower().endswith("'s"):
            word = word[:-2]
        if not word or not (word in _SYMBOLS or any(c.isalnum() for c in word)):
            continue  # a dash or an ellipsis between clauses: "quick one - could you..."
        if (eq := FIELD_EQ_RE.match(word)) is not None:
            out.append(_Tok(eq.group(1), eq.group(1).lower(), sentence=sentence))
            out.append(_Tok(eq.group(2), eq.group(2).lower(), sentence=sentence))
            continue
        if (op := OP_SPLIT_RE.match(word)) is not None:
            out.append(_Tok(op.group(1), op.group(1), sentence=sentence))
            word = op.group(2)
        low = word.lower()
        if (nu := NUM_UNIT_RE.match(low)) is not None and not ORDINAL_RE.match(low):
            unit = nu.group(2)
            if unit in UNITS or unit in TIME_UNITS_MS or unit in SIZE_UNITS or unit == "%":
                out.append(_Tok(nu.group(1), nu.group(1), sentence=sentence))
                out.append(_Tok(unit, unit, sentence=sentence))
                continue
        if low.endswith("%") and (low == "%" or low[:-1].isalpha()):
            # "cpu%" -> "cpu percent" (then cpu.percent), "memory in %"
            if low != "%":
                out.append(_Tok(word[:-1], low[:-1], sentence=sentence))
            out.append(_Tok("percent", "percent", sentence=sentence))
            continue
        if low in _HALF_DAY and out and CLOCK_NUMBER_RE.match(out[-1].low):
            # "10 am", "3 p.m.": one time of day, as "10am" is
            prev = out.pop()
            out.append(_Tok(f"{prev.text} {word}", prev.low + _HALF_DAY[low], sentence=sentence))
            continue
        out.append(_Tok(word, low, sentence=sentence))
    return out


#: A half of the day written apart from its hour ("10 am", "3 p.m."; the
#: tokenizer has already dropped a last ".").
_HALF_DAY: Final = {"am": "am", "pm": "pm", "a.m": "am", "p.m": "pm"}


def _number(low: str) -> float | None:
    if NUM_RE.match(low):
        return float(low)
    return None


class _Parser:
    def __init__(self, prompt: str, now: datetime, vocab: Vocabulary) -> None:
        self.toks = _tokenize(prompt)
        self.now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        self.v = vocab
        self.s = ParseState()
        self._at = 0  # the token a time window being read starts at (``times``)
        self._window_sentence = -1  # the sentence the window read came from

    # -- helpers -----------------------------------------------------------------

    def low(self, i: int) -> str:
        return self.toks[i].low if 0 <= i < len(self.toks) and not self.toks[i].used else ""

    def use(self, *idx: int) -> None:
        for i in idx:
            self.toks[i].used = True

    def num(self, i: int) -> float | None:
        w = self.low(i)
        n = _number(w)
        if n is None and w in NUMBER_WORDS and w not in ("a", "an"):
            return float(NUMBER_WORDS[w])
        return n

    def set_once(self, attr: str, value: Any, what: str) -> None:
        old = getattr(self.s, attr)
        if old is not None and old != value:
            raise PromptError(f"Two different {what}s ({old!r} and {value!r}); give one.")
        setattr(self.s, attr, value)

    # -- 1. merge multi-word names: "queue depth" -> queue_depth ----------------------

    def join_names(self) -> None:
        toks = self.toks
        known = self.v.lookup
        begins = self.v.name_prefixes
        i = 0
        while i < len(toks):
            # (every join below starts with this word, or with the next one for
            # "user cpu" -> cpu.user: neither begins a name, nothing to join)
            if toks[i].low not in begins and (i + 1 >= len(toks) or toks[i + 1].low not in begins):
                i += 1
                continue
            for n in (3, 2):
                if i + n > len(toks) or any(t.quoted for t in toks[i : i + n]):
                    continue
                parts = [t.low for t in toks[i : i + n]]  # lookups ignore case
                joins = [sep.join(parts) for sep in ("_", ".", "-", "")]
                if n == 2 and not known(parts[0]):
                    joins.append(f"{parts[1]}.{parts[0]}")  # "user cpu" -> cpu.user
                hit = next((j for j in joins if known(j)), None)
                if hit is not None:
                    text = known(hit)[0].value  # the name as stored
                    toks[i : i + n] = [_Tok(text, hit, sentence=toks[i].sentence)]
                    break
            i += 1

    def join_words(self) -> None:
        """One token for what people split: "non zero" -> "non-zero", "p 95" -> "p95"."""
        toks = self.toks
        for i in range(len(toks) - 2, -1, -1):
            a, b = toks[i].low, toks[i + 1].low
            if (a, b) in (("non", "zero"), ("non", "0")) or (a == "p" and b in PERCENTILES):
                word = f"{a}-zero" if a == "non" else f"p{b}"
                toks[i : i + 2] = [_Tok(word, word, sentence=toks[i].sentence)]

    # -- 2. keyword typos: "avrage" -> "average" ------------------------------------------

    def fix_typos(self) -> None:
        for t in self.toks:
            w = t.low
            if t.quoted or not w.isalpha() or len(w) < 4 or w in KEYWORDS or w in FILLER:
                continue
            if w in ENGLISH:  # a real word, not a slip: "like" is no "live"
                continue
            if self.v.lookup(w) or w in self.v.leaves:  # a name, or a path's last part
                continue
            if w.endswith("s") and (w[:-1] in KEYWORDS or self.v.lookup(w[:-1])):
                continue
            best = keyword_typo(w)
            if best is not None:
                self.s.notes.append(f"read {t.text!r} as {best!r}")
                t.low = best
                t.text = best

    # -- 3. time windows ------------------------------------------------------------------

    def _span(self, i: int) -> tuple[float, int] | None:
        """A duration at i: "15 minutes", "hour" (= 1 hour), "an hour and a half",
        "two and a half hours" -> (seconds, words)."""
        w = self.low(i)
        n = self.num(i)
        k = i + 1
        if w in ("a", "an") and self.low(i + 1) in VAGUE_COUNTS:
            w, k = self.low(i + 1), i + 2  # "a couple of hours", "a few minutes"
        if w in VAGUE_COUNTS:
            n = float(VAGUE_COUNTS[w])
            k += self.low(k) == "of"
        elif n is None and w in ("a", "an"):
            n = 1.0
        if n is None and w in UNITS and len(w) > 1:
            n, k = 1.0, i  # "last hour"
        elif n is not None and self._and_a_half(k):
            n, k = n + 0.5, k + 3
        unit = self.low(k)
        if n is None or unit not in UNITS:
            return None
        seconds = n * UNITS[unit]
        if self._and_a_half(k + 1):
            return seconds + UNITS[unit] / 2, k + 4 - i
        return seconds, k + 1 - i

    def _long_span(self, i: int) -> bool:
        """A duration of hours or more at i ("2 hours", "a couple of days"): after
        "over" or "for" a time window; shorter ones ("over 2 minutes") are
        durations of what is measured, thresholds."""
        span = self._span(i)
        return span is not None and any(
            UNITS.get(self.low(j), 0) >= 3600 for j in range(i, i + span[1])
        )

    def _named_day(self, i: int) -> tuple[float, float, int] | None:
        """A day or part of one named at i: "friday", "last monday", "the
        weekend", "yesterday afternoon", "last night", "overnight", "this
        evening" -> (start, end, words). Days are UTC; a part is said in a note."""
        k = i + (self.low(i) in ("on", "over", "during"))
        k += self.low(k) == "the"
        w, nxt = self.low(k), self.low(k + 1)
        last = w == "last"
        if last or w == "this":
            k, w, nxt = k + 1, nxt, self.low(k + 2)
        if not (w in _DAY_WORDS or nxt in DAY_PARTS):
            return None  # the common case, before any date arithmetic
        today = self.now.replace(hour=0, minute=0, second=0, microsecond=0)
        if w in WEEKDAYS:
            back = (today.weekday() - WEEKDAYS[w]) % 7 or (7 if last else 0)
            start = today - timedelta(days=back)
            return start.timestamp(), (start + timedelta(days=1)).timestamp(), k + 1 - i
        if w in ("weekend", "weekends"):
            back = (today.weekday() - 5) % 7 + (7 if last and today.weekday() >= 5 else 0)
            start = today - timedelta(days=back)
            return start.timestamp(), (start + timedelta(days=2)).timestamp(), k + 1 - i
        if w == "overnight" or (last and w == "night"):
            day, part = today - timedelta(days=1), "night"
        elif w in ("yesterday", "this") or (k > i and self.low(k - 1) == "this"):
            part = nxt if w in ("yesterday", "this") else w
            if part not in DAY_PARTS or (self.low(k - 1) == "this" and part == "morning"):
                return None  # "this morning" is today so far
            day = today - timedelta(days=1 if w == "yesterday" else 0)
            k += w in ("yesterday", "this")
        else:
            return None
        lo, hi = DAY_PARTS[part]
        self.s.notes.append(f"{part} read as {lo:02d}:00-{hi % 24:02d}:00 UTC")
        start = day + timedelta(hours=lo)
        return start.timestamp(), (day + timedelta(hours=hi)).timestamp(), k + 1 - i

    def _note_vague(self, lo: int, hi: int) -> None:
        """Say which number a vague count of the window just used was read as."""
        for t in self.toks[lo:hi]:
            if t.low in VAGUE_COUNTS:
                self.s.notes.append(f"{t.text!r} read as {VAGUE_COUNTS[t.low]}")

    def _and_a_half(self, i: int) -> bool:
        return self.low(i) == "and" and self.low(i + 1) == "a" and self.low(i + 2) == "half"

    def _instant(self, i: int) -> float | None:
        w = self.low(i)
        if w and self.toks[i].at is not None:
            return self.toks[i].at
        if (hm := self._time_of_day(w)) is not None:
            return self._clock(*hm)
        if not DATE_RE.match(w):
            return None
        try:
            dt = datetime.fromisoformat(self.toks[i].text.upper().replace(" ", "T"))
        except ValueError:
            raise PromptError(
                f"{self.toks[i].text!r} is not a date I can read (use 2026-11-20 or RFC 3339)."
            ) from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()

    def _time_of_day(self, w: str) -> tuple[int, int] | None:
        """(hour, minute) of "10:00", "9am", "2:30pm", "noon", "midnight"; else None."""
        if w in ("noon", "midday", "midnight"):
            return (0 if w == "midnight" else 12), 0
        clock = CLOCK_RE.match(w)
        if clock is None or not (clock.group(2) or clock.group(3)):
            return None
        hour, minute, half = clock.groups()
        h, m = int(hour), int(minute or 0)
        if half is not None:
            if not 1 <= h <= 12:
                raise PromptError(f"{hour}{half} is not a time of day.")
            h = h % 12 + (12 if half == "pm" else 0)
        if h > 23 or m > 59:
            raise PromptError(f"{hour}:{minute} is not a time of day.")
        return h, m

    def _clock(self, h: int, m: int, days_back: int | None = None) -> float:
        """A time of day (UTC) ``days_back`` days ago; by default today's, or
        yesterday's if today's is still ahead."""
        at = self.now.replace(hour=h, minute=m, second=0, microsecond=0)
        if days_back is not None:
            at -= timedelta(days=days_back)
        elif at > self.now:
            at -= timedelta(days=1)
        if "times of day are UTC" not in self.s.notes:
            self.s.notes.append("times of day are UTC")
        return at.timestamp()

    def _day_times(self) -> None:
        """Merge "yesterday 3pm", "today at 9:30", "yesterday noon", "3pm
        yesterday" into one token at that instant, for "since", "between",
        "from", "until"."""
        toks = self.toks
        i = 0
        while i < len(toks) - 1:
            w = toks[i].low
            j = i + 1 + (toks[i + 1].low == "at")
            if (
                w in ("yesterday", "today")
                and j < len(toks)
                and (hm := self._time_of_day(toks[j].low)) is not None
            ):
                day, first, last = w, i, j
            elif (
                toks[i + 1].low in ("yesterday", "today")
                and (hm := self._time_of_day(w)) is not None
            ):  # the time first: "since 3pm yesterday"
                day, first, last = toks[i + 1].low, i, i + 1
            else:
                i += 1
                continue
            text = " ".join(t.text for t in toks[first : last + 1])
            at = self._clock(*hm, days_back=1 if day == "yesterday" else 0)
            toks[first : last + 1] = [_Tok(text, text.lower(), at=at, sentence=toks[i].sentence)]
            i += 1

    def _recent(self, seconds: float) -> None:
        """A window from ``seconds`` ago to now: its start rounded down to a
        tier edge when that changes the window by at most ``_ROUNDING`` of
        it, so the stored minute or hour totals answer it without reading the
        raw rows at a ragged edge. ``interpreted`` shows the start it used."""
        start = (self.now - timedelta(seconds=seconds)).timestamp()
        for edge in (3600, 60):
            rounded = start // edge * edge
            if rounded != start and edge <= seconds * _ROUNDING:
                self.s.notes.append(
                    f"the window starts {datetime.fromtimestamp(rounded, UTC):%H:%M} UTC, "
                    f"rounded down to the {'hour' if edge == 3600 else 'minute'}"
                )
                start = rounded
                break
        self._from(start)

    def _from(self, ts: float, to: float | None = None) -> None:
        sentence = self.toks[self._at].sentence
        if self.s.ts_from is not None:
            if sentence == self._window_sentence:
                raise PromptError("Two time windows; give one.")
            # In different sentences: a ticket tells its story first ("a ticket
            # from this morning; ...") and asks last, so the later one is the ask.
            self.s.notes.append(
                "two time windows in different sentences: the later one is used"
                f" ({' '.join(t.text for t in self.toks if t.sentence == sentence)[:60]!r})"
            )
        self._window_sentence = sentence
        self.s.ts_from = ts
        self.s.ts_to = to

    # -- 2b. what no endpoint can answer: exclusions, value ranges ------------------

    def refusals(self) -> None:
        for i, t in enumerate(self.toks):
            w = t.low
            j = None
            if w in EXCLUDE_WORDS or (w == "other" and self.low(i + 1) == "than"):
                j = i + 1 + (w == "other")
            elif w == "not" and self.low(i + 1) in ("on", "in", "for", "from", "at", "of"):
                j = i + 2
            if j is not None and j < len(self.toks) and self.v.lookup(self.toks[j].text):
                raise PromptError(
                    f"I cannot leave out {self.toks[j].text!r}: ask for what you want by name,"
                    " or group ('by host') and read past it."
                )
            if (
                w == "between"
                and _number(self.low(i + 1)) is not None
                and self.low(i + 2) == "and"
                and _number(self.low(i + 3)) is not None
            ):
                raise PromptError(
                    "A range of values is two thresholds; ask one at a time"
                    f" ('over {self.toks[i + 1].text}' or 'under {self.toks[i + 3].text}')."
                )

    def times(self) -> None:
        now = self.now
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self._day_times()
        i = 0
        while i < len(self.toks):
            w = self.low(i)
            self._at = i
            if w in WINDOW_WORDS or (w in _SPAN_WORDS and self._long_span(i + 1)):
                # "avg cpu over 2 hours" is a window, not cpu > 2
                span = self._span(i + 1)
                if span is not None:
                    seconds, n = span
                    if not 0 < seconds <= MAX_SPAN_S:
                        raise PromptError("The time window must be between 1 second and 100 years.")
                    self._recent(seconds)
                    self.use(*range(i, i + 1 + n))
                    self._note_vague(i, i + 1 + n)
                    if self.low(i - 1) == "the":
                        self.use(i - 1)
                    i += 1 + n
                    continue
            if (
                w == "since"
                or w in WEEKDAYS
                or w in DAY_PARTS
                or w
                in ("last", "this", "yesterday", "over", "on", "during", "weekend", "overnight")
            ) and (named := self._named_day(i + (w == "since"))) is not None:
                start, end, n = named
                if w == "since":
                    self._from(start)
                else:
                    self._from(start, end if end < now.timestamp() else None)
                self.use(*range(i, i + n + (w == "since")))
            elif w in ("today", "tonight") or (
                w == "this" and self.low(i + 1) in ("morning", "day")
            ):
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
                    self._recent(span[0])
                    self.use(*range(i, i + 2 + span[1]))
                    self._note_vague(i, i + 2 + span[1])
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
                self._recent(span[0])
                self.use(*range(i, i + 1 + span[1]))
                self._note_vague(i, i + 1 + span[1])
            elif w and (at := self.toks[i]).at is not None:
                raise PromptError(
                    f"{at.text!r} is an instant, not a window: ask 'since {at.text}'"
                    f" or 'between {at.text} and ...'."
                )
            i += 1

    # -- 4. buckets and rate ------------------------------------------------------------

    def buckets(self) -> None:
        for i in range(len(self.toks)):
            w = self.low(i)
            if w in BUCKET_WORDS:
                self.set_once("bucket", BUCKET_WORDS[w], "bucket")
                self.use(i)
            elif w in ("per", "every", "each", "by", "/", "in") or w.startswith("per-"):
                j = i + 1
                if w.startswith("per-"):
                    j, unit_word = i, w[4:]
                else:
                    unit_word = self.low(j)
                n = 1.0
                if (k := self.num(j)) is not None and self.low(j + 1) in UNITS:
                    n, j = k, j + 1
                    unit_word = self.low(j)
                if unit_word not in UNITS or (w == "in" and self.low(j + 1) not in BUCKET_NOUNS):
                    continue
                seconds = int(n * UNITS[unit_word])
                if seconds == 1 and w in ("per", "/"):
                    self.s.fn = self.s.fn or "rate"  # "errors per second" is a rate
                    self.s.fn_word = self.s.fn_word or "per second"
                else:
                    self.set_once("bucket", seconds, "bucket")
                self.use(*range(i, j + 1))
                if w == "in":
                    self.use(j + 1)
            elif (
                self.low(i + 2) in BUCKET_NOUNS  # cheapest test first: this runs per word
                and self.low(i + 1) in UNITS
                and (k := self.num(i)) is not None
            ):
                # "cpu 10 min buckets", "p95 latency at 30 minute intervals"
                self.set_once("bucket", int(k * UNITS[self.low(i + 1)]), "bucket")
                self.use(i, i + 1, i + 2, *((i - 1,) if self.low(i - 1) in ("at", "into") else ()))
            elif w in ("bucket", "buckets", "interval", "intervals") and self.low(i + 1) in (
                "of",
                "=",
            ):
                if (k := self.num(i + 2)) is not None and self.low(i + 3) in UNITS:
                    self.set_once("bucket", int(k * UNITS[self.low(i + 3)]), "bucket")
                    self.use(i, i + 1, i + 2, i + 3)
            elif w.endswith("-minute") or w.endswith("-hour") or w.endswith("-second"):
                head, _, unit = w.rpartition("-")
                if _number(head) is not None and self.low(i + 1) in BUCKET_NOUNS:
                    self.set_once("bucket", int(float(head) * UNITS[unit]), "bucket")
                    self.use(i, i + 1)

    # -- 5. thresholds -----------------------------------------------------------------

    def thresholds(self) -> None:
        for i in range(len(self.toks)):
            w = self.low(i)
            op, j = None, i + 1
            if w in THRESHOLD_OPS:
                op = THRESHOLD_OPS[w]
            elif w in THAN_OPS and self.low(i + 1) == "than":
                op, j = THAN_OPS[w], i + 2
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
            if self.low(j) in ("half", "quarter") and self.low(j + 1) in ("a", "an"):
                j += 1  # "half a second"
            unit = self.low(j + 1)
            used = [i, *range(i + 1, j + 1)]
            if unit in TIME_UNITS_MS or unit in SIZE_UNITS or unit in ("%", "percent", "m"):
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
            if (m := PCT_RE.match(w)) is not None:
                self._pct(m.group(1), i, i)
            elif (m := ORDINAL_RE.match(w)) is not None and self.low(i + 1) in (
                "percentile",
                "pct",
                "perc",
            ):
                self._pct(m.group(1), i, i + 1)
            elif (
                (m := ORDINAL_RE.match(w)) is not None
                and m.group(1) in PERCENTILES
                and m.group(1) != "50"
                and self.low(i + 1) not in UNITS
            ):
                self._pct(m.group(1), i)  # "latency 95th": the percentile, said short
            elif w in ("percentile", "pct") and self.num(i + 1) is not None:
                self._pct(str(int(self.num(i + 1) or 0)), i, i + 1)
            elif _number(w) is not None and self.low(i + 1) in ("percentile", "pctl"):
                self._pct(str(int(float(w))), i, i + 1)
            elif w == "how" and self.low(i + 1) in ("many", "often"):
                self._fn("count", "how many", i, i + 1)
            elif w == "how" and self.low(i + 1) in ("fast", "quickly"):
                self._fn("rate", "how fast", i, i + 1)  # "how fast is errors_total growing"
            elif w in ("number", "amount", "count") and self.low(i + 1) == "of":
                self._fn("count", w, i, i + 1)
            elif w in ("#",):
                self._fn("count", w, i)
            elif w == "rate" or (w == "per" and self.low(i + 1) in ("sec", "second", "s")):
                self._fn("rate", w, i)
            elif w in FUNCS and w not in SUPERLATIVES and w != "number":
                self._fn(FUNCS[w], w, i)

    def _pct(self, digits: str, *idx: int) -> None:
        fn = PERCENTILES.get(digits)
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
                (
                    w in ("which", "what", "whats", "what's")
                    # "any host over 400M rss?" asks which ("did any session crash": a
                    # sessions question, no threshold)
                    or (w == "any" and self.s.threshold is not None)
                )
                and self.low(i + 1) in GROUP_NOUNS
                and not self._is_value(i + 2)
            ):
                if self.low(i + 1) in ("metric", "metrics"):
                    continue
                self.set_once("group", GROUP_NOUNS[self.low(i + 1)], "grouping")
                self.s.singular_rank = not self.low(i + 1).endswith("s")
                self.use(i, i + 1)
        for i in range(len(toks)):
            w = self.low(i)
            if w == "min" and i > 0 and _number(toks[i - 1].low) is not None:
                continue  # "10 min" (a window or bucket not read as one): minutes, not the minimum
            if self.s.rank_desc is None and w in SORT_WORDS and self._group_noun_near(i):
                self.s.rank_desc, self.s.rank_word = True, "top"  # all of them, highest first
                self.use(i)
                continue
            if self.s.rank_desc is None and (
                w in ("top", "bottom")
                or (
                    w in SUPERLATIVES
                    and not grouped
                    and (self._group_noun_near(i) or self._uses_near())
                    and self.low(i + 1) not in ("recent", "recently", "latest")  # a listing
                )
            ):
                n = self.num(i + 1)
                if n is None and i > 0 and not self.toks[i - 1].used:
                    n = self.num(i - 1)  # "5 busiest sessions"
                    if n is not None and self.low(i + 1) in GROUP_NOUNS:
                        self.s.limit = int(n)
                        self.use(i - 1)
                    n = None
                self.s.rank_desc = SUPERLATIVES[w]
                self.s.rank_word = w
                self.use(i)
                if n is not None and (w in ("top", "bottom") or self.low(i + 2) in GROUP_NOUNS):
                    self.s.limit = int(n)  # "top 3", "lowest 3 sessions"
                    self.use(i + 1)
            elif w in SUPERLATIVES and w in FUNCS:
                self._fn(FUNCS[w], w, i)  # "max cpu by host", "highest cpu on web-1"
        if self.s.rank_desc is None:
            return
        # The grouped noun: "top 5 hosts", "host with the highest cpu", "busiest host".
        if self.s.group is None:
            for i in range(len(toks)):
                w = self.low(i)
                if (
                    w in GROUP_NOUNS
                    and not self._is_value(i + 1)
                    and w not in ("metric", "metrics")
                ):
                    self.s.group = GROUP_NOUNS[w]
                    self.s.singular_rank = not w.endswith("s")
                    self.use(i)
                    n = self.num(i - 1) if i > 0 and not self.toks[i - 1].used else None
                    if n is not None and self.s.limit is None and w.endswith("s"):
                        self.s.limit = int(n)  # "3 sessions with the highest p90 rss"
                        self.use(i - 1)
                    break
            else:
                if not self._uses_near():
                    # "highest cpu" with nothing to rank: the function max/min.
                    if self.s.rank_word in FUNCS and self.s.fn is None:
                        self._fn(FUNCS[self.s.rank_word], self.s.rank_word)
                    self.s.rank_desc = None
                    return
        if self.s.limit is None:
            self.s.limit = 1 if self.s.singular_rank else DEFAULT_TOP  # "top host": the one

    def _uses_near(self) -> bool:
        """ "What's using the most cpu": the users are the sessions (processes)."""
        if any(t.low in USER_VERBS for t in self.toks) and self.s.group is None:
            self.s.group = "session"
            self.s.singular_rank = True
            return True
        return False

    def _group_noun_near(self, i: int) -> bool:
        if self.s.group is not None:
            return True
        window = [self.low(j) for j in range(max(0, i - 5), min(len(self.toks), i + 5)) if j != i]
        return any(w in GROUP_NOUNS and w not in ("metric", "metrics") for w in window) or any(
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
            bool(IDENT_RE.fullmatch(self.toks[i].text))
            and any(c in w for c in "-_.0123456789:")
            and not w.isdigit()
        )

    def groupings(self) -> None:
        for i in range(len(self.toks)):
            w = self.low(i)
            if w in ("by", "per", "each", "which", "what") and self.low(i + 1) in ("tag", "tags"):
                raise PromptError(
                    "I can group by host, session or name, not by tag; "
                    "filter by one instead ('avg cpu tagged prod')."
                )
            j = None
            if w in ("by", "per", "each", "across") and self.low(i + 1) in GROUP_NOUNS:
                j = i + 1
            elif (
                w in ("for", "of")
                and self.low(i + 1) in ("each", "every", "all")
                and self.low(i + 2) in GROUP_NOUNS
            ):
                j = i + 2
            elif w in ("grouped", "broken", "split", "breakdown") and self.low(i + 1) in (
                "by",
                "down",
            ):
                k = i + 2 + (self.low(i + 2) == "by")
                if self.low(k) in GROUP_NOUNS:
                    j = k
            if j is None or self._is_value(j + 1):
                continue
            group = GROUP_NOUNS[self.low(j)]
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
                    or (val.low in KEYWORDS and not self.v.lookup(val.text))
                    or (val.low in FILLER and not self.v.lookup(val.text))
                ):
                    continue
                kinds = KEY_KINDS[key]
                hits = [term for term in self.v.lookup(val.text) if term.kind in kinds]
                if not hits:
                    if (
                        key in ("event", "metric", "name")
                        and (not self._is_value(j) or self.v.lookup(val.text))
                        and not val.quoted
                    ):
                        # "event counts", "metric name": nouns, not filters; "job_error
                        # events db-1 had": the noun, then a host
                        continue
                    raise self._unknown(val.text, kinds, f"{key} {val.text!r}")
                self._assign(hits[0], val.text)
                self.use(i, j)
                del nxt
        for i, t in enumerate(toks):
            if t.used:
                continue
            hits = self.v.lookup(t.text)
            if not hits and t.low.endswith("s") and len(t.low) > 3 and not t.low.endswith("ss"):
                hits = self.v.lookup(t.text[:-1])  # "user_logins", but not "http_latency_mss"
            if not hits and t.low not in KEYWORDS and t.low not in FILLER:
                hits = self._leaf(t.low) or self._plural_path(t.low)  # "vms" -> mem.vms
            if t.low in HEALTH_WORDS and not self._owner_named(hits):
                continue  # "status of sess-c": how it is doing, not request_failed's status
            if hits:
                self._assign(self._pick(hits), t.text)
                self.use(i)
        # A plain word that is part of one name ("deploys" -> deploy_finished),
        # before deciding whether the question is about sessions.
        for i, t in enumerate(toks):
            w = t.low
            if t.used or self.s.field is not None or self.s.names or not w.isalpha():
                continue
            if w in FILLER or w in KEYWORDS or len(w) < 3:
                continue
            part, words = self._name_part(w), 1
            if part is None:
                part, words = self._verb_part(i)
            if part is not None:
                text = " ".join(x.text for x in toks[i : i + words])
                self._assign(part, text)
                self.s.notes.append(f"read {text!r} as {part.kind} {part.value}")
                self.use(*range(i, i + words))

    def _owner_named(self, hits: list[Term]) -> bool:
        """Is a data path among ``hits`` asked of its own event or stream ("request_failed status")?"""
        owners = {o for h in hits if h.kind == "path" for o in self.v.path_owners.get(h.value, ())}
        return bool(owners & {t.text for t in self.toks}) or any(h.kind != "path" for h in hits)

    def _leaf(self, word: str) -> list[Term]:
        """The one data path whose last part is ``word`` ("vms" -> mem.vms), said in a note."""
        paths = self.v.leaves.get(word, ())
        if len(paths) != 1:
            return []
        (path,) = paths
        self.s.notes.append(f"read {word!r} as {path}")
        return [Term("path", path)]

    def _plural_path(self, word: str) -> list[Term]:
        """A data path named in the singular: "thread count" -> threads, "attempt" -> attempts."""
        if len(word) < 3 or not word.isalpha():
            return []
        plural = word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
        hits = [h for h in self.v.lookup(plural) if h.kind == "path"] or self._leaf(plural)
        if hits and hits[0].value == plural:
            self.s.notes.append(f"read {word!r} as {plural}")
        return hits

    def _verb_part(self, i: int) -> tuple[Term | None, int]:
        """An event named by its verb: "users logged in" -> user_login, "deployed"
        -> deploy_finished; (the term, how many words it took)."""
        w = self.toks[i].low
        stems = [w[: -len(end)] for end in ("ed", "d", "ing") if w.endswith(end)]
        stems += [x[:-1] for x in stems if len(x) > 2 and x[-1] == x[-2]]  # logged -> log
        particle = self.low(i + 1)
        for stem in (w, *stems):  # "log in", "logged in", "logging in"
            if particle in PARTICLES and (part := self._name_part(stem + particle)) is not None:
                return part, 2
        for stem in stems:
            if (part := self._name_part(stem)) is not None:
                return part, 1
        return None, 1

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
            if s.host is None or s.host == term.value:
                s.host = term.value
            elif term.value not in s.more_hosts:
                s.more_hosts.append(term.value)  # "web-1 and web-2": the builder decides
        elif term.kind == "session":
            if s.session is None or s.session == term.value:
                s.session = term.value
            elif term.value not in s.more_sessions:
                s.more_sessions.append(term.value)  # "sess-a and sess-d": as hosts
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
        # Error words first: "duration of failed requests" is the failed
        # requests' duration, not the latency metric's.
        order = sorted(range(len(self.toks)), key=lambda k: self.toks[k].low not in ERROR_WORDS)
        for i in order:
            t = self.toks[i]
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
                # "free memory", "memory percent"; not "memory used by sess-a"
                before = self._memory_qualifier(self.low(i - 1), prefix=True)
                k = i + 1
                while self.low(k) in ("usage", "in", "as", "utilization", "utilisation"):
                    k += 1  # "mem usage in %"
                after = None if self.low(k + 1) == "by" else self._memory_qualifier(self.low(k))
                if before is not None or after is not None:
                    self._set_field(before or after or "", None)
                    self.use(i - 1 if before is not None else k)
                else:
                    self._memory_field_plain()
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
                "fastest",
            ) or (w == "long" and i > 0 and self.toks[i - 1].low == "how"):  # "how long do X take"
                if w == "response" and self.low(i + 1) in ("time", "times"):
                    self.use(i + 1)
                self._timed(w)
                if w in _TIMED_RANKS and s.fn is None:
                    self._fn(_TIMED_RANKS[w], w)  # "slowest request_failed": the longest
                self.use(i)
            elif w in ERROR_WORDS and not s.sessions_q:
                events = v.names_containing("event", "err", "fail", "exception", "crash")
                # "job errors": the error events whose name has the word beside it
                near = {
                    form
                    for j in (i - 1, i + 1)
                    if 0 <= j < len(self.toks)
                    for form in (self.toks[j].low, self.toks[j].low.removesuffix("s"))
                }
                narrowed = [e for e in events if near & set(re.split(r"[_.\-]", e.lower()))]
                events = narrowed or events
                if set(s.names) & set(events):
                    self.use(i)  # "jobs kept failing ... count job_error": the one named
                elif events:
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

        if s.rank_word in ("slowest", "fastest") and (
            s.field is None or (s.field == "value" and s.kind == "event")
        ):
            self._timed(s.rank_word)  # "which host has the slowest requests": by their duration
        if (
            s.field is None
            and not s.names
            and s.threshold is not None
            and s.threshold[2] in SIZE_UNITS
        ):
            self._memory_field_plain()  # "sessions using more than 400mb": a memory size
            s.notes.append(f"{s.threshold[1]:g} {s.threshold[2]} read as memory ({s.field})")

    def _timed(self, w: str) -> None:
        """What a word of time measures: the latency metric, or the named
        events' duration path ("latency", "how long", "slowest requests")."""
        s, v = self.s, self.v
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
            raise PromptError(f"Nothing stored measures {w}; metrics: {v.sample_of('metric')}.")
        s.synonym = s.synonym or w

    def _memory_qualifier(self, word: str, prefix: bool = False) -> str | None:
        """The memory path a word beside "memory" names ("percent", "free"), if stored."""
        qualified = {"percent": "mem.percent", "%": "mem.percent", "pct": "mem.percent",
                     "used": "mem.used", "available": "mem.available", "free": "mem.available",
                     "vms": "mem.vms", "virtual": "mem.vms"}.get(word)  # fmt: skip
        if prefix and word not in ("free", "available", "virtual", "used"):
            return None
        return qualified if qualified is not None and qualified in self.v.path_owners else None

    def _memory_field_plain(self) -> None:
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
            if _number(w) is not None:
                self._no_equality(i)
                continue
            if w in FILLER or w in KEYWORDS:
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

    def _no_equality(self, i: int) -> None:
        """A number left over right after a data path ("with status 500") asks
        for equality, which no endpoint filters on: refused, never dropped."""
        j = i - 1 - (i >= 2 and self.toks[i - 1].low in ("=", "==", "is", "of", "equals"))
        if j < 0:
            return
        path = self.toks[j].text
        if any(term.kind == "path" for term in self.v.lookup(path)):
            raise PromptError(
                f"I cannot match {path} equal to {self.toks[i].text}: a value is compared with"
                f" >, >=, < or <= ('{path} >= {self.toks[i].text}'), one threshold at a time."
            )

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
        hits = list(
            dict.fromkeys(t for x in stems if len(x) >= 3 for t in self.v.name_parts.get(x, ()))
        )
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
        self.join_words()
        self.fix_typos()
        for i in range(len(self.toks) - 1):
            if self.toks[i].low == "exit" and self.toks[i + 1].low in ("status", "state"):
                self.toks[i + 1].low = self.toks[i + 1].text = (
                    "code"  # a session's, not request_failed's status
                )
        self.refusals()
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
            self._how_many_of_a_value()
            self._latest_or_list(words)
        self.leftovers()
        return build_plan(self.s, self.v, words, self.toks)

    def _is_sessions_question(self, words: set[str]) -> bool:
        s = self.s
        measured = (
            s.field is not None
            or s.names
            or s.fn not in (None, "count")
            or s.threshold is not None
            or bool(words & MEASURE_WORDS)
        )
        if measured:
            return False
        if s.rank_desc is not None and s.group == "session":
            return False  # "busiest session": documents ranked by session
        mentions = bool(words & {"session", "sessions", "sess"}) or s.group == "session"
        about = bool(
            words
            & (
                LIVE_WORDS
                | ENDED_WORDS
                | BAD_EXIT_WORDS
                | START_WORDS
                | SESSION_LIFE_WORDS
                | HEALTH_WORDS
                | {"code", "when", "exit", "long", "duration"}
            )
        )
        if s.session is not None and about:
            return True
        if (
            s.host is not None
            and s.group is None
            and (
                words & (LIVE_WORDS | GONE_WORDS | HEALTH_WORDS | START_WORDS)
                or ("how" in words and not s.kind)
            )
        ):
            # "is db-1 up", "how's web-2 doing", "did db-1 restart": its sessions
            return True
        if not mentions and s.rank_desc is None and s.host is None and words & HOST_NOUNS:
            # "list all hosts", "which servers are live": hosts are known by their sessions
            s.group = "host"
            return True
        if not mentions:
            return False
        # "count samples per session" is about documents; "events per session" too.
        if words & {"samples", "sample", "events", "event", "documents", "points"}:
            return False
        # "cpu per session" is about samples, "sessions per host" about sessions.
        # "errors by session": error events counted per session, not sessions
        # that exited with an error.
        # "which sessions failed" (a verb of the session): how it ended, not error events
        measures = bool(
            words & ({"cpu", "memory", "mem", "ram", "latency"} | (ERROR_WORDS - _FAIL_VERBS))
        )
        grouped = self.s.group == "session" and not words & {"sessions", "session"}
        return not (measures and s.group == "session" and (grouped or not about))

    def _latest_or_list(self, words: set[str]) -> None:
        s = self.s
        if (
            words & ACTIVITY_WORDS
            and s.fn is None
            and s.field is None
            and not s.names
            and s.threshold is None
            and s.group is None
        ):
            s.kind, s.listing = "event", True  # "what changed on web-1": its events
        if s.fn is None and (
            self._at_the_end()  # first: its phrase's words are used ("as of now")
            or words & LATEST_WORDS
            or ("last" in words and not self._has_last_n())
        ):
            s.latest = True
        if (
            s.fn is None
            and (words & LIST_WORDS or words & ORDER_WORDS)
            and (
                s.kind == "event"
                or words
                & {
                    "events",
                    "samples",
                    "documents",
                    "points",
                    "records",
                    "entries",
                    "event",
                    "sample",
                }
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
                    and self.low(i + 1)
                    in ("most", "latest", "last", "recent", "newest", "oldest", "first", "earliest")
                ):
                    s.limit = int(float(t.low))
                    self.use(i)
                    break
            if words & {"first", "earliest", "oldest"}:
                s.rank_desc = False

    def _how_many_of_a_value(self) -> None:
        """ "how many threads does sess-c have": the value of threads, not how
        many samples have it (a count of documents needs a thing counted)."""
        s, toks = self.s, self.toks
        if s.fn != "count" or s.fn_word != "how many" or s.threshold is not None:
            return
        for i in range(len(toks) - 2):
            if toks[i].low == "how" and toks[i + 1].low == "many":
                if s.field is not None and s.field != "value" and toks[i + 2].text == s.field:
                    s.fn = s.fn_word = None
                return

    def _at_the_end(self) -> bool:
        """ "memory of sess-a at the end", "cpu at the moment", "as of now": its
        last value (the phrase's words are used, never refused as names)."""
        lows = tuple(t.low for t in self.toks)
        for i, w in enumerate(lows):
            for phrase in _LATEST_PHRASES.get(w, ()):
                if lows[i : i + len(phrase)] == phrase:
                    self.use(*range(i, i + len(phrase)))
                    return True
        return False

    def _has_last_n(self) -> bool:
        return any(
            t.low == "last" and i + 1 < len(self.toks) and _number(self.toks[i + 1].low) is not None
            for i, t in enumerate(self.toks)
        )


def parse_prompt(prompt: str, now: datetime, vocab: Vocabulary) -> Plan:
    """The request ``prompt`` asks for, relative to ``now``, in the words of ``vocab``.

    Raises ``PromptError`` naming what was not understood, with the closest
    known names.
    """
    if len(prompt) > MAX_PROMPT:
        raise PromptError(f"The prompt is too long ({MAX_PROMPT} characters at most).")
    return _Parser(" ".join(prompt.split()), now, vocab).parse()
