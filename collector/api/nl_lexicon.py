"""The words /query understands: units, functions, rankings, filler... and the
keyword-typo corrector. Data only (plus one cached lookup), shared by the
parser (``nlquery``) and the plan builder (``nl_plan``)."""

from __future__ import annotations

import functools
import re
from typing import Final

from .nl_vocab import DeleteIndex, TermKind

UNITS: Final = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "wks": 604800, "week": 604800, "weeks": 604800,
    "month": 2592000, "months": 2592000,
}  # fmt: skip
BUCKET_WORDS: Final = {"minutely": 60, "hourly": 3600, "daily": 86400, "weekly": 604800}
#: Nouns that make a duration a bucket: "in 10 min buckets", "30 minute windows"
#: (plural only for windows: "in a 30 minute window" is a time window).
BUCKET_NOUNS: Final = frozenset(
    {"bucket", "buckets", "interval", "intervals", "windows", "step", "steps", "chunk", "chunks",
     "slice", "slices", "increments", "blocks", "bins"}
)  # fmt: skip
WEEKDAYS: Final = {
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5,
    "sunday": 6,
}  # fmt: skip
#: Parts of a day, as UTC hours [start, end): "yesterday afternoon", "last night"
#: (a night runs into the next morning).
DAY_PARTS: Final = {"morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24),
                    "night": (18, 30)}  # fmt: skip
#: Words that start a window ending now: "last 3 hours", "trailing day".
WINDOW_WORDS: Final = frozenset({"last", "past", "previous", "recent", "trailing"})
#: Vague counts of a window ("a couple of hours", "last few minutes"): read as
#: these numbers, and said in a note so the reader sees the window used.
VAGUE_COUNTS: Final = {"couple": 2, "few": 3, "several": 3}

NUMBER_WORDS: Final = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "fifty": 50, "hundred": 100, "a": 1, "an": 1, "half": 0.5, "quarter": 0.25,
}  # fmt: skip

FUNCS: Final = {
    "avg": "avg", "average": "avg", "averages": "avg", "mean": "avg", "typical": "avg",
    "max": "max", "maximum": "max", "peak": "max", "highest": "max", "largest": "max",
    "biggest": "max", "worst": "max",
    "min": "min", "minimum": "min", "lowest": "min", "smallest": "min",
    "sum": "sum", "total": "sum", "totals": "sum",
    "count": "count", "counts": "count", "number": "count", "tally": "count",
    "median": "p50", "rate": "rate", "throughput": "rate", "growing": "rate", "growth": "rate",
    "increasing": "rate",
}  # fmt: skip
PERCENTILES: Final = {"50": "p50", "90": "p90", "95": "p95", "99": "p99"}

# Ranking words, and whether they rank high first.
SUPERLATIVES: Final = {
    "top": True, "highest": True, "most": True, "largest": True, "biggest": True,
    "max": True, "maximum": True, "peak": True, "heaviest": True, "busiest": True,
    "worst": True, "slowest": True, "greatest": True, "more": True,
    "bottom": False, "lowest": False, "least": False, "smallest": False, "fewest": False,
    "min": False, "minimum": False, "fastest": False, "quietest": False,
}  # fmt: skip

GROUP_NOUNS: Final = {
    "host": "host", "hosts": "host", "machine": "host", "machines": "host",
    "server": "host", "servers": "host", "box": "host", "boxes": "host", "node": "host",
    "nodes": "host",
    "session": "session", "sessions": "session",
    "name": "name", "names": "name", "metric": "name", "metrics": "name",
    "event": "name", "events": "name", "type": "name", "types": "name",
    # who uses the most of something: a session (one watched process)
    "user": "session", "users": "session", "consumer": "session", "consumers": "session",
    "hog": "session", "hogs": "session",
}  # fmt: skip

