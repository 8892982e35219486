"""The sandbox's memory: orders by Loop id and by external id, every write in the order applied (what a
judge of "never backwards" reads), and the faults it is told to inject."""

from __future__ import annotations

import time

import pytest

from connector.sandbox.state import KEPT_VERSIONS, Faults, Store


def test_an_upsert_creates_then_replaces_the_order_of_its_external_id() -> None:
    store = Store()
    first = store.upsert({"external_id": "A1", "name": "#1", "updated_at": "2026-01-01T00:00:00Z"})
    again = store.upsert({"external_id": "A1", "name": "#1b", "updated_at": "2026-01-01T00:00:01Z"})
    assert first["id"] == again["id"]
    assert store.get_external("A1") == {
        "external_id": "A1",
        "name": "#1b",
        "updated_at": "2026-01-01T00:00:01Z",
        "id": first["id"],
    }
    assert [(w.op, w.external_id, w.updated_at) for w in store.writes] == [
        ("upsert", "A1", "2026-01-01T00:00:00Z"),
        ("upsert", "A1", "2026-01-01T00:00:01Z"),
    ]


def test_create_update_and_delete_by_loop_id_and_external_id() -> None:
    store = Store()
    created = store.create({"external_id": "A1", "name": "#1"})
    other = store.create({"name": "no external id"})
    assert created["id"] != other["id"]
    updated = store.update(created["id"], {"external_id": "A1-renamed", "name": "#1b"})
    assert updated is not None
    assert store.get_external("A1") is None, "its old external id no longer finds it"
    assert store.get_external("A1-renamed") == updated
    assert store.update(999, {"name": "x"}) is None
    assert store.delete_external("A1-renamed") == created["id"]
    assert store.delete_external("A1-renamed") is None, "gone"
    assert [w.op for w in store.writes] == ["create", "create", "update", "delete"]
    assert store.writes[-1].updated_at is None, "a delete carries no updated_at"
    store.reset()
    assert (store.orders, store.writes, store.requests) == ({}, [], [])


def test_faults_take_partial_updates_and_an_outage_starts_from_now() -> None:
    faults = Faults()
    before = time.time()
    faults.update({"error_rate": 0.5, "outage_seconds": 30})
    assert faults.error_rate == 0.5
    assert before + 30 <= faults.outage_until <= time.time() + 30
    assert faults.as_dict()["error_rate"] == 0.5
    assert faults.as_dict()["error_statuses"] == [500, 502, 503, 504]
    with pytest.raises(KeyError):
        faults.update({"no_such_fault": 1})


def test_a_revert_goes_back_to_the_newest_older_version_kept() -> None:
    """Versions are kept per order (the last ``KEPT_VERSIONS``): a revert takes the newest one whose
    updated_at differs from the order's now, keeps the order's Loop id; a second goes further back;
    a reset forgets them."""
    store = Store()
    stamps = [f"2026-01-01T00:00:0{i}Z" for i in range(KEPT_VERSIONS + 2)]
    for stamp in stamps:
        store.upsert({"external_id": "A1", "updated_at": stamp})
    store.upsert({"external_id": "A1", "updated_at": stamps[-1], "name": "same version again"})
    order_id = store.by_external["A1"]
    assert store.tamper([], ["A1"], {})["revert"] == ["A1"]
    assert store.get_external("A1") == {"external_id": "A1", "updated_at": stamps[-2], "id": order_id}
    assert store.tamper([], ["A1"], {})["revert"] == ["A1"], "and again, from there"
    assert store.get_external("A1")["updated_at"] == stamps[-3]  # type: ignore[index]
    assert [(t.op, t.updated_at_before, t.updated_at_after) for t in store.tampers] == [
        ("revert", stamps[-1], stamps[-2]),
        ("revert", stamps[-2], stamps[-3]),
    ]
    store.reset()
    assert store.tampers == []
    store.upsert({"external_id": "A1", "updated_at": stamps[0]})
    assert store.tamper([], ["A1"], {})["skipped"] == ["A1"], "no older version after a reset"
