"""``MongoStore.since`` (what ``GET /stream`` reads): new documents in ``_id`` order,
correct with several writers.

An ObjectId is made by the writing process: seconds, then 5 bytes random per
process, then a counter. One process's ids grow in the order it inserts, but
two writers' do not interleave in the order their documents become visible:
a restarted writer child, or two collectors on one database, may store a
document whose ``_id`` is below one already read. A reader that only asks for
``_id > cursor`` then never sees it.

So each read looks again ``SETTLE_S`` seconds (of ObjectId time) below its
cursor, by ``_id`` alone (an index-only scan), and fetches only the ids it
has not returned yet. What it returned is remembered while it is within the
window. A document that takes longer than that to become visible after its
``_id`` was made (a batch stuck that long in the driver) can still be missed:
the window bounds the cost of every read (ids per second of ingest times the
window), and a batch retried by the store gets fresh ids (see ``write_batch``).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any, Final

from bson.objectid import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from .base import API_SESSION

__all__ = ["SETTLE_S", "StreamReader"]

#: How far below its cursor (ObjectId seconds) each read looks again.
SETTLE_S: Final = 2


def _floor(oid: ObjectId) -> ObjectId:
    """The smallest ObjectId ``SETTLE_S`` seconds before ``oid``."""
    when = oid.generation_time - dt.timedelta(seconds=SETTLE_S)
    return ObjectId.from_datetime(max(when, dt.datetime.fromtimestamp(0, dt.UTC)))


class StreamReader:
    """The reads behind ``since`` for one store (one reader: the API's hub)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._returned: dict[ObjectId, None] = {}  # ids returned within the window

    def since(
        self,
        docs: Collection[dict[str, Any]],
        after: ObjectId | None,
        limit: int,
        timeout_ms: int,
        convert: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> tuple[list[dict[str, Any]], ObjectId | None]:
        """(documents stored after ``after`` not returned yet, the new cursor);
        ``after`` None: none, and the cursor of "now"."""
        with self._lock:
            if after is None:
                top = docs.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
                if top is None:
                    self._returned = {}
                    return [], None
                # Everything visible now counts as returned: a new reader
                # starts from "now".
                self._returned = dict.fromkeys(self._ids(docs, _floor(top["_id"]), timeout_ms))
                return [], top["_id"]
            fresh = [
                i for i in self._ids(docs, _floor(after), timeout_ms) if i not in self._returned
            ]
            fresh = fresh[:limit]
            out: list[dict[str, Any]] = []
            if fresh:
                raws = (
                    docs.find({"_id": {"$in": fresh}, "session": {"$ne": API_SESSION}})
                    .sort([("_id", ASCENDING)])
                    .max_time_ms(timeout_ms)
                )
                out = [convert(raw) for raw in raws]
                self._returned.update(dict.fromkeys(fresh))
                after = max(after, fresh[-1])
            floor = _floor(after)
            self._returned = {i: None for i in self._returned if i >= floor}
            return out, after

    @staticmethod
    def _ids(docs: Collection[dict[str, Any]], floor: ObjectId, timeout_ms: int) -> list[ObjectId]:
        return [
            raw["_id"]
            for raw in docs.find({"_id": {"$gt": floor}}, {"_id": 1})
            .sort([("_id", ASCENDING)])
            .max_time_ms(timeout_ms)
        ]