# "op" words of thresholds; some take a second word ("more than").
THRESHOLD_OPS: Final = {
    ">": ">", "gt": ">", "over": ">", "above": ">", "exceeding": ">", "exceeds": ">",
    "exceeded": ">", "beyond": ">", ">=": ">=", "<": "<", "lt": "<", "under": "<",
    "below": "<", "<=": "<=",
}  # fmt: skip
THAN_OPS: Final = {
    "more": ">", "greater": ">", "higher": ">", "longer": ">", "slower": ">", "bigger": ">",
    "larger": ">", "less": "<", "lower": "<", "shorter": "<", "faster": "<", "smaller": "<",
    "fewer": "<",
}  # fmt: skip
TIME_UNITS_MS: Final = {
    "ms": 1, "msec": 1, "millisecond": 1, "milliseconds": 1, "s": 1000, "sec": 1000,
    "secs": 1000, "second": 1000, "seconds": 1000, "min": 60000, "mins": 60000,
    "minute": 60000, "minutes": 60000, "millis": 1, "milli": 1, "msecs": 1,
    "hour": 3600000, "hours": 3600000, "hr": 3600000, "hrs": 3600000, "h": 3600000,
}  # fmt: skip
#: Bytes per size unit. The standard: kB/MB/GB/TB are powers of 10, KiB/MiB/GiB
#: powers of 2. Spoken "meg"/"gig" are the words for MB/GB: powers of 10 too. A
#: bare letter ("300M", "2G") is how top, free -h, ps and psutil's bytes2human
#: print binary sizes, copied from them into tickets: powers of 2. Every size
#: read says its bytes and its convention in ``notes``.
SIZE_UNITS: Final = {
    "b": 1, "bytes": 1, "byte": 1, "k": 1000,
    "kb": 10**3, "kilobyte": 10**3, "kilobytes": 10**3,
    "mb": 10**6, "megabyte": 10**6, "megabytes": 10**6, "meg": 10**6, "megs": 10**6,
    "gb": 10**9, "gigabyte": 10**9, "gigabytes": 10**9, "gig": 10**9, "gigs": 10**9,
    "tb": 10**12, "terabyte": 10**12, "terabytes": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    "g": 1 << 30,  # "m" (megabytes of a memory figure, else minutes) is read as "mib"
}  # fmt: skip

#: Words that sort a group without cutting it: "sort sessions by memory",
#: "hosts ordered by cpu" (the highest first, DEFAULT_TOP of them).
SORT_WORDS: Final = frozenset({"sort", "sorted", "rank", "ranked", "order", "ordered"})
#: Verbs of what a process consumes: "which session is burning the most cpu".
USER_VERBS: Final = frozenset(
    {"using", "uses", "consuming", "consumes", "eating", "hogging", "burning"}
)
#: Nouns for the hosts themselves: "list all hosts", "how many servers".
HOST_NOUNS: Final = frozenset(
    {"host", "hosts", "machine", "machines", "server", "servers", "node", "nodes", "box", "boxes"}
)
#: A session's own life: "uptime of sess-a", "how old is sess-c".
SESSION_LIFE_WORDS: Final = frozenset({"uptime", "lifetime", "age", "old"})

