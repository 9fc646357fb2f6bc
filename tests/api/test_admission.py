"""The cache's admission (admission.py): an answer is kept from the second
time its key is computed within a while."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deltawire.collector.api.admission import Doorkeeper

keys = st.lists(st.text(max_size=6), max_size=200)


@given(keys, st.text(max_size=6), st.integers(1, 50))
def test_a_key_asked_again_at_once_is_admitted(history: list[str], key: str, size: int) -> None:
    door = Doorkeeper(size)
    for k in history:
        door.admit(k)
    door.admit(key)
    assert door.admit(key)


@given(keys, st.integers(1, 50))
def test_a_key_never_seen_is_not_admitted(history: list[str], size: int) -> None:
    door = Doorkeeper(size)
    for k in history:
        door.admit(k)
    assert not door.admit("never seen: longer than any key of the history")


def test_a_key_is_remembered_one_to_two_turns() -> None:
    door = Doorkeeper(4)
    assert not door.admit("a")
    for k in "bcd":  # the turn fills: "a" moves to the turn before
        door.admit(k)
    for k in "efg":
        assert not door.admit(k)
    assert door.admit("a")  # still remembered, one turn back
    for k in "hijklmnop":  # two more turns of new keys
        door.admit(k)
    assert not door.admit("a")  # forgotten: admitted only once asked again
    assert door.admit("a")
