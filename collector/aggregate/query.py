"""The typed aggregation query and its answer rows (``GET /aggregate``, ``/query``)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Final, Literal, get_args

from deltawire.collector.stores.base import MetricQuery

__all__ = [
    "BUCKET_UNITS",
    "FNS",
    "GROUPS",
    "MAX_BUCKETS",
    "QUANTILES",
    "AggregateError",
    "AggregateQuery",
    "AggregateRow",
    "Fn",
    "Group",
    "Order",
    "QueryTooHeavy",
    "Threshold",
    "parse_bucket",
    "parse_field",
    "parse_where",
]

Fn = Literal["count", "avg", "min", "max", "sum", "p50", "p90", "p95", "p99", "rate"]
Group = Literal["host", "session", "name"]
#: Row order: by group then bucket, or by value (descending with "-value").
Order = Literal["group", "value", "-value"]

FNS: Final[tuple[str, ...]] = get_args(Fn)
GROUPS: Final[tuple[str, ...]] = get_args(Group)
QUANTILES: Final = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
BUCKET_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Most buckets one answer may have: a 1 s bucket over a year would be 31M rows.
MAX_BUCKETS: Final = 100_000
_BUCKET_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_MAX_PATH: Final = 256
#: ``where``: one comparison of the field with a number ("duration_ms > 200").
_WHERE_RE: Final = re.compile(
    r"^\s*([^\s<>=!]+)\s*(>=|<=|>|<)\s*(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$"
)
#: Functions a threshold applies to: each is exact from the tier buckets wholly
#: inside or outside it plus the raw rows of the buckets it cuts (a rate of
#: the values over a threshold means nothing).
THRESHOLD_FNS: Final = frozenset({"count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"})
Op = Literal[">", ">=", "<", "<="]
_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Threshold:
    """Only the values of ``field`` that compare so with ``number``."""

    field: str  # "value" or a data path
    op: Op
    number: float

    def text(self) -> str:
        n = int(self.number) if self.number == int(self.number) else self.number
        return f"{self.field} {self.op} {n}"

    def passes(self, value: float) -> bool:
        return _OPS[self.op](value, self.number)


def parse_where(text: str) -> Threshold:
    """``duration_ms > 200``, ``value<=1.5`` -> a ``Threshold``."""
    m = _WHERE_RE.match(text)
    if m is None:
        raise AggregateError(
            "where", f"{text!r}: a field, one of > >= < <=, and a number ('duration_ms > 200')"
        )
    number = float(m.group(3))
    if not math.isfinite(number):
        raise AggregateError("where", f"{text!r}: the number must be finite")
    return Threshold(parse_field(m.group(1)), m.group(2), number)  # type: ignore[arg-type]


class QueryTooHeavy(Exception):
    """A query that would read more than the engine allows: the API answers
    503 ``query_timeout`` at once (it would pass the deadline anyway)."""


class AggregateError(ValueError):
    """A bad aggregation parameter: the API answers 422 naming ``parameter``."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter, self.detail = parameter, detail


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """``fn`` of ``field`` over the documents matching ``where``.

    ``field`` is ``"value"``, a dotted path into ``data`` (``cpu.percent``),
    or None for ``count`` of documents. Only numbers count (no bools).
    ``by`` groups rows; ``bucket`` (seconds) cuts ``[where.ts_from,
    where.ts_to)`` into epoch-aligned buckets. ``where.limit``/``descending``/
    ``after`` are ignored: ``limit`` and ``order`` shape the rows.

    ``rate``: per series (one leaf of one stream), the counter increase over
    consecutive values inside the window or bucket (a drop is a reset, the
    new value counts whole), summed over the group's series, per second of
    the bucket, of ``to - from``, or else of the group's first-to-last span.
    Percentiles come from a DDSketch: within 1% of the exact value of rank
    ``q * (count - 1)``.
    """

    fn: Fn
    field: str | None = None
    where: MetricQuery = dc_field(default_factory=MetricQuery)
    by: Group | None = None
    bucket: float | None = None
    order: Order = "group"
    limit: int | None = None
    #: Only the values passing it count: on ``field``, or with ``count`` and
    #: no field, on any path (the documents whose ``duration_ms > 200``).
    threshold: Threshold | None = None

    def __post_init__(self) -> None:
        if self.fn not in FNS:
            raise AggregateError("fn", f"must be one of {', '.join(FNS)}, not {self.fn!r}")
        if self.field is None:
            if self.fn != "count":
                raise AggregateError("field", f"{self.fn} needs a field: 'value' or a data path")
        else:
            parse_field(self.field)
        if self.by is not None and self.by not in GROUPS:
            raise AggregateError("by", f"must be one of {', '.join(GROUPS)}, not {self.by!r}")
        if self.bucket is not None:
            if not self.bucket > 0:
                raise AggregateError("bucket", "must be a positive number of seconds")
            lo, hi = self.where.ts_from, self.where.ts_to
            if lo is not None and hi is not None and (hi - lo) / self.bucket > MAX_BUCKETS:
                raise AggregateError(
                    "bucket", f"more than {MAX_BUCKETS} buckets in the window: choose a larger one"
                )
        if self.order not in get_args(Order):
            raise AggregateError("order", "must be group, value or -value")
        if self.limit is not None and self.limit < 1:
            raise AggregateError("limit", "must be at least 1")
        if self.threshold is not None:
            if self.fn not in THRESHOLD_FNS:
                raise AggregateError("where", f"not with {self.fn}: a rate counts every value")
            if self.field is not None and self.field != self.threshold.field:
                raise AggregateError(
                    "where", f"must be on the field ({self.field}), not on {self.threshold.field}"
                )

    @property
    def path(self) -> str:
        """The series path: the field, the threshold's, or ``""`` for documents."""
        return self.field or (self.threshold.field if self.threshold is not None else "")


@dataclass(frozen=True, slots=True)
class AggregateRow:
    """One answer row: ``group`` is None without ``by``, ``bucket`` (start,
    epoch seconds) None without a bucket size. ``value`` is None where the
    function has no answer (no values, or a rate over no time)."""

    group: str | None
    bucket: float | None
    value: float | None
    count: int


def parse_field(text: str) -> str:
    """A field: ``value`` or a dotted data path whose keys are non-empty and
    free of '"' (what both stores can address)."""
    if not text or len(text) > _MAX_PATH:
        raise AggregateError("field", f"must be 1 to {_MAX_PATH} characters")
    if any(not part or '"' in part for part in text.split(".")):
        raise AggregateError(
            "field", f"{text!r}: a data path's keys must be non-empty and without '\"'"
        )
    return text


def parse_bucket(text: str) -> float:
    """``30``, ``90s``, ``1m``, ``10m``, ``1h``, ``1d`` -> seconds."""
    m = _BUCKET_RE.match(text.strip())
    if m is None:
        raise AggregateError("bucket", f"{text!r}: seconds, or a number with s, m, h or d")
    seconds = float(m.group(1)) * BUCKET_UNITS[m.group(2) or "s"]
    if not seconds >= 1:
        raise AggregateError("bucket", "must be at least 1 second")
    return seconds
