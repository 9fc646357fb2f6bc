"""The frames of protocol v1, as frozen slotted dataclasses.

Parsing (``client_frame_from_dict`` / ``server_frame_from_dict``) validates
every field the protocol types, and raises the protocol's own errors; unknown
fields are ignored, as forward compatibility requires.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, ClassVar, Final

from ._fastdc import fast_frozen
from .errors import BadFrame, BadHello, ProtocolError, UnknownType, UnsupportedVersion

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_BATCH_SAMPLES",
    "MAX_DATA_DEPTH",
    "MAX_HELLO_TAGS",
    "MAX_HELLO_TAG_CHARS",
    "MAX_HELLO_TEXT_CHARS",
    "MAX_NAME_CHARS",
    "PROTOCOL_VERSION",
    "SESSION_RE",
    "TS_MAX",
    "TS_MIN",
    "Ack",
    "Batch",
    "Bye",
    "CDelta",
    "ClientFrame",
    "Delta",
    "ErrorFrame",
    "Event",
    "Flow",
    "Frame",
    "Hello",
    "ServerFrame",
    "Snap",
    "Welcome",
    "batch_line_within_limits",
    "check_int_literals",
    "client_frame_from_dict",
    "error_frame",
    "line_needs_limit_check",
    "lines_need_limit_check",
    "server_frame_from_dict",
]

PROTOCOL_VERSION = 1

SESSION_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")

#: Stream and event names are short identifiers; a cap keeps indexes sane.
MAX_NAME_CHARS = 256

#: A timestamp must be representable as an RFC 3339 date (years 1..9999),
#: because that is how the HTTP API shows it back.
TS_MIN = -62135596800.0
TS_MAX = 253402300799.0

# --- limits on what a frame may carry (PROTOCOL.md) ---------------------------
#: Deepest nesting inside ``data`` (an object or array inside ``data`` is level
#: 1). Real samples nest 2-4 levels; 64 stays far below orjson's output limit
#: (254 levels: deeper data would be stored but could never be served) and
#: below any recursion a walker of ours may take.
MAX_DATA_DEPTH: Final = 64
#: Integers both stores keep exactly (SQLite INTEGER, BSON int64). orjson
#: reads larger literals as floats, silently changing them: see
#: ``check_int_literals``.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: ``hello.host`` and ``hello.agent``: a DNS name is at most 253 characters.
MAX_HELLO_TEXT_CHARS: Final = 255
#: Hello tags are copied into every document of the session: 10,000 tags of
#: 100 characters grew a database by 1 MB per frame. 64 short tags is plenty
#: for labels like env/region/service.
MAX_HELLO_TAGS: Final = 64
MAX_HELLO_TAG_CHARS: Final = 128
#: A token is a secret of a few dozen characters; the cap only bounds memory.
MAX_HELLO_TOKEN_CHARS: Final = 1024


class _FieldsFrame:
    """A frame whose wire form is its fields as they are, in their order, an
    optional one left out while None (event, bye, ack, flow, error)."""

    __slots__ = ()
    t: ClassVar[str]

    def wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": self.t}
        names: tuple[str, ...] = self.__slots__  # fast_frozen: the fields, in order
        for name in names:
            if (value := getattr(self, name)) is not None:
                d[name] = value
        return d


@fast_frozen
class Hello:
    t: ClassVar[str] = "hello"
    session: str
    v: int = PROTOCOL_VERSION
    token: str | None = None
    host: str | None = None
    agent: str | None = None
    tags: tuple[str, ...] = ()
    #: Stream codecs offered, in order of preference ("Negotiated stream compression").
    compress: tuple[str, ...] = ()
    #: Extensions offered (docs/protocol.md), e.g. "counter".
    ext: tuple[str, ...] = ()

    def wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": "hello", "v": self.v, "session": self.session}
        # The optional fields go out only when given.
        for key in ("token", "host", "agent"):
            if (value := getattr(self, key)) is not None:
                d[key] = value
        for key in ("tags", "compress", "ext"):
            if values := getattr(self, key):
                d[key] = list(values)
        return d


@fast_frozen
class _Sample:
    """A sample of one stream: in full (snap) or as a patch (delta, cdelta)."""

    t: ClassVar[str]
    seq: int
    ts: float
    name: str
    data: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        return {"t": self.t, "seq": self.seq, "ts": self.ts, "name": self.name, "data": self.data}


@fast_frozen
class Snap(_Sample):
    t: ClassVar[str] = "snap"


@fast_frozen
class Delta(_Sample):
    """A JSON Merge Patch against the stream's previous sample."""

    t: ClassVar[str] = "delta"


