"""Small stand-ins for the parts around the one a unit test drives, each implementing the protocol
that part declares (``connector.deliver.WorkSource``, ``connector.park.Shops``' peers …)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from pydantic import SecretStr

from connector.coalesce import Resolution
from connector.deadletter import Failure
from connector.deliver import Outcome
from connector.structs import OrderChange, Record, TopicPartition


class Vendor:
    """A vendor's client of our own (``connector.sinks.Sink``): every change it accepted, in order. It
    holds every call while ``gate`` is closed, never answers those of the orders in ``hang``, and
    raises ``fail`` (or, for one order, the error ``refuse`` gives its external id) instead of
    accepting."""

    name = "fake"

    def __init__(self) -> None:
        self.applied: list[OrderChange] = []
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None
        self.refuse: dict[str, BaseException] = {}
        self.hang: set[str] = set()
        self.keys: list[str] = []
        self.closed = False

    async def apply(self, change: OrderChange) -> None:
        self.calls += 1
        await self.gate.wait()
        if change.external_id in self.hang:
            await asyncio.Event().wait()  # until cancelled
        error = self.refuse.get(change.external_id, self.fail)
        if error is not None:
            raise error
        self.applied.append(change)

    async def probe(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        raise NotImplementedError

    def set_api_key(self, api_key: SecretStr) -> None:
        self.keys.append(api_key.get_secret_value())

    def sent(self) -> list[tuple[str, str]]:
        """What it accepted: each change's key and its body's ``status``."""
        return [(c.key, str(c.body.get("status"))) for c in self.applied]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True


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


__all__ = ["NoLinger", "NoWork", "ParkPorts", "Vendor"]
