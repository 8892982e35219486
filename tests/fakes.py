"""Small stand-ins for the parts around the one a unit test drives, each implementing the protocol
that part declares: a vendor client (``connector.sinks.Sink``), a group member
(``connector.source.Source``), work sources and lingers (``connector.deliver``), and what parking
talks to: the shops and the rest (``connector.park``)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from pydantic import SecretStr

from connector._resends import Resent
from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Resolution
from connector.deadletter import Failure
from connector.decode import decode
from connector.deliver import Outcome
from connector.park import ShopHealth
from connector.readback import Held, ReadEnded
from connector.sinks import Prepaid
from connector.source import Committed
from connector.structs import OrderChange, Record, TopicPartition


class LoopClock:
    """Both clocks are the running event loop's (``connector.clock.Clock``): on a virtual-time loop,
    the test's own time, which a busy machine cannot make late."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return asyncio.get_running_loop().time()


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
        self.reads: list[str] = []
        self.closed = False
        self.probe_seconds = 0.0  # how long a probe takes to answer

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
        if self.probe_seconds:
            await asyncio.sleep(self.probe_seconds)
        if self.fail is not None:
            raise self.fail

    async def read_back(self, change: OrderChange, prepaid: Prepaid | None = None) -> Held | None:
        """What it holds for ``change``'s order: the last change of it accepted (``reads``: the keys
        read, in order)."""
        self.reads.append(change.key)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        last = next((c for c in reversed(self.applied) if c.key == change.key), None)
        return Held(last is not None, last.updated_at if last else None, last.body if last else None)

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


class Behind:
    """Whether partitions are behind their log end, as a test sets ``now`` (``connector.gate.Linger``)."""

    def __init__(self, behind: bool = False) -> None:
        self.now = behind

    def behind(self, tp: TopicPartition) -> bool:
        return self.now

    async def caught_up(self, tp: TopicPartition, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.now and loop.time() < deadline:
            await asyncio.sleep(min(0.05, deadline - loop.time()))


HEALTHY = ShopHealth(open_since=None, closed=True, full_rate=10.0, pace_factor=1.0)


class Shops:
    """The shops this member serves (``connector.park.Shops``), as parking sees them: each one's
    health, as a test sets it; which were quiesced and resumed, on which partitions; jobs submitted."""

    many = True

    def __init__(self, *names: str) -> None:
        self.healths: dict[str, ShopHealth] = dict.fromkeys(names, HEALTHY)
        self.aliases: dict[str, str] = {}  # an old name -> the shop it is now
        self.quiesced: list[tuple[str, set[TopicPartition]]] = []
        self.resumed: list[tuple[str, set[TopicPartition]]] = []
        self.submitted: list[OrderChange] = []
        self.health_reads: list[str] = []  # whose health was asked, in order

    def down(self, tenant: str, for_seconds: float) -> None:
        """``tenant``'s circuit opened ``for_seconds`` ago."""
        since = SYSTEM_CLOCK.monotonic() - for_seconds
        self.healths[tenant] = ShopHealth(open_since=since, closed=False, full_rate=10.0, pace_factor=1.0)

    def names(self) -> list[str]:
        return list(self.healths)

    def health(self, tenant: str) -> ShopHealth | None:
        self.health_reads.append(tenant)
        return self.healths.get(tenant)

    def open_circuits(self) -> set[str]:
        return {name for name, health in self.healths.items() if health.open_since is not None}

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    async def quiesce(self, tenant: str, partitions: set[TopicPartition], timeout: float) -> bool:
        if tenant not in self.healths:
            return False
        self.quiesced.append((tenant, set(partitions)))
        return True

    def resume(self, tenant: str, partitions: set[TopicPartition]) -> None:
        self.resumed.append((tenant, set(partitions)))

    def submit(self, change: OrderChange, hold: float = 0.0) -> None:
        self.submitted.append(change)


def read_change(
    tp: TopicPartition, key: str, offset: int, tenant: str = "acme", age: float = 0.0
) -> OrderChange:
    """An event of ``tenant``'s order ``key`` read from ``tp`` at ``offset``, produced ``age`` seconds
    ago."""
    value = json.dumps({"external_id": key, "updated_at": "2026-01-01T00:00:00Z"}).encode()
    stamp = int((SYSTEM_CLOCK.wall() - age) * 1000)
    record = Record(tp.topic, tp.partition, offset, key.encode(), value, (("x-trace", b"t"),), stamp)
    change = decode(record, validate=False)
    change.tenant = tenant
    return change


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


__all__ = ["Audit", "Member", "NoLinger", "NoWork", "ParkPorts", "Told", "Vendor"]


class Audit:
    """An audit of our own (``connector.deliver.Audits``): what the deliverer told it."""

    def __init__(self) -> None:
        self.delivered_changes: list[tuple[OrderChange, bool]] = []
        self.repairs: list[Outcome] = []
        self.reads: list[ReadEnded] = []
        self.unsure_keys: list[str] = []
        self.forgotten: list[set[TopicPartition]] = []

    def delivered(self, change: OrderChange, ambiguous: bool, sent_at: float | None = None) -> None:
        self.delivered_changes.append((change, ambiguous))

    def unsure(self, key: str) -> None:
        self.unsure_keys.append(key)

    def read_ended(self, ended: ReadEnded) -> None:
        self.reads.append(ended)

    def repair_ended(self, outcome: Outcome) -> None:
        self.repairs.append(outcome)

    def forget(self, partitions: set[TopicPartition]) -> None:
        self.forgotten.append(set(partitions))


@dataclass
class Told:
    """A resync's partition (``connector._resends.Told``): how each change it handed over ended."""

    share: float = 0.2
    asked_at: float = 0.0
    ends: list[tuple[str, Resent]] = field(default_factory=list)

    def ended(self, change: OrderChange, how: Resent) -> None:
        self.ends.append((change.key, how))
