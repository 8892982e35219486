"""Coalescing by key: at most one request per order in flight, latest state wins.

For each key with work the coalescer holds a *slot*: the ``current`` change (being sent, or retried)
and one ``waiting`` change. A newer change replaces the waiting one (the older is resolved as
*replaced*); whenever the key has nothing in flight the waiting change, if any, takes the current
one's place (:meth:`Coalescer.promote`), so a key costs one call however many events queued up
behind it. A change older than the newest one accepted
for its key (:meth:`Version.older_than`) is *stale*; one whose payload equals the newest accepted is
*identical*. Both are resolved without a call. The state an identical event was skipped for stands
for it too (:meth:`Version.joined`): a tombstone after a delete keeps the delete's time, and a delete
after a delete is the same state, also when it was only remembered (the warm-up), so that an update
Debezium sends again after both is stale, not the order brought back.

Per key a :class:`Mark` is remembered (no payload) in an LRU bounded by ``remember_keys``: the newest
version accepted, delivered or not (an older event arriving later is stale even when the newest one
was dead-lettered), and the digest of what the vendor last acknowledged (identical events). Marks of a
partition are forgotten when it is revoked: another member may change the order meanwhile.
Pure and synchronous: the pipeline starts the calls and resolves the offsets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from connector._backlog import TenantBacklog
from connector.structs import Mark, OrderChange, TopicPartition, Version


class Resolution(StrEnum):
    """Why an event's offset may be committed."""

    DELIVERED = "delivered"
    REPLACED = "replaced"
    STALE = "stale"
    IDENTICAL = "identical"
    DEAD_LETTERED = "dead_lettered"
    IGNORED = "ignored"
    PARKED = "parked"  # on the parking topic, acknowledged: replayed from there (connector/park/)


@dataclass(slots=True)
class _Slot:
    current: OrderChange
    waiting: OrderChange | None = None
    seen: Version | None = None  # the newest event skipped as identical to the slot's newest change


@dataclass(slots=True)
class Offer:
    """What :meth:`Coalescer.offer` decided: whether the key needs a delivery job now (``start``), or
    the change waits behind the key's current one (``waits``), and which changes were resolved without
    a call. One a record read: immutable by its ``Final`` fields, not frozen (see
    :class:`~connector.structs.Record`)."""

    start: Final[bool]
    resolved: Final[tuple[tuple[OrderChange, Resolution], ...]] = ()
    waits: Final[bool] = False


_START = Offer(True)
"""The common answer (a key with nothing pending), made once: an ``Offer`` is immutable."""


