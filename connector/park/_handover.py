"""The replay's handover: parked records given back to the pipeline at their original place, as many
of each tenant's at a time as it may take now.

A part of its own because it is where the replay meets the pipeline, with state of its own: how many
replayed records of each tenant are out in the coalescer, unresolved. That count is what paces a
parked tenant's replay (one at a time while its circuit is open, its probe;
``tenants.park_replay_events`` once it closed), whichever partition the records came from; the replay
asks it before reading on for a tenant, and tells it when one of them is resolved."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from connector.clock import Clock
from connector.coalesce import Resolution
from connector.config import Settings
from connector.instruments import ParkHooks, ParkReplayed
from connector.logs import debug_enabled, get_logger
from connector.park._ports import ParkLedger, ParkReader, Shops
from connector.parked import Parked, ParkState
from connector.structs import OrderChange, Record, Version

log = get_logger("connector.park")


class Supersedes(Protocol):
    """Whether a replayed change is older than a later parked event of its order (the replay's
    lookahead over what was inherited)."""

    def superseded(self, change: OrderChange, record: Record) -> bool: ...


class Handover:
    """Hands parked records to the pipeline within each tenant's allowance, and counts those out."""

    def __init__(
        self, settings: Settings, shops: Shops, hooks: ParkHooks, clock: Clock, ahead: Supersedes
    ) -> None:
        self._settings = settings
        self._shops = shops
        self._hooks = hooks
        self._clock = clock
        self._ahead = ahead
        self._ledger: ParkLedger | None = None
        self._reader: ParkReader | None = None
        self._out: Counter[str] = Counter()  # replayed records in the coalescer, per tenant

    def connect(self, ledger: ParkLedger, reader: ParkReader) -> None:
        """Where a replayed record is decoded (the read path) and offered or resolved (the ledger)."""
        self._ledger, self._reader = ledger, reader

    def allowance(self, tenant: str) -> int:
        """How many more of ``tenant``'s parked events the coalescer may take now: one while its
        circuit is open (the probe), ``tenants.park_replay_events`` once it is closed."""
        health = self._shops.health(tenant)
        if health is None:  # no longer served: its events go to the DLQ (stage route)
            return 1 << 30
        closed = health.closed
        return (self._settings.tenants.park_replay_events if closed else 1) - self._out[tenant]

    def hand_over(self, part: ParkState, parked: Parked) -> None:
        """Give ``parked`` (read back for the partition whose parking state is ``part``) to the
        pipeline; it is out until :meth:`returned`."""
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
        self._hooks.event_replayed(ParkReplayed(parked.tenant))
        hold = max(0.0, parked.hold_until - self._clock.wall())
        self._dispatch(parked.record, hold, parked.as_of)

    def returned(self, tenant: str) -> None:
        """A replayed record of ``tenant`` was resolved: one fewer out."""
        self._out[tenant] -= 1

    def forget(self, state: ParkState) -> None:
        """``state``'s partition is no longer ours: what it handed over went with it."""
        for tenant in state.dispatched.values():
            self._out[tenant] -= 1

    def _dispatch(self, record: Record, hold: float, as_of: Version | None) -> None:
        """A parked event, at its original place: decoded, coalesced and delivered as any other
        (``hold``: seconds before its order may be sent; ``as_of``: a newer event it stands for,
        skipped as identical to it before it was parked)."""
        assert self._ledger is not None
        assert self._reader is not None
        change = self._reader.accept(record)
        if change is None:
            return
        if as_of is not None and change.version.older_than(as_of):
            change._version = as_of
        if self._ahead.superseded(change, record):
            self._ledger.resolve(record, Resolution.REPLACED)  # a newer parked event of its order follows
            return
        self._ledger.offer(change, hold)


__all__ = ["Handover", "Supersedes"]
