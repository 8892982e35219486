"""The lookahead: over a range of a log, the newest version of each order, so that an event with a
newer one of its order ahead in the range is replaced rather than sent first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.lookahead import Lookahead
from connector.structs import OrderChange, Record, TopicPartition

TP = TopicPartition("orders", 0)


def _change(offset: int, key: str, updated_at: float | None = None) -> OrderChange:
    change = OrderChange(Record(TP.topic, TP.partition, offset, key.encode(), b"{}"), key, "upsert")
    if updated_at is not None:
        from datetime import UTC, datetime

        change.updated_at = datetime.fromtimestamp(updated_at, UTC)
    return change


@given(st.lists(st.tuples(st.sampled_from("abc"), st.none() | st.integers(0, 5)), min_size=1, max_size=40))
def test_an_event_is_superseded_only_by_a_newer_one_of_its_order_in_the_range(
    events: list[tuple[str, int | None]],
) -> None:
    """Whatever the mix of events with and without ``updated_at``, an event is never replaced unless
    another event of its order in the range is newer (so it could not be the one to send); outside the
    range, never."""
    changes = [_change(i + 10, key, stamp) for i, (key, stamp) in enumerate(events)]
    ahead = Lookahead(10, 10 + len(changes), max_keys=100)
    for change in changes:
        ahead.note(change)
    for change in changes:
        if ahead.superseded(change, change.record.offset):
            assert any(o.key == change.key and change.version.older_than(o.version) for o in changes)
    outside = _change(10 + len(changes), "a")
    assert not ahead.superseded(outside, outside.record.offset)


@given(
    st.lists(st.sampled_from("abc"), min_size=1, max_size=40),
    st.booleans(),
    st.lists(st.integers(0, 5), min_size=40, max_size=40),
)
def test_every_event_but_the_newest_of_its_order_is_superseded(
    keys: list[str], timed: bool, stamps: list[int]
) -> None:
    """Where an order's events all carry ``updated_at``, or none does, every one of them but the
    newest (and a late one older than what precedes it) is superseded."""
    changes = [_change(i + 10, key, stamps[i] if timed else None) for i, key in enumerate(keys)]
    ahead = Lookahead(10, 10 + len(changes), max_keys=100)
    for change in changes:
        ahead.note(change)
    for change in changes:
        newer = any(o.key == change.key and change.version.older_than(o.version) for o in changes)
        assert ahead.superseded(change, change.record.offset) == newer


def test_past_its_bound_orders_are_counted_not_noted() -> None:
    ahead = Lookahead(0, 10, max_keys=2)
    for i, key in enumerate("abcd"):
        ahead.note(_change(i, key))
    assert (len(ahead), ahead.truncated) == (2, 2)
    assert not ahead.superseded(_change(0, "c"), 0)


def _delete(offset: int, key: str, updated_at: float | None = None) -> OrderChange:
    change = _change(offset, key, updated_at)
    change.op = "delete"
    return change


def test_a_delete_is_not_replaced_by_the_tombstone_after_it_but_by_a_newer_update() -> None:
    """Found by the simulation (seed 260 with Debezium's rows): the tombstone ahead replaced the delete
    before it, so only the tombstone reached the coalescer, ordered by offset alone, and the update
    Debezium sent again after it (older than the delete) replaced it and was sent. A delete followed
    only by deletes of its order is kept (the coalescer joins them, keeping its time); a newer update
    ahead still replaces it, and an update older than a later delete is replaced as before."""
    ahead = Lookahead(5, 20, 100)
    delete, tombstone = _delete(7, "a", 19.0), _delete(8, "a")
    for change in (delete, tombstone):
        ahead.note(change)
    assert not ahead.superseded(delete, 7)
    assert not ahead.superseded(tombstone, 8)
    assert ahead.superseded(_change(6, "a", 16.0), 6), "an update before the delete is replaced"
    other = Lookahead(5, 20, 100)
    first, update, last = _delete(7, "b", 19.0), _change(9, "b", 20.0), _delete(12, "b")
    for change in (first, update, last):
        other.note(change)
    assert other.superseded(first, 7), "a newer update lies between it and the tombstone"
    assert other.superseded(update, 9)
    assert not other.superseded(last, 12)