@fast_frozen
class CDelta(Delta):
    """A delta under the ``counter`` extension (protocol/counter.py)."""

    t: ClassVar[str] = "cdelta"


#: The most samples one ``batch`` frame may carry. A push holds push_every
#: ticks of a few streams (8 samples by default); the cap bounds how many
#: documents one line can make (a 1 MiB line of empty patches would be ~300k).
MAX_BATCH_SAMPLES: Final = 256


@fast_frozen
class Batch:
    """Consecutive ``cdelta`` frames in one line (the ``batch`` extension,
    protocol/batch.py): sample i has seq ``seq + i``, counter patch
    ``data[i]``, name ``names[i % len(names)]`` (the names are a cycle:
    ``("process", "system")`` for a push that alternates them), and the
    timestamp ``dts`` says (see ``batch_ts``)."""

    t: ClassVar[str] = "batch"
    seq: int
    ts: float
    dts: tuple[int, ...]
    names: tuple[str, ...]
    data: tuple[dict[str, Any], ...]

    def wire(self) -> dict[str, Any]:
        return {"t": "batch", "seq": self.seq, "ts": self.ts, "dts": list(self.dts),
                "name": list(self.names), "data": list(self.data)}  # fmt: skip


@fast_frozen
class Event(_FieldsFrame):
    t: ClassVar[str] = "event"
    seq: int
    ts: float
    name: str
    data: dict[str, Any] | None = None


@fast_frozen
class Bye(_FieldsFrame):
    t: ClassVar[str] = "bye"
    seq: int
    ts: float
    data: dict[str, Any] | None = None


@fast_frozen
class Welcome:
    t: ClassVar[str] = "welcome"
    session: str
    acked: int
    v: int = PROTOCOL_VERSION
    #: The stream codec chosen (None: plain NDJSON).
    compress: str | None = None
    #: The hello offered codecs, so the welcome answers (``null`` for none);
    #: a welcome to a hello that offered none stays exactly as in v1.
    negotiated: bool = False
    #: The extensions accepted, when the hello offered some (None: not asked).
    ext: tuple[str, ...] | None = None

    def wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": "welcome", "v": self.v, "session": self.session,
                             "acked": self.acked}  # fmt: skip
        if self.negotiated:
            d["compress"] = self.compress
        if self.ext is not None:
            d["ext"] = list(self.ext)
        return d


@fast_frozen
class Ack(_FieldsFrame):
    t: ClassVar[str] = "ack"
    seq: int


@fast_frozen
class Flow(_FieldsFrame):
    t: ClassVar[str] = "flow"
    min_interval: float


@fast_frozen
class ErrorFrame(_FieldsFrame):
    t: ClassVar[str] = "error"
    code: str
    msg: str
    fatal: bool
    seq: int | None = None


ClientFrame = Hello | Snap | Delta | CDelta | Batch | Event | Bye
ServerFrame = Welcome | Ack | Flow | ErrorFrame
Frame = ClientFrame | ServerFrame


# --- parsing -----------------------------------------------------------------
# Hot path: one dict lookup on ``t``, then a handful of type checks. ``type(x)
# is int`` (not isinstance) keeps ``true`` from passing as the integer 1.


def _seq(d: dict[str, Any]) -> int:
    seq = d.get("seq")
    if type(seq) is not int or seq < 0:
        raise BadFrame("seq must be an integer >= 0")
    return seq


def _ts(d: dict[str, Any], seq: int) -> float:
    ts = d.get("ts")
    tt = type(ts)
    if tt is not float and tt is not int:
        raise BadFrame("ts must be a number (seconds since the epoch)", seq=seq)
    if not (TS_MIN <= ts <= TS_MAX) or (tt is float and not math.isfinite(ts)):  # type: ignore[operator,arg-type]
        raise BadFrame("ts out of range", seq=seq)
    return ts  # type: ignore[return-value]


def _name(d: dict[str, Any], seq: int) -> str:
    name = d.get("name")
    if type(name) is not str or not name or len(name) > MAX_NAME_CHARS:
        raise BadFrame(f"name must be a string of 1-{MAX_NAME_CHARS} characters", seq=seq)
    return name


def _object(d: dict[str, Any], seq: int, *, required: bool) -> dict[str, Any] | None:
    data = d.get("data")
    if data is None:
        if required:
            raise BadFrame("data must be an object", seq=seq)
        return None
    if type(data) is not dict:
        raise BadFrame("data must be an object", seq=seq)
    return data


