"""Replay: the owner of a partition reads back what was parked from it (its lookahead over what was
inherited, its scans, rescans of what a tenant could not take yet, and unparking); handing what it
read to the pipeline, at each tenant's pace, is a part of its own (``_handover.py``). See the package
docstring."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from connector.clock import Clock
from connector.config import Settings
from connector.instruments import ParkHooks, ParkingState, ParkRecordsLost
from connector.logs import get_logger
from connector.lookahead import Lookahead
from connector.ownership import Assignment, PartitionStatus
from connector.park._handover import Handover
from connector.park._ports import ParkLedger, ParkReader, Shops, Warmth
from connector.park.log import ParkLog, RecordsGone
from connector.parked import Parked, ParkState, unpack
from connector.structs import OrderChange, Record, TopicPartition

log = get_logger("connector.park")

_READ_BATCH = 500
_READS_PER_ROUND = 8
_IDLE_S = 0.2
_EMPTY_READS = 3
"""Empty reads in a row before a scan gives up until its next round (the records are there: a read
right after a seek returns nothing when the fetch takes longer than its wait)."""


class Replay:
    """What was parked from the partitions this member owns, read back and handed over as each
    tenant can take it; and when a tenant is unparked."""

    def __init__(
        self,
        settings: Settings,
        park_log: ParkLog,
        assignment: Assignment,
        shops: Shops,
        hooks: ParkHooks,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._log = park_log
        self._assignment = assignment
        self._shops = shops
        self._hooks = hooks
        self._reader: ParkReader | None = None
        self._warmth: Warmth | None = None
        self._handover = Handover(settings, shops, hooks, clock, self)
        self._wake = asyncio.Event()
        self.stopping = False

    def connect(self, ledger: ParkLedger, reader: ParkReader, warmth: Warmth) -> None:
        """Where replayed records go (see :meth:`Parking.connect`)."""
        self._reader, self._warmth = reader, warmth
        self._handover.connect(ledger, reader)

    def state(self, tp: TopicPartition) -> ParkState | None:
        """The parking state of ``tp`` while it is owned and not being revoked."""
        part = self._assignment.get(tp)
        if part is None or part.status is PartitionStatus.REVOKING:
            return None
        return part.park

    def wake(self) -> None:
        """Something changed (an append landed, a tenant may take more): look again now."""
        self._wake.set()

    def forget(self, state: ParkState) -> None:
        """``state``'s partition is no longer ours: its replayed changes went with it."""
        self._handover.forget(state)

    def resolve(self, record: Record) -> bool:
        """A replayed record is resolved (delivered, replaced, skipped, dead-lettered)."""
        part = self.state(record.tp)
        if part is None:
            return False
        tenant = part.dispatched.pop(record.parked_at, None)
        if tenant is None:
            return False
        self._handover.returned(tenant)
        self._wake.set()
        return part.scan(tenant).resolve(record.parked_at)

    def superseded(self, change: OrderChange, record: Record) -> bool:
        """Whether a replayed ``change`` is older than a later parked event of its order that is
        still to be replayed (the lookahead over what was inherited)."""
        part = self.state(record.tp)
        ahead = part.lookahead if part is not None else None
        return ahead is not None and ahead.superseded(change, record.parked_at)

    def _unpack(self, r: Record) -> Parked | None:
        """The parked record behind ``r``, its tenant named as this member knows it (a shop renamed
        since it was parked keeps what it parked: ``Tenancy.canonical``)."""
        parked = unpack(r)
        if parked is None or (tenant := self._shops.canonical(parked.tenant)) == parked.tenant:
            return parked
        return dataclasses.replace(parked, tenant=tenant)

    def valid(self, part: ParkState, tp: TopicPartition, parked: Parked, at: int) -> bool:
        """Whether the parking record at ``at`` is one to replay for ``tp``: parked from it, for a
        tenant whose replay starts at or before it, by this member, or by an earlier one whose commit
        passed it (a record parked by a member that crashed before its commit passed it is read again
        from the partition itself, and that copy counts instead)."""
        if parked.record.tp != tp:
            return False
        start = part.starts.get(parked.tenant)
        if start is None or at < start:
            return False
        if parked.token == part.token:
            return True
        return part.start is not None and parked.record.offset < part.start

    async def run(self) -> None:
        """The replay loop: every owned partition in turn, when woken or every 200 ms."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_IDLE_S):
                    await self._wake.wait()
            self._wake.clear()
            if self.stopping:
                continue
            for tp in sorted(self._assignment.partitions()):
                try:
                    await self._scan(tp)
                except asyncio.CancelledError:
                    raise
                except RecordsGone as exc:
                    self._gone(tp, exc)
                except Exception as exc:  # a read that failed is tried again on the next round
                    log.warning("park_read_failed", partition=str(tp), error=f"{type(exc).__name__}: {exc}")
            self._gauges()

    def _gone(self, tp: TopicPartition, exc: RecordsGone) -> None:
        """Parked records were deleted by retention before they were replayed: lost; said loudly,
        counted, and reading goes on from what is left."""
        part = self.state(tp)
        if part is None or part.position is None:
            return
        lost = exc.start - part.position
        self._hooks.parked_records_lost(ParkRecordsLost(max(0, lost)))
        log.error(
            "parked_records_deleted",
            partition=str(tp),
            parking_partition=part.q,
            from_offset=part.position,
            to_offset=exc.start,
            action="events parked there are lost: give the parking topic unlimited retention "
            "(retention.ms=-1); the orders they were for may be behind (see README, Parking)",
        )
        part.position = exc.start
        for tenant in part.starts:
            part.starts[tenant] = max(part.starts[tenant], exc.start)

    def _live(self, tp: TopicPartition, part: ParkState) -> bool:
        """Whether ``part`` is still the state of an owned ``tp`` that is not being revoked."""
        return self.state(tp) is part

    async def _scan(self, tp: TopicPartition) -> None:
        part = self.state(tp)
        if part is None:
            return
        if part.position is None:
            self._unpark(tp, part)  # parked, but nothing was written yet
            return
        assert self._warmth is not None
        if not await self._warmth.warm_over(tp):
            return  # what the warm-up remembers decides whether a replayed event is stale
        if not part.looked_ahead:
            await self._look_ahead(tp, part)
            if not part.looked_ahead or not self._live(tp, part):
                return
        for tenant in sorted(part.held_from):
            if self._handover.allowance(tenant) > 0:
                await self._rescan(tp, part, tenant)
        bound = self._settings.kafka.max_held_offsets
        for _ in range(_READS_PER_ROUND):
            if not self._live(tp, part) or part.held >= bound:
                return
            batch = await self._read(tp, part, part.position)
            if batch is None:
                return
            if not batch:
                break
            for r in batch:
                part.position = r.offset + 1
                parked = self._unpack(r)
                if parked is None or not self.valid(part, tp, parked, r.offset):
                    continue
                tenant = parked.tenant
                part.scan(tenant).track(r.offset, 0, r.timestamp_ms / 1000.0)
                if tenant in part.held_from or self._handover.allowance(tenant) <= 0:
                    part.held_from.setdefault(tenant, r.offset)
                    part.held_ts.setdefault(tenant, r.timestamp_ms / 1000.0)
                    continue
                self._handover.hand_over(part, parked)
            await asyncio.sleep(0)
        self._unpark(tp, part)

    async def _look_ahead(self, tp: TopicPartition, part: ParkState) -> None:
        """Before replaying what was inherited, read it once: the newest parked version of each order
        in it, so that an older one is not sent first (a previous owner may have replayed the newer
        one already, and the warm-up may no longer remember it). Goes on where it stopped when a
        read comes back empty."""
        assert part.position is not None
        if part.lookahead is None:
            bound = self._settings.kafka.remember_keys or 1
            part.lookahead = Lookahead(part.position, part.end_at_assign, bound)
            part.ahead_at = part.position
        ahead = part.lookahead
        while part.ahead_at < ahead.end:
            batch = await self._read(tp, part, part.ahead_at)
            if not batch:  # revoked, or a read after a seek came back empty: on the next round
                return
            for r in batch:
                part.ahead_at = r.offset + 1
                parked = self._unpack(r)
                if parked is None or not self.valid(part, tp, parked, r.offset):
                    continue
                assert self._reader is not None
                change = self._reader.peek(parked.record)
                if change is not None:
                    ahead.note(change, parked.as_of)
            await asyncio.sleep(0)
        part.looked_ahead = True

    async def _read(self, tp: TopicPartition, part: ParkState, at: int) -> list[Record] | None:
        """The parked records of ``tp``'s parking partition from ``at`` on, what reading them needs
        fetched first; None when ``tp`` was revoked meanwhile."""
        batch = [r for r in await self._log.read(part.q, at, _READ_BATCH) if r.offset >= at]
        if batch and self._reader is not None:  # a parked record holds the original key and value
            await self._reader.prefetch(batch)
        return batch if self._live(tp, part) else None

    async def _rescan(self, tp: TopicPartition, part: ParkState, tenant: str) -> None:
        """Read again from ``tenant``'s first held-back record, handing over what it may take now."""
        assert part.position is not None
        scan = part.scan(tenant)
        at, empty = part.held_from[tenant], 0
        while at < part.position:
            batch = await self._read(tp, part, at)
            if batch is None:
                return
            if not batch:  # a read after a seek may come back empty: read again, a few times
                empty += 1
                if empty > _EMPTY_READS:
                    part.held_from[tenant] = at  # on the next round, from where this one stopped
                    return
                continue
            for r in batch:
                if r.offset >= part.position:
                    break
                at = r.offset + 1
                if not scan.is_unresolved(r.offset) or r.offset in part.dispatched:
                    continue
                parked = self._unpack(r)
                if parked is None or parked.tenant != tenant or not self.valid(part, tp, parked, r.offset):
                    continue
                if self._handover.allowance(tenant) <= 0:
                    part.held_from[tenant] = r.offset
                    part.held_ts[tenant] = r.timestamp_ms / 1000.0
                    return
                self._handover.hand_over(part, parked)
            await asyncio.sleep(0)
        del part.held_from[tenant]
        part.held_ts.pop(tenant, None)

    def _unpark(self, tp: TopicPartition, part: ParkState) -> None:
        """Tenants whose parked events of ``tp`` are all resolved, with nothing on its way, and whose
        circuit is closed, are sent directly again. Reading must have caught up with every record
        that may be theirs: what this member appended and what was there when it was assigned (a
        read right after a seek may come back empty before it has). One whose circuit stays open
        stays parked: its next event is parked, and replayed as the probe that closes the circuit."""
        end = max(part.end_at_assign, part.last_written + 1)
        unread = part.position is not None and part.position < end
        for tenant in sorted(part.parked | part.starts.keys()):
            health = self._shops.health(tenant)
            if health is not None and not health.closed:
                continue
            scan = part.scans.get(tenant)
            busy = (
                unread
                or tenant in part.held_from
                or part.writing[tenant] > 0
                or (scan is not None and scan.unresolved > 0)
            )
            if busy:
                continue
            part.starts.pop(tenant, None)
            part.scans.pop(tenant, None)
            if tenant in part.parked:
                part.parked.discard(tenant)
                log.warning("tenant_unparked", tenant=tenant, partition=str(tp), action="sent directly again")

    def tenants(self) -> set[str]:
        """Tenants parked on at least one partition this member owns."""
        return {name for p in self._assignment if p.park is not None for name in p.park.parked}

    def oldest(self) -> dict[str, float]:
        """Per parked tenant, the record time of its oldest event held back on the parking topic."""
        out: dict[str, float] = {}
        for p in self._assignment:
            for tenant, stamp in (p.park.held_ts if p.park is not None else {}).items():
                if stamp and stamp < out.get(tenant, float("inf")):
                    out[tenant] = stamp
        return out

    def _gauges(self) -> None:
        unresolved = sum(p.park.unresolved for p in self._assignment if p.park is not None)
        self._hooks.parking_sampled(ParkingState(len(self.tenants()), unresolved))


__all__ = ["Replay"]