LIVE_WORDS: Final = frozenset(
    {"live", "connected", "active", "running", "online", "alive", "open", "current", "ongoing",
     "up", "reporting", "streaming", "sending"}
)  # fmt: skip
#: Sessions no longer connected (never typos of "online").
GONE_WORDS: Final = frozenset({"disconnected", "offline", "dead", "gone", "lost", "down"})
ENDED_WORDS: Final = frozenset(
    {"ended", "end", "ends", "finished", "finish", "exited", "exit", "stopped", "stop",
     "closed", "done", "terminated", "completed", "over", "died", "quit"}
)  # fmt: skip
BAD_EXIT_WORDS: Final = frozenset(
    {"crashed", "crash", "crashes", "failed", "failing", "fail", "fails", "nonzero", "non-zero", "bad", "abnormal",
     "abnormally", "unsuccessful", "unsuccessfully", "error", "errors", "failure", "failures"}
)  # fmt: skip
GOOD_EXIT_WORDS: Final = frozenset(
    {"ok", "okay", "cleanly", "clean", "successfully", "success", "successful", "normally", "fine"}
)
START_WORDS: Final = frozenset(
    {"start", "started", "starts", "begin", "began", "launched", "restart", "restarts",
     "restarted", "restarting", "reboot", "rebooted"}
)  # fmt: skip
#: How a host or a session is doing ("how's db-1 doing", "status of sess-c",
#: "is web-2 healthy"): with nothing measured, its sessions answer (up or not,
#: since when, how they ended).
HEALTH_WORDS: Final = frozenset(
    {"doing", "status", "health", "healthy", "unhealthy", "state", "ok", "okay", "fine",
     "looking", "look", "looks"}
)  # fmt: skip
#: "What changed on web-1", "what happened to sess-b", "anything new":
#: with nothing measured, the events of those filters, newest first.
ACTIVITY_WORDS: Final = frozenset(
    {"changed", "change", "changes", "happened", "happen", "happening", "occurred", "new",
     "going", "unusual", "weird", "strange", "odd", "wrong"}
)  # fmt: skip
#: Words after a verb that make one name with it: "logged in" -> login,
#: "signed up" -> signup (an event's name is often the noun of such a verb).
PARTICLES: Final = frozenset({"in", "on", "out", "up", "off"})
LATEST_WORDS: Final = frozenset(
    {"current", "currently", "latest", "now", "newest", "recent", "final", "presently"}
)
LIST_WORDS: Final = frozenset({"show", "list", "display", "print", "see", "find", "get"})
ORDER_WORDS: Final = frozenset(
    {"last", "latest", "recent", "newest", "first", "earliest", "oldest"}
)
ERROR_WORDS: Final = frozenset(
    {"error", "errors", "failure", "failures", "failed", "fail", "fails", "failing", "crash",
     "crashes",
     "exception", "exceptions", "problem", "problems", "incident", "incidents"}
)  # fmt: skip

# Words that carry no meaning here: a sentence around the question.
FILLER: Final = frozenset(
    [
    "the", "a", "an", "me", "us", "please", "show", "give", "tell", "list", "get", "find",
    "fetch", "what", "what's", "whats", "which", "is", "are", "was", "were", "be", "been",
    "being", "of", "for", "in", "on", "at", "to", "and", "or", "with", "all", "any", "do",
    "does", "did", "there", "has", "have", "had", "how", "much", "many", "it", "its", "this",
    "that", "these", "those", "from", "by", "per", "each", "every", "my", "our", "i", "we",
    "you", "can", "could", "would", "should", "will", "just", "only", "also", "about",
    "across", "within", "during", "into", "value", "values", "data", "recorded", "stored",
    "seen", "reported", "measured", "so", "far", "hey", "hi", "pls", "thanks", "did", "does",
    "used", "using", "use", "usage", "utilization", "utilisation", "level", "levels", "amount",
    "when", "where", "who", "whose", "status", "state", "doing", "happened", "happen",
    "happening", "took", "take", "takes", "taking", "were", "went", "go", "going", "had",
    "has", "got", "see", "look", "looking", "check", "give", "giving", "shown", "display",
    "print", "than", "then", "ago", "since", "some", "same", "overall", "whole", "entire",
    "right", "now", "currently", "currently", "across", "one", "ones", "number", "numbers",
    "metric", "metrics", "stats", "statistics", "statistic", "figure", "by", "graph", "chart",
    "plot", "trend", "trends", "over", "time", "breakdown", "broken", "down", "split",
    "grouped", "group", "x", "vs", "versus", "compared", "everything", "anything", "something",
    "anywhere", "everywhere", "common", "frequent", "often", "usual", "happened", "busy",
    # verbs around what a process uses: never typos of a keyword ("uses" !-> "user")
    "uses", "consumes", "consumed", "eats", "needs", "needed", "ran", "run", "runs",
    # who did something: "did anyone log in", "how many times did someone deploy"
    "someone", "somebody", "anyone", "anybody", "people", "times", "things", "stuff",
    # "I'm on call", "got paged": never a host after "on"
    "call", "paged",
    # the people and programs around a ticket: "a question from support: a customer says
    # their app died" (a name of the data set is looked up before this list counts)
    "support", "team", "customer", "customers", "client", "clients", "app", "apps",
    "application", "applications",
    # hedges around a number or a window: "roughly the last few hours", "approx 2h"
    "roughly", "approximately", "approx", "around", "about", "maybe", "perhaps", "probably",
    "basically", "actually", "really", "nearly", "almost", "exactly", "precisely", "kinda",
    "ish",
    ]
)  # fmt: skip

