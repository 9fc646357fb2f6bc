"""What a ``ServerConnection`` makes of a byte stream, for the limit tests and
the fuzzers (tests/protocol/test_fuzz.py, ``python -m bench.fuzz``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from deltawire.protocol import NEED_DATA, Document, ProtocolError, ServerConnection
from deltawire.protocol.frames import INT64_MAX, INT64_MIN, MAX_DATA_DEPTH

__all__ = ["check_documents", "outcomes"]


def outcomes(pieces: Iterable[bytes], *, bulk: bool) -> list[Any]:
    """Feed ``pieces`` one by one; every hello, document and ``ProtocolError``
    that comes out, in order, through ``next_events`` (``bulk``) or
    ``next_event``. Stops at the first fatal error, as the collector does."""
    conn = ServerConnection()
    out: list[Any] = []
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            try:
                if bulk:
                    before = len(out)
                    conn.next_events(out)
                    if len(out) == before:
                        break
                else:
                    event = conn.next_event()
                    if event is NEED_DATA:
                        break
                    out.append(event)
            except ProtocolError as exc:
                out.append(exc)
                if exc.fatal:
                    return out
    return out


def check_documents(out: list[Any]) -> None:
    """Assert what any input may produce: documents in increasing seq, whose
    data keeps the protocol's limits and can be written back as JSON."""
    last = -1
    for item in out:
        if not isinstance(item, Document):
            continue
        assert item.seq > last, "seq not increasing"
        last = item.seq
        if item.data is None:
            continue
        orjson.dumps(item.data)  # servable: the API can write it back
        stack: list[tuple[Any, int]] = [(item.data, 0)]
        while stack:
            node, depth = stack.pop()
            assert depth <= MAX_DATA_DEPTH, "data nests too deep"
            children = node.values() if type(node) is dict else node if type(node) is list else ()
            for child in children:
                if type(child) is int:
                    assert INT64_MIN <= child <= INT64_MAX, "an integer outside int64"
                elif type(child) in (dict, list):
                    stack.append((child, depth + 1))
