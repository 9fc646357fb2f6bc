"""The protocol's error codes, as a small exception hierarchy.

Every rule of the wire protocol that a peer can break maps to exactly one
exception class here, and each class carries the code and the fatality that
PROTOCOL.md assigns to it, so callers never keep their own table.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ERROR_CODES",
    "EXTENSION_CODES",
    "AuthFailed",
    "BadFrame",
    "BadHello",
    "BadJson",
    "BadSeq",
    "BadStream",
    "FrameTooLarge",
    "IdleTimeout",
    "NoBase",
    "Overloaded",
    "ProtocolError",
    "Replaced",
    "TooManyErrors",
    "UnknownType",
    "UnsupportedVersion",
]


class ProtocolError(Exception):
    """A peer broke the protocol. ``code`` and ``fatal`` are what goes on the wire."""

    code: ClassVar[str] = "protocol"
    fatal: ClassVar[bool] = True

    def __init__(self, msg: str, *, seq: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.seq = seq

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.msg!r}, seq={self.seq!r})"


class BadHello(ProtocolError):
    code = "bad_hello"
    fatal = True


class AuthFailed(ProtocolError):
    code = "auth"
    fatal = True


class UnsupportedVersion(ProtocolError):
    code = "version"
    fatal = True


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"
    fatal = True


class Overloaded(ProtocolError):
    code = "overloaded"
    fatal = True


class IdleTimeout(ProtocolError):
    code = "idle"
    fatal = True


class BadStream(ProtocolError):
    """A negotiated compressed stream is corrupt, declares a window over the
    cap, or inflates beyond the bound of one read (a zstd bomb). An extension
    code (docs/protocol.md); nothing after it can be read."""

    code = "bad_stream"
    fatal = True


class TooManyErrors(ProtocolError):
    code = "too_many_errors"
    fatal = True


class BadJson(ProtocolError):
    code = "bad_json"
    fatal = False


class BadFrame(ProtocolError):
    code = "bad_frame"
    fatal = False


class UnknownType(ProtocolError):
    code = "unknown_type"
    fatal = False


class BadSeq(ProtocolError):
    code = "bad_seq"
    fatal = False


class NoBase(ProtocolError):
    code = "no_base"
    fatal = False


class Replaced(ProtocolError):
    """Another connection said hello for this session and took it over."""

    code = "replaced"
    fatal = True


_CLASSES: tuple[type[ProtocolError], ...] = (
    BadHello,
    AuthFailed,
    UnsupportedVersion,
    FrameTooLarge,
    Overloaded,
    IdleTimeout,
    TooManyErrors,
    BadJson,
    BadFrame,
    UnknownType,
    BadSeq,
    NoBase,
    Replaced,
)

#: code -> fatal, exactly the table of PROTOCOL.md.
ERROR_CODES: dict[str, bool] = {cls.code: cls.fatal for cls in _CLASSES}

#: Codes of this project's negotiated extensions (docs/protocol.md): only a
#: peer that negotiated one can receive them.
EXTENSION_CODES: dict[str, bool] = {BadStream.code: BadStream.fatal}
