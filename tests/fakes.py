"""Small stand-ins for the parts around the one a unit test drives, each implementing the protocol
that part declares: a vendor client (``connector.sinks.Sink``), a group member
(``connector.source.Source``), work sources and lingers (``connector.deliver``), and what parking
talks to besides the shops (``connector.park``)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from pydantic import SecretStr

from connector.coalesce import Resolution
from connector.deadletter import Failure
from connector.deliver import Outcome
from connector.sinks import Prepaid
from connector.source import Committed
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
        self.called_at: list[float] = []  # the event loop's time of each call
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None
        self.refuse: dict[str, BaseException] = {}
        self.hang: set[str] = set()
        self.keys: list[str] = []
        self.closed = False

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        self.calls += 1
        self.called_at.append(asyncio.get_running_loop().time())
        await self.gate.wait()
        if change.external_id in self.hang:
            await asyncio.Event().wait()  # until cancelled
        error = self.refuse.get(change.external_id, self.fail)
        if error is not None:
            raise error
        self.applied.append(change)

    async def probe(self, prepaid: Prepaid | None = None) -> None:
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


class Member:
    """A group member of our own (``connector.source.Source``), as a membership drives it: committed offsets, pauses, seeks; commits of a partition
    in ``refuses`` are refused, with every partition in the same request (as the broker does)."""

    def __init__(
        self, committed: Committed | None = None, ends: dict[TopicPartition, int] | None = None
    ) -> None:
        self.stored: Committed = dict(committed or {})
        self.ends = ends or {}
        self.owned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.sought: dict[TopicPartition, int] = {}
        self.refuses: set[TopicPartition] = set()
        self.lookups_fail = False
        self.lookup_gate: asyncio.Event | None = None
        self.positions: dict[TopicPartition, int] = {}

    async def fetch(self, timeout_ms: int) -> list[Record]:
        return []

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def log_end(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    def partition_counts(self) -> dict[str, int]:
        return {"orders": 2}

    def pause(self, partitions: set[TopicPartition]) -> None:
        self.paused |= partitions

    def resume(self, partitions: set[TopicPartition]) -> None:
        self.paused -= partitions

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def commit(self, offsets: Committed) -> bool:
        if offsets.keys() & self.refuses:
            return False
        self.stored.update(offsets)
        return True

    async def committed(self, partitions: set[TopicPartition]) -> Committed:
        if self.lookup_gate is not None:
            await self.lookup_gate.wait()
        if self.lookups_fail:
            raise ConnectionError("broker unreachable")
        return {tp: self.stored[tp] for tp in partitions if tp in self.stored}

    async def position(self, tp: TopicPartition) -> int | None:
        return self.positions.get(tp, 0)


class NoWork:
    """A work source with nothing more to send (``connector.deliver.WorkSource``)."""

    def report(self, outcome: Outcome) -> OrderChange | None:
        return None


class NoLinger:
    """No partition is ever behind (``connector.deliver.Linger``)."""

    def behind(self, tp: TopicPartition) -> bool:
        return False

    async def caught_up(self, tp: TopicPartition, timeout: float) -> None:
        return None


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


__all__ = ["Member", "NoLinger", "NoWork", "ParkPorts", "Vendor"]
