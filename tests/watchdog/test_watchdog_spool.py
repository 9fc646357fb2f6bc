"""The spool on a real filesystem: append/commit/ack/reopen/bound/corruption,
as hypothesis state machines against a list model, plus a few pinned cases."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from deltawire.watchdog.spool import (
    HEADER,
    Record,
    Spool,
    SpoolError,
    SpoolLocked,
    lock_holder,
    session_dir,
    session_dirs,
    summarize,
)
from tests.strategies import examples

META = {"session": "s1", "host": "h", "agent": "test", "tags": ["a"]}

small_data = st.dictionaries(
    st.sampled_from("abcdef"),
    st.one_of(st.integers(-5, 5), st.text("xyz", max_size=30), st.booleans()),
    max_size=4,
)


def read_all(spool: Spool, after: int) -> list[Record]:
    cursor = spool.cursor(after)
    out: list[Record] = []
    try:
        while batch := cursor.next_batch(300):
            out += batch
    finally:
        cursor.close()
    return out


class SpoolMachine(RuleBasedStateMachine):
    """Unbounded spool: every committed record after the ack is read back, in order,
    exactly once, across reopens (which also must never reuse a seq)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="spool-test-"))
        self.dir = session_dir(self.root, "s1")
        self.spool = Spool(self.dir, max_bytes=1 << 30, segment_bytes=400, fsync="never",
                           meta=META)  # fmt: skip
        self.model: list[tuple[int, str, Any]] = []  # (seq, name, data) written
        self.acked = -1
        self.committed = -1
        self.seqs_used: set[int] = set()

    @rule(name=st.sampled_from(["process", "system"]), data=small_data,
          kind=st.sampled_from(["sample", "event"]))  # fmt: skip
    def append(self, name: str, data: dict[str, Any], kind: str) -> None:
        seq = self.spool.append(kind, 1.5, name, data)  # type: ignore[arg-type]
        assert seq not in self.seqs_used
        assert not self.model or seq > self.model[-1][0]
        self.seqs_used.add(seq)
        self.model.append((seq, name, data))

    @rule()
    def commit(self) -> None:
        self.spool.commit()
        self.committed = self.model[-1][0] if self.model else self.committed

    @precondition(lambda self: any(m[0] <= self.committed for m in self.model))
    @rule(frac=st.floats(0, 1))
    def ack(self, frac: float) -> None:
        committed = [s for s, _, _ in self.model if s <= self.committed]
        seq = committed[int(frac * (len(committed) - 1))]
        self.spool.ack(seq)
        self.acked = max(self.acked, seq)

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = Spool(self.dir, max_bytes=1 << 30, segment_bytes=400, fsync="never")
        # Everything on disk counts as committed after a restart.
        self.committed = self.model[-1][0] if self.model else -1
        # The ack is not persisted: whatever is still on disk is resent (the
        # collector is idempotent), so the model forgets it too, but keeps
        # only the records whose segments survived.
        on_disk = {r.seq for r in read_all(self.spool, -1)}
        self.model = [m for m in self.model if m[0] in on_disk or m[0] > self.acked]
        self.acked = -1

    @invariant()
    def reads_back_exactly_what_was_committed(self) -> None:
        got = read_all(self.spool, self.acked)
        want = [m for m in self.model if self.acked < m[0] <= self.committed]
        assert [(r.seq, r.name, r.data) for r in got] == want

    @invariant()
    def accounting(self) -> None:
        assert self.spool.total_bytes == sum(p.stat().st_size for p in self.dir.glob("*.seg"))
        unacked = [m for m in self.model if m[0] > self.acked]
        assert self.spool.pending == len(unacked)

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.root, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(max_examples=examples(60), stateful_step_count=40, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
test_spool_state_machine = SpoolMachine.TestCase


class BoundedSpoolMachine(RuleBasedStateMachine):
    """A bounded spool keeps within its bound and drops the *oldest* unacked data,
    reporting exactly how much."""

    MAX = 3000

    def __init__(self) -> None:
        super().__init__()
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="spool-bound-"))
        self.spool = Spool(session_dir(self.root, "s1"), max_bytes=self.MAX, fsync="never",
                           meta=META)  # fmt: skip
        self.model: list[int] = []
        self.dropped_reported = 0
        self.largest = 0

    @rule(size=st.integers(0, 400))
    def append(self, size: int) -> None:
        seq = self.spool.append("sample", 1.0, "x", {"pad": "p" * size})
        self.spool.commit()
        self.model.append(seq)
        self.largest = max(self.largest, HEADER.size + size + 40)
        dropped = self.spool.take_dropped()
        if dropped is not None:
            count, first, last = dropped
            assert first <= last
            self.dropped_reported += count

    @invariant()
    def bound_holds(self) -> None:
        assert self.spool.total_bytes <= self.MAX + self.largest

    @invariant()
    def survivors_are_the_newest(self) -> None:
        got = [r.seq for r in read_all(self.spool, -1)]
        assert got == self.model[len(self.model) - len(got) :]
        assert len(got) + self.dropped_reported == len(self.model)
        assert self.spool.dropped_total == self.dropped_reported

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.root, ignore_errors=True)


BoundedSpoolMachine.TestCase.settings = settings(max_examples=examples(40), stateful_step_count=50,
                                                 deadline=None)  # fmt: skip
test_bounded_spool_state_machine = BoundedSpoolMachine.TestCase


def _filled(tmp_path: pathlib.Path, n: int = 60, segment_bytes: int = 500) -> Spool:
    spool = Spool(session_dir(tmp_path, "s1"), segment_bytes=segment_bytes, meta=META)
    for i in range(n):
        spool.append("sample", 100.0 + i, "process", {"i": i, "pad": "z" * 20})
    spool.commit()
    return spool