def _parse_snap(d: dict[str, Any]) -> Snap:
    seq = _seq(d)
    data = _object(d, seq, required=True)
    assert data is not None
    if _check_data(data, seq):
        raise BadFrame(
            "a snap cannot hold null members (null only means delete in a delta)", seq=seq
        )
    return Snap(seq, _ts(d, seq), _name(d, seq), data)


def _parse_delta(d: dict[str, Any]) -> Delta:
    seq = _seq(d)
    data = _object(d, seq, required=True)
    assert data is not None
    _check_data(data, seq)
    return Delta(seq, _ts(d, seq), _name(d, seq), data)


def _parse_cdelta(d: dict[str, Any]) -> CDelta:
    delta = _parse_delta(d)
    return CDelta(delta.seq, delta.ts, delta.name, delta.data)


def _parse_batch(d: dict[str, Any]) -> Batch:
    seq = _seq(d)
    ts = _ts(d, seq)
    dts, names, data = d.get("dts"), d.get("name"), d.get("data")
    if type(data) is not list or not 0 < len(data) <= MAX_BATCH_SAMPLES:
        raise BadFrame(f"batch.data must be a list of 1-{MAX_BATCH_SAMPLES} objects", seq=seq)
    n = len(data)
    if not all(type(x) is dict for x in data):
        raise BadFrame("batch.data must be a list of objects", seq=seq)
    if type(dts) is not list or len(dts) != n - 1 or not all(type(x) is int for x in dts):
        raise BadFrame("batch.dts must be a list of integers, one per sample after the first",
                       seq=seq)  # fmt: skip
    if type(names) is not list or not 0 < len(names) <= n:
        raise BadFrame("batch.name must be a list of 1 to len(data) names (a cycle)", seq=seq)
    for name in names:
        if type(name) is not str or not name or len(name) > MAX_NAME_CHARS:
            raise BadFrame(f"batch names must be strings of 1-{MAX_NAME_CHARS} characters",
                           seq=seq)  # fmt: skip
    for i, patch in enumerate(data):
        _check_data(patch, seq + i)
    return Batch(seq, ts, tuple(dts), tuple(names), tuple(data))


def _parse_event(d: dict[str, Any]) -> Event:
    seq = _seq(d)
    data = _object(d, seq, required=False)
    if data is not None:
        _check_data(data, seq)
    return Event(seq, _ts(d, seq), _name(d, seq), data)


def _parse_bye(d: dict[str, Any]) -> Bye:
    seq = _seq(d)
    data = _object(d, seq, required=False)
    if data is not None:
        _check_data(data, seq)
    return Bye(seq, _ts(d, seq), data)