IDENT_RE: Final = re.compile(r"[A-Za-z0-9][\w.\-:/@]*[\w]|[A-Za-z0-9]")
NUM_RE: Final = re.compile(r"^-?\d+(?:\.\d+)?$")
NUM_UNIT_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)([a-z%]+)$")
ORDINAL_RE: Final = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
PCT_RE: Final = re.compile(r"^(?:p|pct|perc)(\d{2,3})$")
#: A time of day, UTC: "10:00", "9:30", "9am", "2pm", "11:15pm".
CLOCK_RE: Final = re.compile(r"^(\d{1,2})(?::(\d{2}))?(am|pm)?$")
#: An hour (and minutes) that "am" or "pm" may follow as a word of its own.
CLOCK_NUMBER_RE: Final = re.compile(r"^\d{1,2}(?::\d{2})?$")
#: Words that exclude what follows ("excluding web-1"): no endpoint takes a
#: negated filter, so a prompt with one is refused rather than answered for
#: the very thing it excludes.
EXCLUDE_WORDS: Final = frozenset({"excluding", "except", "exclude", "besides", "ignoring"})
DATE_RE: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[t ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:z|[+-]\d{2}:?\d{2})?$"
)
OP_SPLIT_RE: Final = re.compile(r"^(>=|<=|>|<)([^=].*)$")  # ">=" alone stays one op
FIELD_EQ_RE: Final = re.compile(r"^(host|session|name|tag|metric|event)(?:=|:)(.+)$", re.IGNORECASE)


# Words that name something measured: a question with one is not about sessions.
MEASURE_WORDS: Final = frozenset(
    {
    "sample", "events", "points", "cpu", "latency", "duration", "ram", "samples", "event",
    "memory", "documents", "rss", "mem"
    }
)  # fmt: skip


KEY_KINDS: Final[dict[str, tuple[TermKind, ...]]] = {
    "host": ("host",), "session": ("session",), "tag": ("tag",), "event": ("event",),
    "metric": ("metric", "stream"), "name": ("metric", "event", "stream"), "stream": ("stream",),
}  # fmt: skip

