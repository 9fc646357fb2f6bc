"""Regenerate the ``*.expected.json`` golden files: python -m tests.captures.regen

Review the diff by hand: the expected files are the contract, not a snapshot.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import orjson

from deltawire.protocol import NEED_DATA, Document, Hello, ProtocolError, ServerConnection

HERE = pathlib.Path(__file__).parent


def outcomes(wire: bytes, *, step: int | None = None) -> list[dict[str, Any]]:
    """What the collector side makes of a capture: hello, documents and errors."""
    conn = ServerConnection()
    out: list[dict[str, Any]] = []
    chunks = [wire] if step is None else [wire[i : i + step] for i in range(0, len(wire), step)]
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            try:
                ev = conn.next_event()
            except ProtocolError as exc:
                out.append({"error": exc.code, "seq": exc.seq, "fatal": exc.fatal})
                if exc.fatal:
                    return out
                continue
            if ev is NEED_DATA:
                break
            if isinstance(ev, Hello):
                out.append({"hello": ev.session, "host": ev.host, "tags": list(ev.tags)})
            else:
                assert isinstance(ev, Document)
                out.append({"doc": {"seq": ev.seq, "kind": ev.kind, "name": ev.name, "ts": ev.ts,
                                    "data": ev.data}})  # fmt: skip
    return out


def main() -> int:
    for capture in sorted(HERE.glob("*.ndjson")):
        expected = capture.with_suffix(".expected.json")
        expected.write_bytes(
            orjson.dumps(outcomes(capture.read_bytes()), option=orjson.OPT_INDENT_2)
        )
        print(f"wrote {expected.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