def _check_data(data: dict[str, Any], seq: int) -> bool:
    """Enforce the depth and integer limits on ``data``; True if an object in
    it has a null member (an error for a snap only, so the caller decides).

    Iterative, with an explicit stack: data nested 1,000 levels (all that
    orjson reads) must give an error frame, not a ``RecursionError``.
    """
    has_null = False
    stack: list[tuple[Any, int]] = [(data, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        values = node.values() if type(node) is dict else node
        for value in values:
            tv = type(value)
            if tv is dict or tv is list:
                if depth >= MAX_DATA_DEPTH:
                    raise BadFrame(f"data nests deeper than {MAX_DATA_DEPTH} levels", seq=seq)
                push((value, depth + 1))
            elif tv is int:
                if not INT64_MIN <= value <= INT64_MAX:
                    raise BadFrame(_INT_RANGE_MSG, seq=seq)
            elif value is None and type(node) is dict:
                has_null = True
    return has_null


_INT_RANGE_MSG: Final = "an integer is outside the int64 range [-2**63, 2**63-1]"

# A run of 19 digits is the least an integer outside int64 needs (2**63 has
# 19): lines without one, nearly all, are passed by a translate and a search
# in C (a regex search measured several times slower than orjson.loads).
_DIGITS_TO_ZERO: Final = bytes(0x30 if 0x30 <= i <= 0x39 else i for i in range(256))
_NINETEEN_ZEROS: Final = b"0" * 19
# Strings (skipped whole, digits inside them are text) or an integer literal:
# not preceded by a digit, letter, '.', '+' or '-' (a fraction or an
# exponent) and not followed by a fraction or an exponent.
_INT_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|(?<![\w.+-])(-?[0-9]{19,})(?![.eE0-9])')
# What the quick line test counts: a line with at most this many opening
# brackets cannot nest data deeper than the limit (the frame and its data
# object are two of them).
_MAX_BRACKETS: Final = MAX_DATA_DEPTH + 2
# For a whole read's lines at once: every byte but brackets and newlines
# deleted, '[' made '{', so a line with too many brackets becomes a long run.
_BRACKETS_TO_BRACE: Final = bytes(0x7B if i == 0x5B else i for i in range(256))
_NOT_BRACKETS: Final = bytes(i for i in range(256) if i not in b"{[\n")
_TOO_MANY_BRACKETS: Final = b"{" * (_MAX_BRACKETS + 1)


def line_needs_limit_check(line: bytes | bytearray) -> bool:
    """False when a raw frame line cannot break the depth or integer limits.

    Two scans in C, for the bulk path that skips the frame parsers; True
    means only that the exact checks must run (``check_int_literals`` on the
    line, the frame parser on its data).
    """
    return line.count(b"{") + line.count(b"[") > _MAX_BRACKETS or _NINETEEN_ZEROS in line.translate(
        _DIGITS_TO_ZERO
    )


#: How deep a ``batch`` line may nest for ``batch_line_within_limits`` to
#: pass it (a batch, its data list, a patch, then the sample's own levels: 5
#: on the recording); far under ``MAX_DATA_DEPTH``, so it never admits a
#: patch that limit refuses. Deeper lines take the exact checks.
_BATCH_FAST_DEPTH: Final = 10
#: Everything but brackets and quotes, deleted: what is left of a string
#: without brackets in it is ``""``.
_NOT_STRUCTURE: Final = bytes(i for i in range(256) if i not in b'{}[]"')
_SQUARE_TO_CURLY: Final = bytes(
    0x7B if i == 0x5B else 0x7D if i == 0x5D else i for i in range(256)
)  # fmt: skip


def batch_line_within_limits(line: bytes | bytearray) -> bool:
    """True when a ``batch`` line that parsed as JSON cannot break the depth
    or integer limits (False: the exact checks must run).

    A batch holds dozens of objects, so the bracket count of
    ``line_needs_limit_check`` always fails it; this measures the nesting
    instead, in C: only brackets and quotes kept, every string without a
    bracket in it (with no backslash in the line, every quote delimits one)
    is then ``""`` and dropped, a quote left means a bracket inside a string
    (rare: the exact checks), and innermost pairs are peeled once per level.
    Splitting the line at its quotes instead made an object per string: 2.3x
    the cost on the recording's batches.
    """
    if b"\\" in line or _NINETEEN_ZEROS in line.translate(_DIGITS_TO_ZERO):
        return False
    nest = line.translate(_SQUARE_TO_CURLY, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in nest:
        return False
    for _ in range(_BATCH_FAST_DEPTH):
        if not nest:
            return True
        nest = nest.replace(b"{}", b"")
    return not nest


def lines_need_limit_check(lines: list[bytearray]) -> bool:
    """``line_needs_limit_check`` for a read's worth of lines in one go.

    Four scans in C over the joined lines instead of three calls per line:
    per line, the quick test cost a fifth of the bulk path's time per frame.
    False (nearly always) means no line of them needs the exact checks.
    """
    joined = b"\n".join(lines)
    return _NINETEEN_ZEROS in joined.translate(
        _DIGITS_TO_ZERO
    ) or _TOO_MANY_BRACKETS in joined.translate(_BRACKETS_TO_BRACE, _NOT_BRACKETS)


def check_int_literals(line: bytes | bytearray, seq: int | None) -> None:
    """Raise ``BadFrame`` if a valid JSON ``line`` holds an integer outside int64.

    Must look at the text: orjson reads an integer beyond 2**64 as the
    nearest float, indistinguishable from that float written out.
    """
    if _NINETEEN_ZEROS not in line.translate(_DIGITS_TO_ZERO):
        return
    for match in _INT_TOKEN.finditer(line):
        digits = match.group(1)
        if digits is not None and not INT64_MIN <= int(digits) <= INT64_MAX:
            raise BadFrame(_INT_RANGE_MSG, seq=seq)


def _opt_str(d: dict[str, Any], key: str, limit: int = MAX_HELLO_TEXT_CHARS) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is not str or len(value) > limit:
        raise BadHello(f"hello.{key} must be a string of at most {limit} characters")
    return value


def _parse_hello(d: dict[str, Any]) -> Hello:
    v = d.get("v")
    if type(v) is not int:
        raise BadHello("hello.v must be an integer")
    if v != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {v} is not supported (this side speaks 1)")
    session = d.get("session")
    if type(session) is not str or not SESSION_RE.fullmatch(session):
        raise BadHello("hello.session must be 1-128 characters of A-Za-z0-9._:@-")
    tags = d.get("tags")
    if tags is None:
        tag_tuple: tuple[str, ...] = ()
    elif (
        type(tags) is list
        and len(tags) <= MAX_HELLO_TAGS
        and all(type(t) is str and len(t) <= MAX_HELLO_TAG_CHARS for t in tags)
    ):
        tag_tuple = tuple(tags)
    else:
        raise BadHello(
            f"hello.tags must be a list of at most {MAX_HELLO_TAGS} strings"
            f" of at most {MAX_HELLO_TAG_CHARS} characters"
        )
    return Hello(
        session=session,
        v=v,
        token=_opt_str(d, "token", MAX_HELLO_TOKEN_CHARS),
        host=_opt_str(d, "host"),
        agent=_opt_str(d, "agent"),
        tags=tag_tuple,
        compress=_str_list(d, "compress"),
        ext=_str_list(d, "ext"),
    )


#: An offer of codecs or extensions is a short list of short names.
_MAX_OFFERS = 16
_MAX_OFFER_CHARS = 32


def _str_list(d: dict[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key)
    if value is None:
        return ()
    if (
        type(value) is not list
        or len(value) > _MAX_OFFERS
        or not all(type(x) is str and len(x) <= _MAX_OFFER_CHARS for x in value)
    ):
        raise BadHello(
            f"hello.{key} must be a list of at most {_MAX_OFFERS} names "
            f"of at most {_MAX_OFFER_CHARS} characters"
        )
    return tuple(value)


_CLIENT_PARSERS: dict[str, Callable[[dict[str, Any]], ClientFrame]] = {
    "snap": _parse_snap,
    "delta": _parse_delta,
    "cdelta": _parse_cdelta,
    "batch": _parse_batch,
    "event": _parse_event,
    "bye": _parse_bye,
    "hello": _parse_hello,
}


def _seq_hint(d: dict[str, Any]) -> int | None:
    seq = d.get("seq")
    return seq if type(seq) is int and seq >= 0 else None


def client_frame_from_dict(d: dict[str, Any]) -> ClientFrame:
    """Validate one decoded client->collector object into a frame."""
    t = d.get("t")
    parser = _CLIENT_PARSERS.get(t) if type(t) is str else None
    if parser is None:
        if type(t) is not str:
            raise BadFrame("every frame needs a string field 't'", seq=_seq_hint(d))
        raise UnknownType(f"unknown frame type {t[:64]!r}", seq=_seq_hint(d))
    return parser(d)


def server_frame_from_dict(d: dict[str, Any]) -> ServerFrame:
    """Validate one decoded collector->client object into a frame."""
    t = d.get("t")
    if t == "ack":
        return Ack(_seq(d))
    if t == "flow":
        mi = d.get("min_interval")
        if not isinstance(mi, int | float) or isinstance(mi, bool) or not 0 <= mi < math.inf:
            raise BadFrame("flow.min_interval must be a number >= 0")
        return Flow(float(mi))
    if t == "welcome":
        acked = d.get("acked")
        session = d.get("session")
        v = d.get("v")
        if type(acked) is not int or acked < -1 or type(session) is not str or type(v) is not int:
            raise BadFrame("welcome needs v, session and acked")
        compress = d.get("compress")
        if compress is not None and type(compress) is not str:
            raise BadFrame("welcome.compress must be a codec name or null")
        ext = d.get("ext")
        if ext is not None and not (type(ext) is list and all(type(x) is str for x in ext)):
            raise BadFrame("welcome.ext must be a list of names")
        return Welcome(session=session, acked=acked, v=v, compress=compress,
                       negotiated="compress" in d,
                       ext=tuple(ext) if ext is not None else None)  # fmt: skip
    if t == "error":
        code, msg, fatal = d.get("code"), d.get("msg", ""), d.get("fatal")
        if type(code) is not str or type(fatal) is not bool or type(msg) is not str:
            raise BadFrame("error needs code, msg and fatal")
        return ErrorFrame(code=code, msg=msg, fatal=fatal, seq=_seq_hint(d))
    if type(t) is not str:
        raise BadFrame("every frame needs a string field 't'")
    raise UnknownType(f"unknown frame type {t[:64]!r}")


def error_frame(exc: ProtocolError) -> ErrorFrame:
    """The wire frame that reports ``exc``."""
    return ErrorFrame(code=exc.code, msg=exc.msg, fatal=exc.fatal, seq=exc.seq)
