"""A query the engine refuses as too heavy answers 503 query_timeout at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from deltawire.collector.aggregate import threshold
from deltawire.protocol import Document

from .inproc import client, sqlite_store

BASE = 1_795_003_200.0


async def test_a_too_heavy_threshold_is_503_query_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store(tmp_path)
    try:
        store.write_batch(
            [Document("s", i, "sample", "p", BASE + i, "h", (), {"ms": i % 60}) for i in range(600)]
        )
        store.fold_rollups()
        # as folded before minutes kept their values (rollup_vals.py): raw reads
        with sqlite3.connect(store.path) as conn:
            conn.execute("DELETE FROM roll_vals")
            conn.execute("DELETE FROM roll_hvals")
        params = {"fn": "count", "field": "ms", "where": "ms > 30"}
        async with client(store) as (c, _):
            assert (await c.get("/aggregate", params=params)).json()["rows"][0]["value"] == 290
            monkeypatch.setattr(threshold, "MAX_RAW_ROWS", 100)
            r = await c.get("/aggregate", params={**params, "by": "host"})  # (not cached)
            assert r.status_code == 503
            assert r.json()["error"] == "query_timeout"
            assert "ms > 30" in r.json()["detail"]
    finally:
        store.close()
