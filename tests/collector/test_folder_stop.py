"""The folder process stops when its owner says so, backlog or not."""

from __future__ import annotations

import pathlib

from deltawire.collector.stores import open_store
from deltawire.collector.stores.sqlite import _FOLD_SLICE
from deltawire.protocol import Document


def test_folder_stops_between_slices_of_a_backlog(tmp_path: pathlib.Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    store.open()
    try:
        backlog = 3 * _FOLD_SLICE + 1
        store.write_batch(
            [
                Document("s", i, "sample", "p", 1_795_003_200.0 + i, None, (), {"v": i})
                for i in range(backlog)
            ]
        )
        slices: list[int] = []
        absorb = store._absorb

        def counted(limit: int) -> int:
            n = absorb(limit)
            slices.append(n)
            return n

        store._absorb = counted  # type: ignore[method-assign]
        asked: list[float] = []

        def stop(timeout: float) -> bool:
            asked.append(timeout)
            return True  # the owner closed our stdin before we began

        store.fold_forever(stop)
        # One slice, then the owner is asked (and says stop): the backlog
        # is left for the next folder, not folded to the end first.
        assert slices == [_FOLD_SLICE]
        assert asked and asked[-1] == 0
    finally:
        store.close()
