"""What parking needs of the parts around it, each a small protocol: the shops (their health, and
quiescing a shop's partitions), the ledger (offer, resolve, dead-letter), the read path (decode
without acting), and the membership (whether a partition's warm-up is over)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from connector.coalesce import Resolution
from connector.deadletter.publish import Failure
from connector.structs import OrderChange, Record, TopicPartition


@dataclass(frozen=True, slots=True)
class ShopHealth:
    """A served shop's health, as parking judges it (a snapshot)."""

    open_since: float | None
    """When its outage circuit opened (monotonic), or None while it is closed or half-open."""
    closed: bool
    """Its circuit is closed: its calls go out as usual (not only the probe)."""
    full_rate: float
    """Its budget share on this member, in requests per second, before any 429 cut."""
    pace_factor: float
    """The share of ``full_rate`` its 429 adaptation allows now (1.0: no cut)."""


class Shops(Protocol):
    """The shops this member serves (``connector.tenancy.Tenancy``)."""

    @property
    def many(self) -> bool: ...

    def names(self) -> Iterable[str]:
        """Every shop served, by the name its events route to."""
        ...

    def health(self, tenant: str) -> ShopHealth | None:
        """``tenant``'s health; None when it is not served."""
        ...

    def open_circuits(self) -> Collection[str]:
        """The shops whose outage circuit is open now (a snapshot): with the shops that have orders
        waiting, the only ones parking must judge (the others' health is not asked for)."""
        ...

    def canonical(self, name: str) -> str:
        """The name ``name`` is served under now (a renamed shop keeps what it parked)."""
        ...

    async def quiesce(self, tenant: str, partitions: set[TopicPartition], timeout: float) -> bool:
        """Stop ``tenant``'s calls for ``partitions``, letting those in flight finish (bounded);
        False when it is not served."""
        ...

    def resume(self, tenant: str, partitions: set[TopicPartition]) -> None:
        """``tenant`` takes jobs of ``partitions`` again."""
        ...

    def submit(self, change: OrderChange, hold: float = 0.0) -> None:
        """Start delivering ``change``'s order (not before ``hold`` seconds from now)."""
        ...


class ParkLedger(Protocol):
    """Where replayed changes go, and records parking settles (``connector.ledger.Ledger``)."""

    def offer(self, change: OrderChange, hold: float = 0.0) -> None: ...

    def resolve(self, record: Record, why: Resolution) -> None: ...

    def dead_letter(self, record: Record, failure: Failure) -> None: ...


class ParkReader(Protocol):
    """The read path's decode (``connector.reader.Reader``)."""

    def accept(self, record: Record) -> OrderChange | None: ...

    def peek(self, record: Record) -> OrderChange | None: ...

    async def prefetch(self, records: list[Record]) -> None: ...


class Warmth(Protocol):
    """Whether a partition's warm-up re-read is over (``connector.membership.Membership``)."""

    async def warm_over(self, tp: TopicPartition) -> bool: ...


__all__ = ["ParkLedger", "ParkReader", "ShopHealth", "Shops", "Warmth"]
