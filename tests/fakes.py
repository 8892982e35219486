"""Small stand-ins for the parts around the one a unit test drives, each implementing the protocol
that part declares (``connector.deliver.WorkSource``, ``connector.park.Shops``' peers …)."""

from __future__ import annotations

from typing import Any

from connector.coalesce import Resolution
from connector.deadletter import Failure
from connector.deliver import Outcome
from connector.structs import OrderChange, Record, TopicPartition


class NoWork:
    """A work source with nothing to send (``connector.deliver.WorkSource``)."""

    def claim(self, key: str) -> OrderChange | None:
        return None

    def report(self, outcome: Outcome) -> bool:
        return False


class NoLinger:
    """No partition is ever behind (``connector.deliver.Linger``)."""

    def behind(self, tp: TopicPartition) -> bool:
        return False


class ParkPorts:
    """What parking talks to besides the shops, reduced: the ledger, the read path and the
    membership (``connector.park.ParkLedger``, ``ParkReader``, ``Warmth``). Every record replayed
    is noted in ``handed`` (and settled there: nothing is offered); dead letters in ``dead``."""

    def __init__(self, warm: bool = True) -> None:
        self.warm = warm
        self.handed: list[Record] = []
        self.dead: list[tuple[Record, Failure]] = []
        self.resolved: list[tuple[Record, Resolution]] = []

    # the read path
    def accept(self, record: Record) -> OrderChange | None:
        self.handed.append(record)
        return None

    def peek(self, record: Record) -> OrderChange | None:
        return None

    async def prefetch(self, records: list[Record]) -> None:
        return None

    # the ledger
    def offer(self, change: OrderChange, hold: float = 0.0) -> None:
        raise AssertionError("ParkPorts.accept offers nothing")

    def resolve(self, record: Record, why: Resolution) -> None:
        self.resolved.append((record, why))

    def dead_letter(self, record: Record, failure: Failure) -> None:
        self.dead.append((record, failure))

    # the membership
    async def warm_over(self, tp: TopicPartition) -> bool:
        return self.warm

    def connect(self, parking: Any) -> None:
        """Connect ``parking`` to these ports."""
        parking.connect(ledger=self, reader=self, warmth=self)


__all__ = ["NoLinger", "NoWork", "ParkPorts"]
