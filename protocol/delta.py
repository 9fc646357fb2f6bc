"""The delta chain: full samples -> snap/delta frames -> full documents.

``DeltaEncoder`` runs on the client, ``Reassembler`` on the collector. Both
hold one chain per stream name and per connection: the chain restarts with a
snap on every connection, which is what lets any collector pick a session up.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from ._fastdc import fast_frozen
from .counter import apply_counter_patch, to_counter_patch
from .errors import BadFrame, BadSeq, NoBase, UnknownType
from .frames import Bye, CDelta, ClientFrame, Delta, Event, Hello, Snap
from .merge_patch import apply_patch, make_patch, patch_is_smaller

__all__ = ["DEFAULT_KEYFRAME_EVERY", "DeltaEncoder", "Document", "Kind", "Reassembler"]

#: A snap every this many samples of a name bounds how much one lost or
#: corrupt frame can cost a reader, at ~1% extra bytes for 1 s samples.
DEFAULT_KEYFRAME_EVERY: Final = 100

Kind = Literal["sample", "event", "session"]


@fast_frozen
class Document:
    """One stored document, fully reconstructed (PROTOCOL.md, "What is stored")."""

    session: str
    seq: int
    kind: Kind
    name: str
    ts: float
    host: str | None
    tags: tuple[str, ...]
    data: dict[str, Any] | None


class DeltaEncoder:
    """Full samples in, snap or delta frames out, for one connection."""

    __slots__ = ("_last", "_since_snap", "counter", "keyframe_every")

    def __init__(
        self, keyframe_every: int = DEFAULT_KEYFRAME_EVERY, *, counter: bool = False
    ) -> None:
        """``counter``: send ``cdelta`` frames (the negotiated counter extension)."""
        if keyframe_every < 1:
            raise ValueError("keyframe_every must be >= 1")
        self.keyframe_every = keyframe_every
        self.counter = counter
        self._last: dict[str, dict[str, Any]] = {}
        self._since_snap: dict[str, int] = {}

    def reset(self) -> None:
        """Forget every chain: call on each new connection."""
        self._last.clear()
        self._since_snap.clear()

    def encode(self, seq: int, ts: float, name: str, data: dict[str, Any]) -> Snap | Delta | CDelta:
        """The frame for one sample. ``data`` must not be mutated afterwards."""
        last = self._last.get(name)
        count = self._since_snap.get(name, 0)
        frame: Snap | Delta | CDelta
        if last is None or count + 1 >= self.keyframe_every:
            frame = self._snap(seq, ts, name, data)
        else:
            patch, smaller = patch_is_smaller(last, data)
            counted = to_counter_patch(last, patch) if smaller and self.counter else None
            # A patch is only worth sending if it is smaller than the sample
            # (many deletions can make it larger).
            if not smaller or (self.counter and counted is None):
                frame = self._snap(seq, ts, name, data)
            elif counted is not None:
                frame = CDelta(seq, ts, name, counted)
                self._since_snap[name] = count + 1
            else:
                frame = Delta(seq, ts, name, patch)
                self._since_snap[name] = count + 1
        self._last[name] = data
        return frame

    def _snap(self, seq: int, ts: float, name: str, data: dict[str, Any]) -> Snap:
        make_patch(None, data)  # rejects null members before they reach the wire
        self._since_snap[name] = 0
        return Snap(seq, ts, name, data)


class Reassembler:
    """Client frames in, full documents out, for one connection of one session.

    Enforces the ordering rules: seq strictly increasing across all frames,
    a snap before the first delta of a name. A rejected frame raises and
    leaves every chain and the last seq exactly as they were.
    """

    __slots__ = ("chains", "counter", "host", "last_seq", "session", "tags")

    def __init__(self, session: str, host: str | None = None, tags: tuple[str, ...] = ()) -> None:
        #: The counter extension was negotiated: ``cdelta`` frames are valid.
        self.counter = False
        self.session = session
        self.host = host
        self.tags = tags
        self.last_seq = -1
        #: name -> the last full sample of that stream on this connection: the
        #: base of its next delta (ServerConnection's fast path applies deltas
        #: to it directly).
        self.chains: dict[str, dict[str, Any]] = {}

    @classmethod
    def for_hello(cls, hello: Hello) -> Reassembler:
        return cls(hello.session, hello.host, hello.tags)

    def feed(self, frame: ClientFrame) -> Document:
        if type(frame) is Hello:
            raise BadFrame("hello was already received on this connection")
        seq = frame.seq  # type: ignore[union-attr]
        if seq <= self.last_seq:
            raise BadSeq(f"seq {seq} is not greater than the previous seq {self.last_seq}", seq=seq)
        kind: Kind
        data: dict[str, Any] | None
        if type(frame) is Delta or type(frame) is CDelta:
            base = self.chains.get(frame.name)
            if base is None:
                raise NoBase(f"delta for {frame.name!r} without a snap on this connection", seq=seq)
            if type(frame) is Delta:
                data = apply_patch(base, frame.data)
            elif not self.counter:
                raise UnknownType("cdelta needs the counter extension (hello.ext)", seq=seq)
            else:
                try:
                    data = apply_counter_patch(base, frame.data)
                except BadFrame as exc:
                    raise BadFrame(exc.msg, seq=seq) from None
            self.chains[frame.name] = data
            kind, name = "sample", frame.name
        elif type(frame) is Snap:
            data = self.chains[frame.name] = frame.data
            kind, name = "sample", frame.name
        elif type(frame) is Event:
            data, kind, name = frame.data, "event", frame.name
        else:
            assert type(frame) is Bye
            data, kind, name = frame.data, "session", "end"
        self.last_seq = seq
        return Document(self.session, seq, kind, name, frame.ts, self.host, self.tags, data)