# Every word some matcher understands (not filler): never "ignored", never
# a misspelling of a name.
KEYWORDS: Final = frozenset(
    [*UNITS, *FUNCS, *SUPERLATIVES, *GROUP_NOUNS, *THRESHOLD_OPS, *THAN_OPS,
     *LIVE_WORDS, *GONE_WORDS, *ENDED_WORDS, *BAD_EXIT_WORDS, *GOOD_EXIT_WORDS, *START_WORDS,
     *LATEST_WORDS, *LIST_WORDS, *ERROR_WORDS, *BUCKET_WORDS, *TIME_UNITS_MS, *SIZE_UNITS,
     *HEALTH_WORDS, *ACTIVITY_WORDS,
     "today", "yesterday", "this", "last", "past", "since", "between", "ago", "percentile",
     "median", "cpu", "memory", "mem", "ram", "rss", "latency", "code", "exit", "first",
     "earliest", "oldest", "limit", "samples", "sample", "documents", "points", "than", "least",
     "which", "when", "tag", "tagged", "host", "session", "zero", "with", "without", "not",
     "no", "still", "long", "duration", "response", "time", "times", "week", "month", "hour",
     "day", "minute", "hours", "days", "minutes", "records", "entries", "many", "how", "count",
     "percent", "percentage", "pct", "used", "available", "free", "virtual", *EXCLUDE_WORDS,
     # the parser's own words: never "corrected" into another keyword
     *(w for w in NUMBER_WORDS if w.isalpha()), *BUCKET_NOUNS, *WINDOW_WORDS, *VAGUE_COUNTS,
     *USER_VERBS, *SESSION_LIFE_WORDS, *SORT_WORDS, "till", "until", "sess", "named", "fast", "slow",
     "quickly", "noon", "midnight", "grouping", *WEEKDAYS, *DAY_PARTS, "weekend", "overnight"]
)  # fmt: skip
# Words a typo is corrected to: the ones people mistype in questions.
TYPO_TARGETS: Final = tuple(
    # Not the words that are also parts of data paths: "percnt" is a misspelt
    # name (refused with cpu.percent suggested), not a keyword to correct.
    sorted(
        {w for w in KEYWORDS if len(w) >= 4 and w.isalpha()}
        - {"fewer", "over", "percent", "percentage", "used", "available", "free", "virtual"}
        # nor number words ("nice" is no typo of "nine")
        - set(NUMBER_WORDS)
    )
)

#: Everyday English words one edit away from a keyword: never typos ("like" is
#: not "live", "your" not "hour", "date" not "rate"); rare words that are
#: likelier a slip ("sever", "peek", "blow") stay correctable. A word here
#: that means nothing to the parser is left over as any unknown word is
#: (ignored and said, or refused if nothing else was asked).
ENGLISH: Final = frozenset(
    {
    "along", "came", "clear", "clearly", "come", "core", "cores", "cost", "costs", "date",
    "dates", "dropped", "even", "fall", "falls", "file", "fire", "kind", "life", "like", "line", "longest",
    "lived", "lives", "mind", "mine", "miss", "mode", "must", "none", "note", "notes", "post",
    "posts", "simple", "your", "says", "pull", "quick",
    # chat around a question ("thank you", "it might have leaked", "earlier today")
    "close", "deal", "earlier", "example", "fact", "general", "light", "meant", "might", "part",
    "pass", "quite", "read", "soon", "thank", "wish", "working", "leak", "leaks", "leaked",
    "leaking",
    # words of a support ticket one edit from a keyword ("late" is no "rate", "logs" no
    # "hogs", "including" no "excluding", "warning" no "burning", "counter" no "count")
    "binds", "blocked", "blocking", "channel", "closes", "closest", "complete", "computed",
    "corrected", "correctly", "counter", "counters", "created", "edit", "edited", "emit",
    "examples", "existed", "fill", "including", "increment", "kill", "large", "late", "lift",
    "lock", "logs", "lone", "lose", "loss", "meaning", "merging", "mount", "move", "noun",
    "older", "ours", "port", "power", "present", "reading", "record", "recording", "routing",
    "sends", "serve", "served", "sets", "short", "skipped", "speak", "strings", "tail",
    "targets", "testing", "thin", "typos", "unchanged", "waiting", "warning", "warnings",
    "ways", "worse",
    }
)  # fmt: skip


TYPO_INDEX: Final = DeleteIndex(TYPO_TARGETS)


@functools.lru_cache(maxsize=4096)
def keyword_typo(word: str) -> str | None:
    """The keyword ``word`` misspells: one edit, two from seven letters on."""
    near = TYPO_INDEX.near(word, 1 if len(word) < 7 else 2)
    return near[0][1] if near else None
