"""Coalescing by ``external_id``: at most one request per key in flight, latest state wins.

For each key the coalescer holds the change in flight and one waiting slot. A newer change replaces the
waiting one (the older is resolved as *replaced*); a change older than the newest one accepted for its
key (by the order's ``updated_at``, else by offset within its partition) is *stale*; a change whose
payload equals the newest one accepted is *identical*. Both are resolved without a call. The last change
delivered per key is remembered in a bounded LRU so that redeliveries after a restart or rebalance are
skipped too. Pure and synchronous: the caller starts the calls and resolves the offsets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from connector.decode import OrderChange
from connector.offsets import TopicPartition


class Resolution(StrEnum):
    """Why an event's offset may be committed."""

    DELIVERED = "delivered"
    REPLACED = "replaced"
    STALE = "stale"
    IDENTICAL = "identical"
    DEAD_LETTERED = "dead_lettered"
    IGNORED = "ignored"


@dataclass(slots=True)
class _Slot:
    in_flight: OrderChange | None = None
    waiting: OrderChange | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """What :meth:`Coalescer.offer` decided: a change to send now, and changes resolved without a call."""

    start: OrderChange | None
    resolved: tuple[tuple[OrderChange, Resolution], ...] = ()


def _tp(change: OrderChange) -> TopicPartition:
    return TopicPartition(change.record.topic, change.record.partition)


def is_older(new: OrderChange, ref: OrderChange) -> bool:
    """True when ``new`` describes an earlier state of the order than ``ref``."""
    if new.updated_at is not None and ref.updated_at is not None:
        return new.updated_at < ref.updated_at
    return _tp(new) == _tp(ref) and new.record.offset < ref.record.offset


class Coalescer:
    """Per-key state of the changes accepted but not yet resolved."""

    def __init__(self, remember_keys: int = 100_000) -> None:
        self._slots: dict[str, _Slot] = {}
        self._sent: OrderedDict[str, OrderChange] = OrderedDict()
        self._remember = remember_keys

    @property
    def in_flight(self) -> int:
        """Keys with a call in flight (or scheduled for retry)."""
        return len(self._slots)

    @property
    def waiting(self) -> int:
        """Keys with a newer change waiting behind the one in flight."""
        return sum(1 for s in self._slots.values() if s.waiting is not None)

    def _newest(self, key: str) -> OrderChange | None:
        slot = self._slots.get(key)
        if slot is not None:
            return slot.waiting or slot.in_flight
        return self._sent.get(key)

    def offer(self, change: OrderChange) -> Offer:
        """Accept a decoded change; say whether to send it now and what it resolved."""
        key = change.external_id
        newest = self._newest(key)
        if newest is not None:
            if is_older(change, newest):
                return Offer(None, ((change, Resolution.STALE),))
            if change.digest == newest.digest:
                return Offer(None, ((change, Resolution.IDENTICAL),))
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = _Slot(in_flight=change)
            return Offer(change)
        replaced = slot.waiting
        slot.waiting = change
        return Offer(None, ((replaced, Resolution.REPLACED),) if replaced else ())

    def finish(self, change: OrderChange, delivered: bool) -> OrderChange | None:
        """The call for ``change`` ended; return the key's waiting change, now in flight, if any."""
        key = change.external_id
        slot = self._slots.get(key)
        if slot is None or slot.in_flight is not change:
            return None
        if delivered:
            self._sent[key] = change
            self._sent.move_to_end(key)
            while len(self._sent) > self._remember:
                self._sent.popitem(last=False)
        if slot.waiting is None:
            del self._slots[key]
            return None
        slot.in_flight, slot.waiting = slot.waiting, None
        return slot.in_flight

    def take_newer(self, change: OrderChange) -> OrderChange | None:
        """Before retrying ``change``: if a newer change is waiting, put it in flight instead."""
        slot = self._slots.get(change.external_id)
        if slot is None or slot.in_flight is not change or slot.waiting is None:
            return None
        slot.in_flight, slot.waiting = slot.waiting, None
        return slot.in_flight

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> list[OrderChange]:
        """Forget waiting changes from ``partitions`` (revoked); returns them, unresolved."""
        gone = set(partitions)
        dropped = []
        for slot in self._slots.values():
            if slot.waiting is not None and _tp(slot.waiting) in gone:
                dropped.append(slot.waiting)
                slot.waiting = None
        return dropped