@pytest.mark.parametrize("how", ["flip", "truncate_header", "garbage_length", "zeroes"])
def test_a_corrupt_segment_is_skipped_and_the_rest_replayed(tmp_path: pathlib.Path,
                                                            how: str) -> None:  # fmt: skip
    spool = _filled(tmp_path)
    segs = sorted(spool.directory.glob("*.seg"))
    spool.close()
    assert len(segs) >= 4
    victim = segs[1]
    raw = bytearray(victim.read_bytes())
    mid = len(raw) // 2
    if how == "flip":
        raw[mid] ^= 0xFF
    elif how == "truncate_header":
        raw = raw[: HEADER.size // 2]
    elif how == "garbage_length":
        raw[0:4] = b"\xff\xff\xff\xff"
    else:
        raw[:] = bytes(len(raw))
    victim.write_bytes(bytes(raw))

    reopened = Spool(spool.directory)
    got = [r.data["i"] for r in read_all(reopened, -1)]  # type: ignore[index]
    # In order, no duplicates, every other segment intact.
    assert got == sorted(set(got))
    lost = set(range(60)) - set(got)
    assert lost  # something of the victim is gone ...
    assert max(lost) - min(lost) < 60 // len(segs) + 2  # ... and only from the victim
    assert got[-1] == 59
    reopened.close()


def test_corruption_found_while_reading_is_skipped(tmp_path: pathlib.Path) -> None:
    spool = _filled(tmp_path)
    victim = sorted(spool.directory.glob("*.seg"))[0]
    with open(victim, "r+b") as f:  # the disk rots under a running watchdog
        f.seek(HEADER.size + 3)
        f.write(b"\x00\x01")
    got = [r.data["i"] for r in read_all(spool, -1)]  # type: ignore[index]
    assert got[0] > 0 and got[-1] == 59 and got == sorted(got)
    spool.close()


def test_torn_last_record_is_dropped_on_recovery(tmp_path: pathlib.Path) -> None:
    spool = _filled(tmp_path, n=5, segment_bytes=1 << 20)
    seg = next(spool.directory.glob("*.seg"))
    spool.close()
    with open(seg, "ab") as f:
        f.write(HEADER.pack(100, 0, 5) + b'{"t":"sam')  # a crash mid-write
    reopened = Spool(spool.directory)
    assert [r.seq for r in read_all(reopened, -1)] == [0, 1, 2, 3, 4]
    # New records go to a new segment after the reserved block: no seq reused.
    seq = reopened.append("event", 1.0, "e", None)
    reopened.commit()
    assert seq > 4
    assert [r.seq for r in read_all(reopened, 3)] == [4, seq]
    reopened.close()


def test_seqs_continue_across_restarts_and_blocks(tmp_path: pathlib.Path) -> None:
    spool = _filled(tmp_path, n=3)
    spool.ack(2)  # everything acked: segments deleted, only state.json remembers
    assert not list(spool.directory.glob("*.seg"))
    spool.close()
    again = Spool(spool.directory)
    assert again.append("event", 1.0, "e", None) > 2
    again.close()


def test_a_locked_spool_refuses_a_second_owner(tmp_path: pathlib.Path) -> None:
    spool = _filled(tmp_path, n=1)
    assert lock_holder(spool.directory) == os.getpid()
    with pytest.raises(SpoolLocked) as info:
        Spool(spool.directory)
    assert info.value.pid == os.getpid()
    spool.close()
    assert lock_holder(spool.directory) is None
    Spool(spool.directory).close()


def test_bye_seals_and_done_when_acked(tmp_path: pathlib.Path) -> None:
    spool = _filled(tmp_path, n=3)
    seq = spool.append("bye", 9.0, None, {"exit_code": 3})
    spool.commit()
    assert spool.sealed and not spool.done
    with pytest.raises(SpoolError):
        spool.append("sample", 1.0, "x", {})
    spool.ack(seq)
    assert spool.done
    spool.destroy()
    assert not spool.directory.exists()
    assert session_dirs(tmp_path) == []


def test_uncommitted_records_are_not_read(tmp_path: pathlib.Path) -> None:
    spool = _filled(tmp_path, n=2)
    spool.append("sample", 1.0, "x", {"late": True})
    cursor = spool.cursor(-1)
    assert [r.seq for r in cursor.next_batch()] == [0, 1]
    assert cursor.next_batch() == []
    spool.commit()
    assert [r.seq for r in cursor.next_batch()] == [2]
    cursor.close()
    spool.close()


def test_summary_of_a_backlog(tmp_path: pathlib.Path) -> None:
    spool = _filled(tmp_path, n=10)
    spool.close()
    summary = summarize(spool.directory)
    assert (summary.session, summary.records, summary.first_seq, summary.last_seq) == (
        "s1", 10, 0, 9)  # fmt: skip
    assert summary.owner_pid is None and summary.oldest_ts == 100.0 and not summary.ended


def test_unreadable_state_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    d = session_dir(tmp_path, "s1")
    d.mkdir()
    (d / "state.json").write_text("{nope")
    with pytest.raises(SpoolError, match="unreadable spool state"):
        Spool(d)


def test_the_bye_never_drops_data(tmp_path: pathlib.Path) -> None:
    spool = Spool(session_dir(tmp_path, "s1"), max_bytes=4096, meta=META)
    while spool.total_bytes < 4096 - 300:
        spool.append("sample", 1.0, "x", {"pad": "p" * 100})
    spool.take_dropped()
    before = spool.dropped_total
    spool.append("bye", 2.0, None, {"exit_code": 0, "pad": "p" * 400})
    assert spool.dropped_total == before and spool.take_dropped() is None
    spool.close()
