"""Per shop, what waits in the coalescer: how many of its orders have a change not yet delivered, and
since when. Kept as changes come and go, so that asking costs per shop, not per order.

Parking (which shops are far behind) and the per-shop gauges (the oldest event not yet synced) ask every
second. Scanning every key with work for it cost milliseconds a second with tens of thousands of orders
waiting (2% of the many-shops benchmark), a stall of the event loop that grew with the backlog. Here
each shop has a count and a heap of record times per kind (read from Kafka, or replayed from the
parking topic); an entry whose change is no longer its key's current one is dropped when it reaches
the top, or when its heap holds twice as many entries as there are changes.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from connector.structs import OrderChange

_READ, _REPLAYED = 0, 1
_SPARE = 32
"""Entries a heap may hold beyond twice its live ones before it is rebuilt of its live ones only."""

_Entry = tuple[int, int, str]  # (record time in ms, entry number, key)


@dataclass(slots=True)
class _Shop:
    counts: list[int] = field(default_factory=lambda: [0, 0])  # by kind
    heaps: tuple[list[_Entry], list[_Entry]] = field(default_factory=lambda: ([], []))


class TenantBacklog:
    """The current changes of every key of a shop (changes of the deployment's only shop, ``""``, are
    not counted: nothing asks). :meth:`enter` when a change becomes its key's current one,
    :meth:`leave` when it stops being it (delivered, replaced by the waiting one, taken or dropped)."""

    def __init__(self) -> None:
        self._number = 0
        self._live: dict[str, int] = {}  # key -> the entry number of its current change
        self._shops: dict[str, _Shop] = {}

    @property
    def entries(self) -> int:
        """Heap entries held, live or not (bounded: about twice the live ones)."""
        return sum(len(h) for shop in self._shops.values() for h in shop.heaps)

    def enter(self, key: str, change: OrderChange) -> None:
        """``change`` is now ``key``'s current change."""
        tenant = change.tenant
        if not tenant:
            return
        shop = self._shops.get(tenant)
        if shop is None:
            shop = self._shops[tenant] = _Shop()
        record = change.record
        kind = _kind(change)
        shop.counts[kind] += 1
        self._number += 1
        self._live[key] = self._number
        if record.timestamp_ms:
            heap = shop.heaps[kind]
            heapq.heappush(heap, (record.timestamp_ms, self._number, key))
            if len(heap) > 2 * shop.counts[kind] + _SPARE:
                heap[:] = [entry for entry in heap if self._live.get(entry[2]) == entry[1]]
                heapq.heapify(heap)

    def leave(self, key: str, change: OrderChange) -> None:
        """``change`` is no longer ``key``'s current change."""
        tenant = change.tenant
        if not tenant:
            return
        shop = self._shops[tenant]
        shop.counts[_kind(change)] -= 1
        del self._live[key]
        if shop.counts == [0, 0]:
            del self._shops[tenant]  # and its heaps, whose entries are all stale now

    def load(self) -> dict[str, tuple[int, float]]:
        """Per shop with changes read from Kafka waiting: how many, and the oldest one's record time
        (epoch seconds; inf when none has one)."""
        out: dict[str, tuple[int, float]] = {}
        for tenant, shop in self._shops.items():
            count = shop.counts[_READ]
            if count:
                oldest = self._oldest(shop.heaps[_READ])
                out[tenant] = (count, oldest / 1000.0 if oldest is not None else math.inf)
        return out

    def oldest(self) -> dict[str, float]:
        """Per shop, the record time (epoch seconds) of its oldest change waiting, read or replayed
        (a shop whose changes have none is left out)."""
        out: dict[str, float] = {}
        for tenant, shop in self._shops.items():
            stamps = [s for s in map(self._oldest, shop.heaps) if s is not None]
            if stamps:
                out[tenant] = min(stamps) / 1000.0
        return out

    def _oldest(self, heap: list[_Entry]) -> int | None:
        """The earliest record time of a live entry of ``heap``, the stale ones above it dropped."""
        live = self._live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


def _kind(change: OrderChange) -> int:
    """Which of a shop's counts and heaps ``change`` is in: replayed from the parking topic, or read."""
    return _REPLAYED if change.record.parked_at >= 0 else _READ


__all__ = ["TenantBacklog"]
