"""How documents and sessions look in answers, and how big an answer may get.

Documents leave the store with ``ts`` as epoch seconds; the API shows
``timestamp`` as RFC 3339 (milliseconds, UTC). ``fields=`` keeps only the
named paths of ``data``; a listing stops at a byte budget (``pack_page``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from deltawire.collector.stores.base import FoundPage
from deltawire.formats import rfc3339

__all__ = ["doc_out", "found_page", "pack_page", "rfc3339", "select_paths", "session_out", "within"]


def select_paths(data: Any, paths: Sequence[tuple[str, ...]]) -> dict[str, Any] | None:
    """The parts of ``data`` at ``paths`` (split dotted paths), nested as in it;
    None when none of them is present."""
    out: dict[str, Any] = {}
    for path in paths:
        node = data
        for key in path:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            into = out
            for key in path[:-1]:
                into = into.setdefault(key, {})
            into[path[-1]] = node
    return out or None


def doc_out(d: dict[str, Any], paths: Sequence[tuple[str, ...]] | None = None) -> dict[str, Any]:
    out = {
        "id": d["id"],
        "session": d.get("session"),
        "seq": d.get("seq"),
        "kind": d.get("kind"),
        "name": d.get("name"),
        "host": d.get("host"),
        "tags": list(d.get("tags") or ()),
        "timestamp": rfc3339(d["ts"]),
    }
    if d.get("value") is not None:
        out["value"] = d["value"]
    data = d.get("data")
    if data is not None and paths is not None:
        data = select_paths(data, paths)
    if data is not None:
        out["data"] = data
    return out


_TIME_KEYS = ("first_seen", "last_seen", "ended", "ended_at")


def session_out(s: dict[str, Any]) -> dict[str, Any]:
    out = dict(s)
    for key in _TIME_KEYS:
        v = out.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = rfc3339(v)
    return out


def pack_page(items: Sequence[dict[str, Any]], budget: int) -> tuple[bytes, int]:
    """``items`` as JSON array elements joined, stopping before the budget
    (in bytes) would be passed; always at least one. Returns (joined, count)."""
    parts: list[bytes] = []
    used = 0
    for item in items:
        part = orjson.dumps(item)
        used += len(part) + 1
        if parts and used > budget:
            break
        parts.append(part)
    return b",".join(parts), len(parts)


def within(page: FoundPage, budget: int) -> bool:
    """Whether ``pack_page`` would keep all of ``page`` under ``budget``."""
    return page.count <= 1 or len(page.items) + 1 <= budget


def found_page(
    fetched: list[dict[str, Any]],
    limit: int,
    paths: Sequence[tuple[str, ...]] | None,
    budget: int,
) -> FoundPage:
    """The page of ``find``'s documents, ``fetched`` with one more than
    ``limit`` asked for: "next" is set exactly when another page exists."""
    docs = fetched[:limit]
    items, n = pack_page([doc_out(d, paths) for d in docs], budget)
    more = len(fetched) > limit or n < len(docs)
    last = docs[n - 1] if more and n else None
    beyond = fetched[-1]["ts"] if len(fetched) > limit else None
    return FoundPage(items, n, None if last is None else (last["ts"], last["id"]), beyond)
