"""Parking's bookkeeping: which parking records are replayed for a partition, and what its commits
carry so that the next owner replays exactly those (the flows themselves: the many-shop simulation and
tests/integration/test_tenants.py)."""

from __future__ import annotations

import asyncio
from random import Random
from types import SimpleNamespace
from typing import Any

from connector import constants as wire
from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.config import Settings, TenantsSettings
from connector.constants import CommitMeta
from connector.metrics import Metrics
from connector.park import Parking
from connector.park._records import unpack as _unpack
from connector.structs import Record, TopicPartition

TP = TopicPartition("orders", 3)


class _Log:
    """A parking topic of two partitions, in memory."""

    def __init__(self) -> None:
        self.records: dict[int, list[Record]] = {0: [], 1: []}

    async def partitions(self) -> int:
        return len(self.records)

    async def end(self, partition: int) -> int:
        return len(self.records[partition])

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        return self.records[partition][offset : offset + max_records]

    async def append(self, partition: int, key: Any, value: Any, headers: Any, timestamp_ms: int) -> Any:
        log = self.records[partition]
        log.append(Record("orders.parked", partition, len(log), key, value, tuple(headers), timestamp_ms))
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(len(log) - 1)
        return done


def _parking(log: _Log) -> Parking:
    settings = Settings(tenants=TenantsSettings(path="tenants.toml"))
    tenancy = SimpleNamespace(many=True, served=dict, canonical=str)
    return Parking(
        settings,
        log,
        Coalescer(),
        tenancy,  # type: ignore[arg-type]
        Metrics(),
        clock=SYSTEM_CLOCK,
        rng=Random(1),
        resolved=lambda record: None,
        dispatch=lambda record, hold, as_of: None,
        warmed=_ready,
    )


async def _ready(tp: TopicPartition) -> bool:
    return True


async def _assigned(log: _Log, meta: CommitMeta) -> Parking:
    """A member's parking state for ``TP``, assigned with the commit metadata ``meta`` (the parking
    topic's partitions read as entering it does, without starting its loops)."""
    parking = _parking(log)
    parking._queues = await log.partitions()
    parking.set_layout({"orders": 4})
    await parking.assign(TP, meta)
    return parking


def _parked(offset: int, token: str, origin: TopicPartition = TP, at: int = 0) -> Record:
    headers = (
        ("x-trace", b"abc"),
        (wire.H_PARKED_FROM, f"{origin.topic}/{origin.partition}/{offset}".encode()),
        (wire.H_TENANT, b"acme"),
        (wire.H_PARKED_BY, token.encode()),
    )
    return Record("orders.parked", 0, at, b"k", b"{}", headers, 1234)


def test_a_parking_record_gives_back_the_original_at_its_place() -> None:
    """Replayed, the event is the one read from its partition: same topic, partition and offset (so it
    is ordered, fenced and paced as its partition's), its own headers only, and where it was parked."""
    parked = _unpack(_parked(41, "aaaa0001", at=7))
    assert parked is not None
    assert (parked.tenant, parked.token, parked.hold_until) == ("acme", "aaaa0001", 0.0)
    r = parked.record
    assert (r.tp, r.offset, r.parked_at, r.headers, r.timestamp_ms) == (
        TP,
        41,
        7,
        (("x-trace", b"abc"),),
        1234,
    )
    assert _unpack(Record("orders.parked", 0, 3, b"k", b"{}")) is None, "not one of ours"


async def test_only_records_of_writers_that_committed_past_them_are_replayed() -> None:
    """This assignment's own records count; an earlier owner's only below the offset its last commit
    reached (above it, the event was read again from the partition); an unknown writer's never (it
    never committed them); another partition's never."""
    parking = await _assigned(_Log(), CommitMeta(0.0, 0, ("acme",), (("aaaa0001", 50),)))
    part = parking._parts[TP]
    own = part.token

    def valid(offset: int, token: str, origin: TopicPartition = TP) -> bool:
        parked = _unpack(_parked(offset, token, origin))
        assert parked is not None
        return parking._valid(part, TP, parked)

    assert valid(49, "aaaa0001")
    assert not valid(50, "aaaa0001"), "parked, then its member died before committing past it"
    assert valid(900, own)
    assert not valid(10, "bbbb0002")
    assert not valid(10, own, TopicPartition("orders", 1))


async def test_a_commit_carries_the_replay_position_the_parked_tenants_and_the_writers() -> None:
    """The commit of a partition with parked records says where its replay stands, which tenants are
    parked and whose records count (this member's up to the offset committed); earlier writers are
    dropped once the replay has passed everything they could have written."""
    log = _Log()
    for _ in range(3):
        log.records[1].append(_parked(1, "other"))
    parking = await _assigned(log, CommitMeta(0.0, 1, ("acme",), (("aaaa0001", 20),)))
    part = parking._parts[TP]
    assert part.q == 1, "partition 3 of 4, two parking partitions"
    meta = parking.meta(TP, settle_by=5.0, offset=30)
    assert meta == CommitMeta(5.0, 1, ("acme",), tuple(sorted({"aaaa0001": 20, part.token: 30}.items())))
    assert part.scan is not None
    for offset in (1, 2):
        part.scan.track(offset)
        part.scan.resolve(offset)
    part.position = 3
    later = parking.meta(TP, settle_by=6.0, offset=31)
    assert later.park_from == 3
    assert later.tokens == ((part.token, 31),), "the earlier writer's records are all behind us"
