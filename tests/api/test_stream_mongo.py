"""``/stream``'s read on MongoDB (``Store.since``) with several writers: a
document another writer stores with an ``_id`` below the reader's cursor (its
ObjectId was made earlier, or by a process whose random bytes sort lower) is
still delivered, once, and nothing is delivered twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bson.objectid import ObjectId

from deltawire.collector.stores import open_store
from deltawire.protocol import Document

pytestmark = pytest.mark.mongo


@pytest.fixture
def store(mongo_uri: str) -> Iterator[Any]:
    s = open_store(mongo_uri, app_env=f"stream{uuid.uuid4().hex[:12]}")
    s.open()
    yield s
    s.close()


def _docs(session: str, first: int, n: int) -> list[Document]:
    now = time.time()
    return [
        Document(session, first + i, "sample", "p", now + i, "h", (), {"v": i}) for i in range(n)
    ]


def _late_copy(store: Any, cursor: str, session: str, seq: int) -> str:
    """Insert, as another writer would, a document whose _id is below ``cursor``
    (same second, lowest random and counter bytes)."""
    raw = store._docs().find_one({})
    oid = ObjectId.from_datetime(ObjectId(cursor).generation_time)
    assert oid < ObjectId(cursor)
    raw.update(_id=oid, session=session, seq=seq)
    store._docs().insert_one(raw)
    return str(oid)


def test_a_document_stored_below_the_cursor_is_still_delivered_once(store: Any) -> None:
    store.write_batch(_docs("a", 0, 5))
    seen, cursor = store.since(None, 100)
    assert seen == [] and cursor is not None  # starts at "now"
    store.write_batch(_docs("a", 5, 3))
    got, cursor = store.since(cursor, 100)
    assert [d["seq"] for d in got] == [5, 6, 7]
    late = _late_copy(store, cursor, "b", 0)
    got, cursor2 = store.since(cursor, 100)
    assert [d["id"] for d in got] == [late]
    assert cursor2 == cursor  # the cursor never moves back
    store.write_batch(_docs("a", 8, 2))
    got, cursor3 = store.since(cursor2, 100)
    assert [d["seq"] for d in got] == [8, 9]  # no repeats of 5-7 or the late one
    assert store.since(cursor3, 100)[0] == []


def test_a_new_reader_starts_at_now_and_pages_by_limit(store: Any) -> None:
    store.write_batch(_docs("a", 0, 5))
    _, cursor = store.since(None, 100)
    assert store.since(cursor, 100)[0] == []
    store.write_batch(_docs("a", 5, 5))
    first, cursor = store.since(cursor, 3)
    rest, cursor = store.since(cursor, 3)
    assert [d["seq"] for d in first + rest] == [5, 6, 7, 8, 9]
    assert store.since(cursor, 3)[0] == []
