"""The store catalog (the /query vocabulary), kept current at ingest, on both stores."""

from __future__ import annotations

import pathlib

from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.stores import Store, open_store
from deltawire.collector.stores.catalog import numeric_paths
from deltawire.protocol import Document, Hello

from .test_store_contract import T0, store  # noqa: F401  (the two-store fixture)


def _doc(session: str, seq: int, kind: str, name: str, host: str, data: dict | None) -> Document:
    return Document(session, seq, kind, name, T0 + seq, host, ("prod",), data)  # type: ignore[arg-type]


def test_catalog_is_kept_at_ingest(store: Store) -> None:  # noqa: F811
    assert store.catalog().names.get("sample", frozenset()) == frozenset()
    store.session_connected(Hello("s1", host="web-1", agent="agent/1", tags=("canary",)), T0)
    store.write_batch(
        [
            _doc("s1", 0, "sample", "process", "web-1",
                 {"cpu": {"percent": 1.5, "user": 2}, "mem": {"rss": 10}, "ok": True, "st": "R"}),
            _doc("s1", 1, "event", "request_failed", "web-1", {"duration_ms": 120}),
            _doc("s2", 0, "sample", "system", "db-1", {"cpu": {"percent": 3}, "load": [1, 2]}),
        ]
    )  # fmt: skip
    store.create({"name": "http_latency_ms", "value": 12, "tags": ["api"], "ts": T0})
    cat = store.catalog()
    assert cat.names["sample"] == {"process", "system"}
    assert cat.names["event"] == {"request_failed"}
    assert cat.names["metric"] == {"http_latency_ms"}
    # Only numeric leaves: booleans, strings and lists are no data paths.
    assert cat.paths["process"] == {"cpu.percent", "cpu.user", "mem.rss"}
    assert cat.paths["system"] == {"cpu.percent"}
    assert cat.paths["request_failed"] == {"duration_ms"}
    assert cat.hosts == {"web-1", "db-1"}
    assert cat.sessions == {"s1", "s2"}
    assert {"prod", "canary", "api"} <= cat.tags


def test_a_new_stream_of_a_known_session_adds_its_paths(store: Store) -> None:  # noqa: F811
    store.write_batch([_doc("s1", 0, "sample", "process", "web-1", {"cpu": {"percent": 1}})])
    store.write_batch([_doc("s1", 1, "sample", "gpu", "web-1", {"util": 50})])
    assert store.catalog().paths["gpu"] == {"util"}


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda c: st.dictionaries(st.text(max_size=3), c, max_size=4), max_leaves=12))  # fmt: skip
def test_numeric_paths_name_numbers_only(data: object) -> None:
    for path in numeric_paths(data):
        node = data
        for key in path.split("."):
            assert isinstance(node, dict)
            node = node[key]
        assert isinstance(node, int | float) and not isinstance(node, bool)


def test_later_samples_with_new_leaves_are_learnt_by_the_tiers(tmp_path: pathlib.Path) -> None:
    """Paths come from a session's first sample at ingest; one that appears
    later (a new counter) is learnt when the tiers fold it into a series."""
    sqlite = open_store(f"sqlite:///{tmp_path / 'cat.db'}")
    sqlite.open()
    try:
        sqlite.write_batch([_doc("s1", 0, "sample", "process", "web-1", {"cpu": {"percent": 1}})])
        assert sqlite.catalog().paths["process"] == {"cpu.percent"}
        sqlite.write_batch(
            [_doc("s1", 1, "sample", "process", "web-1", {"cpu": {"percent": 2}, "gc": {"pauses": 3}}),
             _doc("s1", 2, "event", "request_failed", "web-1", {"duration_ms": 120}),
             _doc("s1", 3, "event", "request_failed", "web-1", {"duration_ms": 9, "retries": 2})]
        )  # fmt: skip
        sqlite.fold_rollups()
        cat = sqlite.catalog()
        assert cat.paths["process"] == {"cpu.percent", "gc.pauses"}
        assert cat.paths["request_failed"] == {"duration_ms", "retries"}
    finally:
        sqlite.close()
