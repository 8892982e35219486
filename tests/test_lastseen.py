"""The shop last seen for each record key (what routes a delete that names no shop): per topic and
key, bounded by ``sink.remember_keys`` (least recently routed first out), and what counts as a delete."""

from __future__ import annotations

import pytest

from connector._lastseen import LastSeen, is_delete
from connector.structs import Record


def record(key: bytes | None, topic: str = "orders", value: bytes | None = b"{}") -> Record:
    return Record(topic, 0, 0, key, value)


def test_a_key_is_routed_to_the_shop_of_its_last_routed_event() -> None:
    seen = LastSeen(10)
    seen.note(record(b"A1"), "acme")
    assert seen.shop_of(record(b"A1", value=None)) == "acme", "a tombstone of the same key"
    seen.note(record(b"A1"), "bolt")
    assert seen.shop_of(record(b"A1")) == "bolt"
    assert seen.shop_of(record(b"A1", topic="returns")) is None, "a key is per topic"
    assert seen.shop_of(record(b"B1")) is None
    assert seen.shop_of(record(None)) is None


def test_at_most_limit_keys_are_remembered_the_least_recently_routed_going_first() -> None:
    seen = LastSeen(2)
    seen.note(record(b"A1"), "acme")
    seen.note(record(b"B1"), "acme")
    seen.note(record(b"A1"), "acme")  # A1 routed again: B1 is now the oldest
    seen.note(record(b"C1"), "bolt")
    assert len(seen) == 2
    assert seen.shop_of(record(b"B1")) is None
    assert (seen.shop_of(record(b"A1")), seen.shop_of(record(b"C1"))) == ("acme", "bolt")


def test_nothing_is_remembered_with_a_limit_of_zero_or_a_record_without_a_key() -> None:
    seen = LastSeen(0)
    seen.note(record(b"A1"), "acme")
    assert len(seen) == 0
    keyed = LastSeen(5)
    keyed.note(record(None), "acme")
    keyed.note(record(b""), "acme")
    assert len(keyed) == 0


@pytest.mark.parametrize(
    ("value", "data", "deletes"),
    [
        (None, None, True),  # a tombstone
        (b"{}", {"__deleted": True}, True),  # a Debezium row deleted
        (b"{}", {"event_type": "order.deleted"}, True),  # the connector's own envelope
        (b"{}", {"event_type": "order.updated"}, False),
        (b"{}", {"__deleted": "true"}, False),  # only the boolean the mapping stage writes
        (b"[]", [1], False),
    ],
)
def test_what_deletes_its_order(value: bytes | None, data: object, deletes: bool) -> None:
    assert is_delete(record(b"A1", value=value), data) is deletes
