"""The soak's audit must be able to fail: a missing, a duplicated and a
corrupted sample among the acked ones are each counted (bench/soak.py)."""

from __future__ import annotations

import pathlib
import sqlite3

from bench.soak import PERIOD, T0, Agent, _audit, sample
from deltawire.collector.stores import open_store
from deltawire.protocol import Document


def test_audit_counts_missing_duplicated_and_corrupted(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "audit.db"
    uri = f"sqlite:///{db}"
    store = open_store(uri)
    store.open()
    agent = Agent(index=3, session="audit", port=0, next_seq=12, acked=9)
    docs = [Document("audit", s, "sample", "proc", T0 + s * PERIOD, "h", (), sample(3, s))
            for s in range(12) if s != 4]  # fmt: skip
    docs[6] = Document("audit", 7, "sample", "proc", T0 + 7 * PERIOD, "h", (), {"changed": 1})
    store.write_batch(docs)
    store.close()
    assert _audit(uri, [agent])["missing"] == 1  # seq 4, acked but absent
    # A second copy of seq 2, written behind the store's back.
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO docs (session, seq, kind, name, host, tags, ts, data)"
                     " SELECT session, seq, kind, name, host, tags, ts, data FROM docs"
                     " WHERE session = 'audit' AND seq = 2")  # fmt: skip
    result = _audit(uri, [agent])
    assert (result["missing"], result["duplicated"], result["corrupted"]) == (1, 1, 1)
    assert (result["acked"], result["sent"], result["stored"]) == (10, 12, 12)
