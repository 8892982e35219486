"""The per-shop backlog (``connector/_backlog.py``): what waits per shop, kept as changes come and go,
its memory bounded however often a key's current change is replaced."""

from __future__ import annotations

from connector._backlog import TenantBacklog
from connector.structs import OrderChange, Record


def _change(tenant: str, order: str, offset: int, stamp_ms: int, replayed: bool = False) -> OrderChange:
    record = Record(
        "orders", 0, offset, order.encode(), b"{}", timestamp_ms=stamp_ms, parked_at=0 if replayed else -1
    )
    return OrderChange(record, order, "upsert", tenant=tenant)


def test_a_key_replaced_many_times_keeps_its_heap_bounded_and_its_shop_exact() -> None:
    """One old order waits while another's current change is replaced 10,000 times: the entries held
    stay near twice the live ones (stale ones are dropped when the heap is rebuilt, not only when they
    reach its top), and the figures stay exact."""
    backlog = TenantBacklog()
    old = _change("acme", "A", 0, 1_000)
    backlog.enter("acme/A", old)
    current = _change("acme", "B", 1, 5_000)
    backlog.enter("acme/B", current)
    for offset in range(2, 10_002):
        newer = _change("acme", "B", offset, 5_000 + offset)
        backlog.leave("acme/B", current)
        backlog.enter("acme/B", newer)
        current = newer
    assert backlog.entries <= 2 * 2 + 32 + 1
    assert backlog.load() == {"acme": (2, 1.0)}
    backlog.leave("acme/A", old)
    assert backlog.load() == {"acme": (1, 15.001)}
    assert backlog.oldest() == {"acme": 15.001}


def test_replayed_changes_count_apart_and_the_only_shop_is_not_kept() -> None:
    """A change replayed from the parking topic is in the shop's oldest, not in its load; a change of
    the deployment's only shop (tenant "") is not kept at all; a shop with nothing waiting is gone."""
    backlog = TenantBacklog()
    replayed = _change("acme", "A", 0, 2_000, replayed=True)
    backlog.enter("acme/A", replayed)
    backlog.enter("B", _change("", "B", 1, 1_000))
    assert backlog.load() == {}
    assert backlog.oldest() == {"acme": 2.0}
    read = _change("acme", "C", 2, 0)
    backlog.enter("acme/C", read)
    assert backlog.load() == {"acme": (1, float("inf"))}, "no record time: waiting since unknown"
    backlog.leave("acme/A", replayed)
    backlog.leave("acme/C", read)
    assert backlog.entries == 0, "the shop is forgotten with its heaps"
    assert backlog.load() == {}
    assert backlog.oldest() == {}
