"""Replay: the owner of a partition reads back what was parked from it and hands it to the pipeline
(see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable

from connector.circuit import State
from connector.clock import Clock
from connector.config import Settings
from connector.logs import debug_enabled, get_logger
from connector.metrics import Metrics
from connector.park._records import Parked, Partition, unpack
from connector.park.log import ParkLog
from connector.structs import Record, TopicPartition, Version
from connector.tenancy import Tenancy

log = get_logger("connector.park")

_READ_BATCH = 500
_READS_PER_ROUND = 8
_IDLE_S = 0.2


class Replay:
    """What was parked from the partitions this member owns, read back and handed over as each
    tenant can take it; and when a tenant is unparked."""

    def __init__(
        self,
        settings: Settings,
        park_log: ParkLog | None,
        tenancy: Tenancy,
        metrics: Metrics,
        clock: Clock,
        dispatch: Callable[[Record, float, Version | None], None],
        warmed: Callable[[TopicPartition], Awaitable[bool]],
        prefetch: Callable[[list[Record]], Awaitable[None]] | None,
    ) -> None:
        self._settings = settings
        self._log = park_log
        self._tenancy = tenancy
        self._metrics = metrics
        self._clock = clock
        self._dispatch = dispatch
        self._warmed = warmed
        self._prefetch = prefetch  # what reading a batch needs first (Avro schemas from the registry)
        self._parts: dict[TopicPartition, Partition] = {}
        self._out: Counter[str] = Counter()  # replayed records in the coalescer, per tenant
        self._wake = asyncio.Event()
        self.stopping = False

    def resolve(self, record: Record) -> bool:
        """A replayed record is resolved (delivered, replaced, skipped, dead-lettered)."""
        part = self._parts.get(record.tp)
        if part is None or part.scan is None:
            return False
        tenant = part.dispatched.pop(record.parked_at, None)
        if tenant is not None:
            self._out[tenant] -= 1
            self._wake.set()
        return part.scan.resolve(record.parked_at)

    def _allowance(self, tenant: str) -> int:
        """How many more of ``tenant``'s parked events the coalescer may take now: one while its
        circuit is open (the probe), ``tenants.park_replay_events`` once it is closed."""
        served = self._tenancy.served().get(tenant)
        if served is None:  # no longer served: its events go to the DLQ (stage route)
            return 1 << 30
        closed = served.deliverer.circuit.state is State.CLOSED
        return (self._settings.tenants.park_replay_events if closed else 1) - self._out[tenant]

    def _unpack(self, r: Record) -> Parked | None:
        """The parked record behind ``r``, its tenant named as this member knows it (a shop renamed
        since it was parked keeps what it parked: ``Tenancy.canonical``)."""
        parked = unpack(r)
        if parked is None or (tenant := self._tenancy.canonical(parked.tenant)) == parked.tenant:
            return parked
        return dataclasses.replace(parked, tenant=tenant)

    def _valid(self, part: Partition, tp: TopicPartition, parked: Parked) -> bool:
        """Whether a parking record is one to replay for ``tp``: parked from it by this member, or by
        an earlier one that committed past it."""
        if parked.record.tp != tp:
            return False
        if parked.token == part.token:
            return True
        limit = part.inherited.get(parked.token)
        return limit is not None and parked.record.offset < limit

    def _hand_over(self, part: Partition, parked: Parked) -> None:
        if debug_enabled():
            r = parked.record
            log.debug(
                "park_replay",
                tenant=parked.tenant,
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                parked_at=r.parked_at,
            )
        part.dispatched[parked.record.parked_at] = parked.tenant
        self._out[parked.tenant] += 1
        self._metrics.replayed_events.inc()
        hold = max(0.0, parked.hold_until - self._clock.wall())
        self._dispatch(parked.record, hold, parked.as_of)

    async def _replay_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_IDLE_S):
                    await self._wake.wait()
            self._wake.clear()
            if self.stopping:
                continue
            for tp in sorted(self._parts):
                try:
                    await self._scan(tp)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a read that failed is tried again on the next round
                    log.warning("park_read_failed", partition=str(tp), error=f"{type(exc).__name__}: {exc}")
            self._gauges()

    def _live(self, tp: TopicPartition, part: Partition) -> bool:
        """Whether ``part`` is still the state of an owned ``tp`` that is not being revoked."""
        return self._parts.get(tp) is part and not part.frozen

    async def _scan(self, tp: TopicPartition) -> None:
        part = self._parts.get(tp)
        if part is None or part.frozen:
            return
        if part.position is None or part.scan is None:
            self._unpark(tp, part)  # parked, but nothing was written yet
            return
        if not await self._warmed(tp):
            return  # what the warm-up remembers decides whether a replayed event is stale
        for tenant in sorted(part.held_from):
            if self._allowance(tenant) > 0:
                await self._rescan(tp, part, tenant)
        bound = self._settings.kafka.max_held_offsets
        for _ in range(_READS_PER_ROUND):
            if not self._live(tp, part) or part.scan.held >= bound:
                return
            batch = await self._read(tp, part, part.position)
            if batch is None:
                return
            if not batch:
                break
            for r in batch:
                part.position = r.offset + 1
                parked = self._unpack(r)
                part.scan.track(r.offset, 0, r.timestamp_ms / 1000.0)
                if parked is None or not self._valid(part, tp, parked):
                    part.scan.resolve(r.offset)
                    continue
                tenant = parked.tenant
                if tenant in part.held_from or self._allowance(tenant) <= 0:
                    part.held_from.setdefault(tenant, r.offset)
                    part.held_ts.setdefault(tenant, r.timestamp_ms / 1000.0)
                    continue
                self._hand_over(part, parked)
            await asyncio.sleep(0)
        self._unpark(tp, part)

    async def _read(self, tp: TopicPartition, part: Partition, at: int) -> list[Record] | None:
        """The parked records of ``tp``'s parking partition from ``at`` on, what reading them needs
        fetched first; None when ``tp`` was revoked meanwhile."""
        assert self._log is not None
        batch = [r for r in await self._log.read(part.q, at, _READ_BATCH) if r.offset >= at]
        if batch and self._prefetch is not None:  # a parked record holds the original key and value
            await self._prefetch(batch)
        return batch if self._live(tp, part) else None

    async def _rescan(self, tp: TopicPartition, part: Partition, tenant: str) -> None:
        """Read again from ``tenant``'s first held-back record, handing over what it may take now."""
        assert part.scan is not None
        assert part.position is not None
        at = part.held_from[tenant]
        while at < part.position:
            batch = await self._read(tp, part, at)
            if not batch:
                return
            for r in batch:
                if r.offset >= part.position:
                    break
                at = r.offset + 1
                if not part.scan.is_unresolved(r.offset) or r.offset in part.dispatched:
                    continue
                parked = self._unpack(r)
                if parked is None or parked.tenant != tenant or not self._valid(part, tp, parked):
                    continue
                if self._allowance(tenant) <= 0:
                    part.held_from[tenant] = r.offset
                    part.held_ts[tenant] = r.timestamp_ms / 1000.0
                    return
                self._hand_over(part, parked)
            await asyncio.sleep(0)
        del part.held_from[tenant]
        part.held_ts.pop(tenant, None)

    def _unpark(self, tp: TopicPartition, part: Partition) -> None:
        """Tenants whose parked events of ``tp`` are all resolved, with nothing on its way, and whose
        circuit is closed, are sent directly again. One whose circuit stays open stays parked: its
        next event is parked, and replayed as the probe that closes the circuit."""
        unread = part.position is not None and part.position <= part.last_written
        for tenant in sorted(part.parked):
            served = self._tenancy.served().get(tenant)
            if served is not None and served.deliverer.circuit.state is not State.CLOSED:
                continue
            busy = (
                unread
                or tenant in part.held_from
                or part.writing[tenant] > 0
                or tenant in part.dispatched.values()
            )
            if not busy:
                part.parked.discard(tenant)
                log.warning("tenant_unparked", tenant=tenant, partition=str(tp), action="sent directly again")

    def tenants(self) -> set[str]:
        """Tenants parked on at least one partition this member owns."""
        return {name for part in self._parts.values() for name in part.parked}

    def _gauges(self) -> None:
        self._metrics.parked_tenants.set(len(self.tenants()))
        self._metrics.parked_unresolved.set(
            sum(p.scan.unresolved for p in self._parts.values() if p.scan is not None)
        )


__all__ = ["Replay"]