class Coalescer:
    """Per-key state of the changes accepted but not yet resolved, and marks of what was delivered."""

    def __init__(self, remember_keys: int = 100_000) -> None:
        self._slots: dict[str, _Slot] = {}
        self._marks: OrderedDict[str, Mark] = OrderedDict()
        self._remember = remember_keys
        self._backlog = TenantBacklog()  # per shop, kept as each slot's current change changes

    @property
    def active(self) -> int:
        """Keys with a change being delivered (in flight, paced or waiting to retry)."""
        return len(self._slots)

    @property
    def waiting(self) -> int:
        """Keys with a newer change waiting behind the current one."""
        return sum(1 for s in self._slots.values() if s.waiting is not None)

    @property
    def remembered(self) -> int:
        """Keys whose last delivered state is remembered."""
        return len(self._marks)

    def oldest_by_tenant(self) -> dict[str, float]:
        """Per tenant, the record time (epoch seconds) of its oldest change not yet delivered: each
        key's current change is older than the one waiting behind it. Costs per tenant, not per key
        (``connector/_backlog.py``): asked every second with many shops."""
        return self._backlog.oldest()

    def load_by_tenant(self) -> dict[str, tuple[int, float]]:
        """Per tenant, how many of its orders have a change read from Kafka and not yet delivered
        (replayed ones aside), and the record time of the oldest: what decides whether it is parked.
        Costs per tenant, as :meth:`oldest_by_tenant`."""
        return self._backlog.load()

    def take_tenant(
        self, tenant: str, partitions: Iterable[TopicPartition]
    ) -> list[tuple[OrderChange, Version | None]]:
        """Take out every change of ``tenant`` read from ``partitions`` (to be parked), in the order
        they were read per partition; their keys' slots are gone, their marks stay. Each comes with
        the newer version it stands for, if a newer event was skipped as identical to it."""
        wanted = set(partitions)
        taken: list[tuple[OrderChange, Version | None]] = []
        for key in [k for k, s in self._slots.items() if s.current.tenant == tenant]:
            slot = self._slots[key]
            if slot.current.tp not in wanted or slot.current.record.parked_at >= 0:
                continue
            self._close(key, slot)
            newest = slot.waiting or slot.current
            stands = newest.version.joined(slot.seen)
            as_of = stands if newest.version.older_than(stands) else None
            if slot.waiting is not None:
                taken.append((slot.current, None))
            taken.append((newest, as_of))
        taken.sort(key=lambda pair: (pair[0].tp, pair[0].record.offset))
        return taken

    def slots_of(self, tenant: str, partitions: Iterable[TopicPartition]) -> list[tuple[str, OrderChange]]:
        """The keys of ``tenant`` with a change read from ``partitions``, and that change."""
        wanted = set(partitions)
        return [
            (key, slot.current)
            for key, slot in self._slots.items()
            if slot.current.tenant == tenant and slot.current.tp in wanted
        ]

    def _newest(self, key: str) -> tuple[OrderChange | Mark, Version] | None:
        """The key's newest state (whose ``digest`` is read only when needed: a lazy read's is made
        on first use) and the version it stands for."""
        slot = self._slots.get(key)
        if slot is not None:
            newest = slot.waiting or slot.current
            return newest, newest.version.joined(slot.seen)
        mark = self._marks.get(key)
        return (mark, mark.version) if mark is not None else None

    def supersedes(self, change: OrderChange) -> bool:
        """Whether a newer state of ``change``'s order, with another body, was seen here (a resync
        never sends an older state than the live traffic has; one with the same body it may)."""
        newest = self._newest(change.key)
        return (
            newest is not None and change.version.older_than(newest[1]) and newest[0].digest != change.digest
        )

    def offer(self, change: OrderChange) -> Offer:
        """Accept a decoded change; say whether its key needs a job and what it resolved."""
        key = change.key
        newest = self._newest(key)
        if newest is not None:
            state, version = newest
            if change.version.older_than(version):
                return Offer(False, ((change, Resolution.STALE),))
            if not change.differs_after(version) and change.digest == state.digest:
                self._seen(key, change.version)
                return Offer(False, ((change, Resolution.IDENTICAL),))
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = _Slot(change)
            self._backlog.enter(key, change)
            return _START
        replaced, slot.waiting = slot.waiting, change
        return Offer(False, ((replaced, Resolution.REPLACED),) if replaced else (), waits=True)

    def _seen(self, key: str, version: Version) -> None:
        """An event of ``version`` was skipped as identical to the key's newest state: that state now
        stands for it too (a delete, whose payload is always the same, may be newer than the one
        pending), so that an event older than it is stale."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.seen = version.joined(slot.seen)
            return
        mark = self._marks.get(key)
        if mark is not None:
            self._marks[key] = Mark(mark.digest, mark.version.joined(version), mark.deleted)

    def promote(self, key: str) -> tuple[OrderChange | None, OrderChange | None]:
        """The key's job has nothing in flight: the waiting change, if any, takes the current one's
        place. Returns the change to send (the newest of the key) and the one it replaced, if any;
        ``(None, None)`` when the key has no slot."""
        slot = self._slots.get(key)
        if slot is None:
            return None, None
        if slot.waiting is None:
            return slot.current, None
        replaced = slot.current
        return self._advance(key, slot), replaced

    def current(self, key: str) -> OrderChange | None:
        """The change the key's job sends next (or is sending)."""
        slot = self._slots.get(key)
        return slot.current if slot is not None else None

    def has_waiting(self, key: str) -> bool:
        """Whether a newer change waits behind the current one."""
        slot = self._slots.get(key)
        return slot is not None and slot.waiting is not None

    def finish(self, key: str, delivered: bool, unknown: bool = False) -> OrderChange | None:
        """The current change's call ended for good (delivered, or given up; ``unknown``: given up
        after a request of the key whose outcome is unknown, which may still have landed, so what the
        vendor holds is not known). Returns the waiting change, now current, when the key has more
        to send; else the slot is gone."""
        slot = self._slots.get(key)
        if slot is None:
            return None
        self._mark(key, slot.current, delivered)
        if unknown and not delivered:
            mark = self._marks[key]
            self._marks[key] = Mark(b"", mark.version, mark.deleted)  # nothing is skipped as identical to it
        if slot.waiting is None:
            self._close(key, slot)
            if slot.seen is not None:
                self._seen(key, slot.seen)
            return None
        return self._advance(key, slot)

    def _advance(self, key: str, slot: _Slot) -> OrderChange:
        """The slot's waiting change takes the current one's place; returns it. The one place a
        current change is replaced, so that the per-shop backlog follows every replacement."""
        assert slot.waiting is not None
        self._backlog.leave(key, slot.current)
        slot.current, slot.waiting = slot.waiting, None
        self._backlog.enter(key, slot.current)
        return slot.current

    def _close(self, key: str, slot: _Slot) -> None:
        """The key's slot is gone (its current change delivered, given up, taken or dropped)."""
        del self._slots[key]
        self._backlog.leave(key, slot.current)

    def remember(self, change: OrderChange, delivered: bool = True) -> None:
        """Note ``change`` as delivered without sending it: an event below the committed offset, read
        again when the partition is assigned so that a late, older event is still recognised. Not
        ``delivered``: only its version (it may have been parked, and its replay must still be sent)."""
        mark = self._marks.get(change.key)
        if mark is not None and change.version.older_than(mark.version):
            return
        self._mark(change.key, change, delivered=delivered)

    def _mark(self, key: str, change: OrderChange, delivered: bool) -> None:
        """Remember the newest version accepted for ``key`` (events older than it are stale, even if it
        failed: it was the latest), and the digest of what the vendor last acknowledged (identical)."""
        mark = self._marks.get(key)
        version, deleted = change.version, change.op == "delete"
        if mark is not None and deleted and mark.deleted:
            version = mark.version.joined(version)  # a delete after a delete: one state, one version
        elif mark is not None and version.older_than(mark.version):
            version, deleted = mark.version, mark.deleted
        digest = change.digest if delivered else (mark.digest if mark is not None else b"")
        self._marks[key] = Mark(digest, version, deleted)
        self._marks.move_to_end(key)
        while len(self._marks) > self._remember:
            self._marks.popitem(last=False)

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> list[str]:
        """Forget what belongs to ``partitions`` (revoked): waiting and current changes, unresolved,
        and the marks of what was delivered from them. Returns the keys whose slot survives with a
        change from another partition, now current, which need a job again."""
        gone = set(partitions)
        restart = []
        for key in list(self._slots):
            slot = self._slots[key]
            if slot.waiting is not None and slot.waiting.tp in gone:
                slot.waiting = None
            if slot.current.tp in gone:
                if slot.waiting is None:
                    self._close(key, slot)
                else:
                    self._advance(key, slot)
                    restart.append(key)
        for key in [k for k, m in self._marks.items() if m.version.tp in gone]:
            del self._marks[key]
        return restart
