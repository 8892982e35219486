"""The park decisions: which tenants cannot be served now, and on which of this member's partitions
each may still be parked. Read-only: it judges from the shops' health, the coalescer's load and the
partitions' parking state; :class:`~connector.park.Parking` acts on what it finds."""

from __future__ import annotations

from collections.abc import Container, Iterator

from connector.clock import Clock
from connector.coalesce import Coalescer
from connector.config import Settings
from connector.instruments import ParkHooks, ParkRefused
from connector.logs import get_logger
from connector.ownership import Assignment, PartitionStatus
from connector.park._ports import Shops
from connector.structs import TopicPartition

log = get_logger("connector.park")

STARVED = 0.25
"""Below this share of its ticks (cut by 429s), a shop with orders waiting is judged by how long its
pace takes to send them (found by many-shop seed 2879: a shop whose key another client took almost
whole held back a healthy shop's commits for 80 s)."""
TOKENS_RESERVE = 24 * 8
"""Metadata bytes kept for the writer tokens 0.1.0 members read (eight of them)."""


class ParkRules:
    """Which tenants to park, and where (see :meth:`due` and :meth:`room`)."""

    def __init__(
        self,
        settings: Settings,
        assignment: Assignment,
        coalescer: Coalescer,
        shops: Shops,
        hooks: ParkHooks,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._assignment = assignment
        self._coalescer = coalescer
        self._shops = shops
        self._hooks = hooks
        self._clock = clock

    def due(self, skip: Container[str]) -> Iterator[tuple[str, str]]:
        """Each tenant (not in ``skip``) to park now, with why, that has :meth:`room`: its circuit
        open ``tenants.park_after_seconds``, or orders of it waiting that long while it is far
        behind them: more than ``tenants.park_max_keys`` of them, or, with its pace cut below a
        quarter of its share (by 429s: another client spends nearly all its key), more than that
        pace sends in ``tenants.park_after_seconds``. A 429 never opens the circuit, and a shop
        sharing its key is not parked for it; one starved by it is parked as one far behind its
        backlog is, so that it holds back no other shop."""
        t = self._settings.tenants
        now, wall = self._clock.monotonic(), self._clock.wall()
        load = self._coalescer.load_by_tenant()
        circuits = self._shops.open_circuits()
        for name in list(self._shops.names()):
            if name in skip:
                continue
            count, oldest = load.get(name, (0, float("inf")))
            if name not in circuits and wall - oldest < t.park_after_seconds:
                continue  # neither down nor behind, whatever its health (read only when it may be)
            health = self._shops.health(name)
            if health is None:
                continue
            opened = health.open_since
            down = opened is not None and now - opened >= t.park_after_seconds
            factor = health.pace_factor
            starved = factor < STARVED and count > max(1.0, health.full_rate * factor * t.park_after_seconds)
            behind = wall - oldest >= t.park_after_seconds and (count > t.park_max_keys or starved)
            if (down or behind) and self.room(name):
                yield name, "circuit open" if down else f"{count} orders waiting"

    def room(self, tenant: str) -> set[TopicPartition]:
        """Owned partitions ``tenant`` may still be parked on: not yet, under ``tenants.max_parked``,
        and only while the partition's commit metadata still fits with it (a long shop name costs
        more than a short one), with room left for the writer tokens. A partition refused for that
        is reported (``parking_refused``) and logged."""
        cap = self._settings.tenants.max_parked
        budget = self._settings.kafka.metadata_max_bytes - TOKENS_RESERVE
        room = set()
        for part in self._assignment:
            state = part.park
            if state is None or part.status is not PartitionStatus.OWNED:
                continue
            if tenant in state.parked or len(state.parked) >= cap:
                continue
            if not state.fits_with(tenant, budget):
                self._hooks.parking_refused(ParkRefused(tenant, str(part.tp)))
                log.warning(
                    "park_refused_metadata_full",
                    tenant=tenant,
                    partition=str(part.tp),
                    parked=len(state.parked),
                    action="it holds this partition back as if parking were off; shorter shop names, "
                    "or more partitions, make room",
                )
                continue
            room.add(part.tp)
        return room


__all__ = ["ParkRules"]
